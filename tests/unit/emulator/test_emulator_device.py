"""The emulated device's state machine (pure: `now` is passed in) and the reading of the
provisioning contract's answers. The driver against the real server is in
tests/e2e/test_provision_loopback.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from device_emulator.device import (
    TRANSITIONS,
    Credentials,
    DeviceMachine,
    Failure,
    PinPolicy,
    State,
    TransitionError,
    credentials_from_body,
    failure_from_response,
)
from device_emulator.https_client import HttpResponse
from device_emulator.provisioning import ProvisioningInfo

MAC = "02:00:5e:00:01:01"
FP = "dbe726e0ac3e2d01f1d03b0c4bf6e226e160904eca3d917f7b39185a0e604d8e"
INFO = ProvisioningInfo(
    source="dhcp",
    url="https://127.0.0.1:8443/provision",
    scheme="https",
    host="127.0.0.1",
    port=8443,
    path="/provision",
    fingerprint=FP,
)
CREDS = Credentials(
    tenant_id="contoso",
    tenant_name="Contoso Ltd",
    device_id="dev_1",
    client_id="dev_1",
    client_secret="s3cret",
    authorization_server="https://127.0.0.1:8443/.well-known/oauth-authorization-server",
)


def at_code_entry(
    *, interactive: bool = False, policy: PinPolicy | None = None, info: ProvisioningInfo = INFO
) -> DeviceMachine:
    m = DeviceMachine(MAC, interactive=interactive, pin_policy=policy)
    m.power_on(10.0)
    m.start_discovery(["dhcp", "mdns"], 10.0)
    m.discovered(info, 10.25)
    m.ask_code(10.25)
    return m


def shown(m: DeviceMachine) -> str:
    """The screen's text with the border removed and wrapped lines joined again."""
    rows = m.screen().splitlines()
    assert rows[0] == rows[-1] and set(rows[0]) == {"+", "-"}
    assert len({len(r) for r in rows}) == 1  # a rectangle
    return " ".join(r[2:-2].strip() for r in rows[1:-1])


def wrong(left: int) -> Failure:
    return Failure(
        "wrong_code",
        f"That code is not right for this device; {left} attempts left.",
        status=401,
        attempts_left=left,
    )


def test_happy_path_events_and_time_to_provision() -> None:
    m = at_code_entry()
    m.code_entered("tdrn-kgpk", 11.0)
    m.provisioned(CREDS, 11.5)
    assert [e.state for e in m.events] == [
        State.BOOT,
        State.DISCOVER,
        State.PROVISION_SCREEN,
        State.CODE_ENTRY,
        State.PROVISIONING,
        State.SIGN_IN_SCREEN,
    ]
    assert [e.at for e in m.events] == [10.0, 10.0, 10.25, 10.25, 11.0, 11.5]
    assert m.time_to_provision == 1.5
    assert m.pin == FP
    assert m.credentials is CREDS  # kept for the RFC 8628 sign-in step
    assert "Sign in to Contoso Ltd" in shown(m)
    assert m.finished


def test_screens_show_what_a_technician_needs() -> None:
    m = DeviceMachine(MAC)
    m.power_on(0)
    assert MAC in shown(m)
    m.start_discovery(["dhcp", "mdns"], 0)
    assert "dhcp then mdns" in shown(m)
    m.discovered(INFO, 0)
    screen = shown(m)
    assert "Provision device" in screen
    assert "127.0.0.1:8443 (found by DHCP)" in screen
    assert f"sha256 {FP[:16]}" in screen
    m.ask_code(0)
    assert "Enter the verification code" in shown(m)


def test_interactive_wrong_code_goes_back_to_code_entry_with_attempts_left() -> None:
    m = at_code_entry(interactive=True)
    m.code_entered("bbbb-bbbb", 1)
    m.refused(wrong(4), 2)
    assert m.state is State.CODE_ENTRY
    assert "4 attempts left" in shown(m)
    m.code_entered("tdrn-kgpk", 3)
    m.provisioned(CREDS, 4)
    assert m.is_in(State.SIGN_IN_SCREEN) and m.code_attempts == 2
    assert "4 attempts left" not in shown(m)


