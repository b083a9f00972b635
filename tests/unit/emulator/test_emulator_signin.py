"""The emulator's RFC 8628 client logic without sockets: responses as status + JSON, times given."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from device_emulator.device import TRANSITIONS, Credentials, DeviceMachine, State, TransitionError
from device_emulator.provisioning import ProvisioningInfo
from device_emulator.signin import (
    DeviceAuthorization,
    OAuthFailure,
    PollSchedule,
    PollStep,
    RefreshStep,
    SignInError,
    Tokens,
    basic_authorization,
    endpoints_from_metadata,
    form_body,
    jwt_claims,
    parse_device_authorization,
    parse_token_response,
    parse_url,
    refresh_step,
)
from tests.helpers.oauth import basic

AUTH_BODY = {
    "device_code": "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://imprint.example:8443/device",
    "verification_uri_complete": "https://imprint.example:8443/device?user_code=WDJB-MJHT",
    "expires_in": 900,
    "interval": 5,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "ES256", "typ": "at+jwt"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(b'x' * 64)}"


def auth(interval: float = 5, expires_in: float = 900) -> DeviceAuthorization:
    got = parse_device_authorization(
        200, {**AUTH_BODY, "interval": interval, "expires_in": expires_in}
    )
    assert isinstance(got, DeviceAuthorization)
    return got


def err(error: str, status: int = 400) -> OAuthFailure:
    return OAuthFailure(error, "", status)


def test_device_authorization_parsed_and_default_interval() -> None:
    got = parse_device_authorization(200, AUTH_BODY)
    assert isinstance(got, DeviceAuthorization)
    assert (got.user_code, got.expires_in, got.interval) == ("WDJB-MJHT", 900.0, 5.0)
    assert got.device_code not in repr(got)  # the secret stays out of logs
    without = {k: v for k, v in AUTH_BODY.items() if k != "interval"}
    assert parse_device_authorization(200, without).interval == 5.0  # type: ignore[union-attr]
    missing = parse_device_authorization(200, {"user_code": "WDJB-MJHT", "expires_in": 900})
    assert isinstance(missing, OAuthFailure) and "device_code" in missing.description
    refused = parse_device_authorization(
        401, {"error": "invalid_client", "error_description": "reset"}
    )
    assert refused == OAuthFailure("invalid_client", "reset", 401)
    assert parse_device_authorization(502, None) == OAuthFailure(
        "http_502", "HTTP 502 without an OAuth error", 502
    )


def test_pending_keeps_the_interval_measured_from_the_send() -> None:
    s = PollSchedule.start(auth(), now=100.0)
    assert s.next_at == 105.0
    assert s.on_answer(err("authorization_pending"), sent_at=105.0) is PollStep.PENDING
    assert (s.interval, s.next_at) == (5.0, 110.0)


def test_slow_down_adds_five_seconds_for_good() -> None:
    s = PollSchedule.start(auth(interval=5), now=0.0)
    assert s.on_answer(err("slow_down"), sent_at=5.0) is PollStep.SLOW_DOWN
    assert (s.interval, s.next_at) == (10.0, 15.0)
    assert s.on_answer(err("authorization_pending"), sent_at=15.0) is PollStep.PENDING
    assert (s.interval, s.next_at) == (10.0, 25.0)  # still 10: "all subsequent requests"
    assert s.on_answer(err("slow_down"), sent_at=25.0) is PollStep.SLOW_DOWN
    assert (s.interval, s.next_at, s.slow_downs) == (15.0, 40.0, 2)


def test_errors_map_to_what_the_device_does() -> None:
    cases = {
        "access_denied": PollStep.DENIED,
        "expired_token": PollStep.EXPIRED,
        "invalid_grant": PollStep.EXPIRED,  # code replaced or revoked: start again
        "invalid_client": PollStep.FAILED,
        "unsupported_grant_type": PollStep.FAILED,
    }
    for error, step in cases.items():
        s = PollSchedule.start(auth(), now=0.0)
        assert s.on_answer(err(error, 401 if error == "invalid_client" else 400), 5.0) is step
    ok = Tokens("a", "r", 3600, "alice")
    assert PollSchedule.start(auth(), 0.0).on_answer(ok, 5.0) is PollStep.SIGNED_IN


def test_server_and_network_errors_back_off_exponentially() -> None:
    s = PollSchedule.start(auth(interval=5), now=0.0)
    assert s.on_answer(OAuthFailure("http_503", "", 503), sent_at=5.0) is PollStep.RETRY
    assert s.next_at == 10.0
    assert s.on_network_error(sent_at=10.0) is PollStep.RETRY
    assert s.next_at == 20.0
    assert s.on_network_error(sent_at=20.0) is PollStep.RETRY
    assert s.next_at == 40.0
    for _ in range(10):
        s.on_network_error(sent_at=100.0)
    assert s.next_at == 160.0  # capped at 60 s
    assert s.on_answer(err("authorization_pending"), sent_at=200.0) is PollStep.PENDING
    assert (s.backoff, s.next_at) == (0.0, 205.0)
    assert s.interval == 5.0  # back-off never grows the interval itself


def test_expiry_by_the_devices_own_clock() -> None:
    s = PollSchedule.start(auth(expires_in=60), now=1000.0)
    assert not s.expired(1059.9) and s.expired(1060.0)


def test_token_response_names_the_user_from_sub() -> None:
    body = {
        "access_token": jwt({"sub": "alice@contoso.com", "tenant": "contoso"}),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "r1",
    }
    got = parse_token_response(200, body)
    assert isinstance(got, Tokens)
    assert (got.subject, got.refresh_token, got.expires_in) == ("alice@contoso.com", "r1", 3600)
    assert "r1" not in repr(got)
    bad_type = parse_token_response(200, {**body, "token_type": "mac"})
    assert isinstance(bad_type, OAuthFailure) and bad_type.error == "invalid_response"
    opaque = parse_token_response(200, {**body, "access_token": "opaque"})
    assert isinstance(opaque, Tokens) and opaque.subject is None
    pending = parse_token_response(
        400, {"error": "authorization_pending", "error_description": "wait"}
    )
    assert pending == OAuthFailure("authorization_pending", "wait", 400)


def test_jwt_claims_reject_what_is_not_a_jws() -> None:
    assert jwt_claims(jwt({"sub": "x"})) == {"sub": "x"}
    assert jwt_claims("a.b") is None
    assert jwt_claims("a.!!!.c") is None
    assert jwt_claims(f"h.{b64url(b'[1, 2]')}.s") is None  # JSON, but not an object


def test_refresh_answers() -> None:
    assert refresh_step(Tokens("a", "r2", 3600, "alice")) is RefreshStep.KEEP
    assert refresh_step(err("invalid_grant")) is RefreshStep.SIGNED_OUT
    assert refresh_step(err("invalid_client", 401)) is RefreshStep.FAILED
    assert refresh_step(OAuthFailure("unreachable", "timeout")) is RefreshStep.RETRY
    assert refresh_step(OAuthFailure("http_500", "", 500)) is RefreshStep.RETRY


def test_metadata_endpoints_must_share_the_pinned_origin() -> None:
    meta_url = parse_url("https://imprint.example:8443/.well-known/oauth-authorization-server")
    body = {
        "issuer": "https://imprint.example:8443",
        "device_authorization_endpoint": "https://imprint.example:8443/oauth2/device_authorization",
        "token_endpoint": "https://IMPRINT.example:8443/oauth2/token",
    }
    found = endpoints_from_metadata(body, meta_url)
    assert found.token.target == "/oauth2/token" and found.token.port == 8443
    with pytest.raises(SignInError, match="another server"):
        endpoints_from_metadata({**body, "token_endpoint": "https://evil.example/t"}, meta_url)
    with pytest.raises(SignInError, match="token_endpoint"):
        endpoints_from_metadata({**body, "token_endpoint": None}, meta_url)
    assert parse_url("https://h/x?y=1").port == 443 and parse_url("https://h/x?y=1").target == (
        "/x?y=1"
    )
    with pytest.raises(SignInError):
        parse_url("ftp://h/")


def test_client_authentication_and_form_encoding() -> None:
    # RFC 6749 §2.3.1: form-urlencode each half before Basic; checked against the test suite's
    # own encoder and by decoding.
    cid, secret = "dev:1 é", "s3cr+t/=&"
    assert basic_authorization(cid, secret) == basic(cid, secret)
    raw = base64.b64decode(basic_authorization(cid, secret).split(" ", 1)[1]).decode()
    assert raw == "dev%3A1+%C3%A9:s3cr%2Bt%2F%3D%26"
    assert form_body({"grant_type": "refresh_token", "refresh_token": "a b&c"}) == (
        b"grant_type=refresh_token&refresh_token=a+b%26c"
    )


# --- the state machine past the sign-in screen -----------------------------------------------

CREDS = Credentials("contoso", "Contoso Ltd", "dev-1", "dev-1", "s3cret", "https://i/.well-known/x")


def provisioned(sign_in: bool = True) -> DeviceMachine:
    m = DeviceMachine("02:00:5e:00:00:01", sign_in=sign_in, pin_policy=None)
    m.power_on(0)
    m.start_discovery(["dhcp"], 0)
    m.discovered(
        ProvisioningInfo(
            source="dhcp",
            url="https://i:8443/provision",
            scheme="https",
            host="i",
            port=8443,
            path="/provision",
            fingerprint="ab" * 32,
        ),
        1,
    )
    m.ask_code(1)
    m.code_entered("BCDF-GHJK", 2)
    m.provisioned(CREDS, 3)
    return m


def test_sign_in_round_trip_screens_and_events() -> None:
    m = provisioned()
    assert not m.finished  # sign-in asked for: the sign-in screen is not the end
    assert "Getting a sign-in code" in m.screen()
    m.sign_in_started(auth(), 4)
    screen = m.screen()
    assert "WDJB-MJHT" in screen and "https://imprint.example:8443/device" in screen
    m.polling(5, 9)
    m.polling(10, 14, slow_down=True)
    assert "checking every 10 s" in m.screen()
    assert "slow_down" in m.events[-1].detail
    m.signed_in("alice@contoso.com", 24)
    assert "Signed in as alice@contoso.com" in m.screen()
    m.back_to_sign_in("invalid_grant", "Signed out.", 30)
    assert "Signed out." in m.screen() and m.sign_in_view()["user"] is None
    m.sign_in_started(auth(), 31)
    m.back_to_sign_in("access_denied", "Sign-in was declined.", 40)
    assert "Sign-in was declined." in m.screen()
    assert [e.state for e in m.events[5:]] == [
        State.SIGN_IN_SCREEN,
        State.SIGNING_IN,
        State.POLLING,
        State.POLLING,
        State.SIGNED_IN,
        State.SIGN_IN_SCREEN,
        State.SIGNING_IN,
        State.SIGN_IN_SCREEN,
    ]
    assert m.as_dict()["sign_in"]["sign_ins"] == 2
    assert "s3cret" not in json.dumps(m.as_dict())


def test_sign_in_moves_are_checked() -> None:
    m = provisioned()
    with pytest.raises(TransitionError):
        m.signed_in("alice", 4)  # no code was shown yet
    m.sign_in_started(auth(), 4)
    m.signed_in("alice", 5)
    with pytest.raises(TransitionError):
        m.polling(5, 6)  # signed in: nothing to poll for
    assert State.FAILED in TRANSITIONS[State.SIGNED_IN]
    assert provisioned(sign_in=False).finished  # provisioning only: the screen is the end