def test_attempts_left_is_shown_when_the_message_does_not_say_it() -> None:
    m = at_code_entry(interactive=True)
    m.code_entered("x", 1)
    m.refused(Failure("wrong_code", "That code is not right.", attempts_left=2), 2)
    assert "Attempts left: 2" in shown(m)


def test_non_interactive_wrong_code_fails_with_the_servers_message() -> None:
    m = at_code_entry(interactive=False)
    m.code_entered("bbbb-bbbb", 1)
    m.refused(wrong(4), 2)
    assert m.state is State.FAILED
    assert m.failure is not None and m.failure.attempts_left == 4
    assert "That code is not right" in shown(m) and "(wrong_code)" in shown(m)


@pytest.mark.parametrize(
    "error", ["locked", "expired_code", "already_provisioned", "no_code", "not_registered"]
)
def test_errors_only_the_admin_can_fix_end_even_interactively(error: str) -> None:
    m = at_code_entry(interactive=True)
    m.code_entered("x", 1)
    m.refused(Failure(error, f"message for {error}"), 2)
    assert m.state is State.FAILED
    assert f"message for {error}" in shown(m)


def test_rate_limited_retries_after_retry_after_then_gives_up() -> None:
    m = at_code_entry()
    m.code_entered("x", 1)
    busy = Failure("rate_limited", "Too many attempts.", status=429, retry_after=2)
    for n in range(3):
        m.refused(busy, 2 + n)
        assert m.state is State.PROVISIONING and m.retry_after == 2
        assert "retrying in 2 s" in shown(m)
    m.refused(busy, 9)
    assert m.state is State.FAILED and m.failure == busy


def test_retry_after_is_capped() -> None:
    m = at_code_entry()
    m.code_entered("x", 1)
    m.refused(Failure("rate_limited", "", retry_after=3600), 2)
    assert m.retry_after == 30.0


def test_https_without_an_advertised_pin_is_refused() -> None:
    unpinned = replace(INFO, fingerprint=None)
    m = DeviceMachine(MAC)
    m.power_on(0)
    m.start_discovery(["dhcp"], 0)
    m.discovered(unpinned, 1)
    assert m.state is State.FAILED and m.failure is not None
    assert m.failure.error == "no_pin"
    assert "--insecure-no-pin" in m.failure.message


def test_insecure_no_pin_goes_on_with_a_warning() -> None:
    unpinned = ProvisioningInfo(
        "mdns", url=INFO.url, scheme="https", host="127.0.0.1", port=8443, path="/provision"
    )
    m = DeviceMachine(MAC, pin_policy=PinPolicy(insecure_no_pin=True))
    m.power_on(0)
    m.start_discovery(["mdns"], 0)
    m.discovered(unpinned, 0)
    assert m.state is State.PROVISION_SCREEN and m.pin is None
    assert "Certificate: not pinned" in shown(m)
    assert any("WITHOUT pinning" in w for w in m.warnings)


def test_plain_http_is_allowed_with_a_warning() -> None:
    plain = ProvisioningInfo(
        "dhcp",
        url="http://127.0.0.1:8080/provision",
        scheme="http",
        host="127.0.0.1",
        port=8080,
        path="/provision",
    )
    m = at_code_entry(info=plain)
    assert m.state is State.CODE_ENTRY and m.pin is None
    assert any("unencrypted" in w for w in m.warnings)


def test_pin_override_replaces_the_advertised_pin() -> None:
    forced = "AB:" * 31 + "AB"
    m = at_code_entry(policy=PinPolicy(override=forced))
    assert m.pin == "ab" * 32
    assert any("instead of the advertised" in w for w in m.warnings)


def test_a_bad_pin_override_fails() -> None:
    m = DeviceMachine(MAC, pin_policy=PinPolicy(override="nothex"))
    m.power_on(0)
    m.start_discovery(["dhcp"], 0)
    m.discovered(INFO, 0)
    assert m.state is State.FAILED and m.failure is not None and m.failure.error == "no_pin"


@pytest.mark.parametrize(
    ("info", "error"),
    [
        (ProvisioningInfo("dhcp", tftp_servers=("10.0.0.1",)), "no_url"),
        (
            ProvisioningInfo(
                "dhcp", url="tftp://10.0.0.1/x", scheme="tftp", host="10.0.0.1", port=69, path="/x"
            ),
            "unsupported_scheme",
        ),
    ],
)
def test_unusable_answers_fail(info: ProvisioningInfo, error: str) -> None:
    m = DeviceMachine(MAC)
    m.power_on(0)
    m.start_discovery(["dhcp"], 0)
    m.discovered(info, 0)
    assert m.failure is not None and m.failure.error == error


def test_discovery_failure_says_so() -> None:
    m = DeviceMachine(MAC)
    m.power_on(0)
    m.start_discovery(["dhcp"], 0)
    m.discovery_failed("Nobody answered. Is the MAC registered?", 10, "dhcp: no DHCPACK")
    assert m.state is State.FAILED
    assert "Is the MAC registered?" in shown(m)
    assert "DHCPACK" not in shown(m)  # the technical detail is in the event, not the screen
    assert "dhcp: no DHCPACK" in m.events[-1].detail
    assert m.failure is not None and m.failure.details == ("dhcp: no DHCPACK",)
    assert m.time_to_provision is None


def test_illegal_moves_raise() -> None:
    m = DeviceMachine(MAC)
    m.power_on(0)
    with pytest.raises(TransitionError):
        m.ask_code(0)  # BOOT -> CODE_ENTRY skips discovery
    with pytest.raises(TransitionError):
        m.power_on(0)
    done = at_code_entry()
    done.code_entered("x", 1)
    done.provisioned(CREDS, 2)
    with pytest.raises(TransitionError):
        done.fail(Failure("x", "y"), 3)  # SIGN_IN_SCREEN is final until the sign-in step


def test_every_state_has_a_transition_entry() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, successors in TRANSITIONS.items():
        if state not in (State.SIGN_IN_SCREEN, State.FAILED):
            assert State.FAILED in successors


def test_json_form_leaves_the_secret_out() -> None:
    m = at_code_entry()
    m.code_entered("x", 1)
    m.provisioned(CREDS, 2)
    story = m.as_dict()
    assert story["state"] == "SIGN_IN_SCREEN"
    assert story["credentials"]["tenant"] == {"id": "contoso", "name": "Contoso Ltd"}
    assert "s3cret" not in repr(story) and "s3cret" not in repr(CREDS)


# --- the contract's bodies -------------------------------------------------------------------


def response(status: int, body: bytes, *headers: tuple[str, str]) -> HttpResponse:
    return HttpResponse(status, "", (("content-type", "application/json"), *headers), body)


def test_success_body_becomes_credentials() -> None:
    body = {
        "status": "provisioned",
        "tenant": {"id": "contoso", "name": "Contoso Ltd"},
        "device_id": "dev_1",
        "client_id": "dev_1",
        "client_secret": "s3cret",
        "authorization_server": CREDS.authorization_server,
    }
    assert credentials_from_body(body) == CREDS
    for missing in ("tenant", "client_secret", "authorization_server"):
        assert credentials_from_body({k: v for k, v in body.items() if k != missing}) is None
    assert credentials_from_body({**body, "status": "pending"}) is None
    assert credentials_from_body([body]) is None


def test_error_body_with_attempts_left_and_retry_after() -> None:
    f = failure_from_response(
        response(
            401,
            b'{"error": "wrong_code", "message": "Not right; 4 attempts left.", '
            b'"details": [], "attempts_left": 4}',
        )
    )
    assert (f.error, f.message, f.status, f.attempts_left) == (
        "wrong_code",
        "Not right; 4 attempts left.",
        401,
        4,
    )
    limited = failure_from_response(
        response(429, b'{"error": "rate_limited", "message": "wait"}', ("retry-after", "7"))
    )
    assert limited.retry_after == 7.0 and limited.attempts_left is None


def test_error_without_json_is_reported_by_status() -> None:
    f = failure_from_response(HttpResponse(502, "Bad Gateway", (), b"<html>"))
    assert f.error == "http_502" and "502 Bad Gateway" in f.message
