"""Pure rules of remote sign-in: polling decisions, client authentication parsing, scopes,
usernames, the ES256 signing key and the approval form tokens. No sockets."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from cryptography.exceptions import InvalidTag
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey

from server.oauth.keys import CodeKeys, SigningKey
from server.oauth.model import GrantRow, GrantStatus
from server.oauth.rules import (
    OAuthError,
    client_credentials,
    normalize_username,
    poll_outcome,
    single_params,
    validate_scope,
)
from server.oauth.users import Passwords
from server.registry.model import iso
from server.store.base import Invalid

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def grant(
    status: str = "pending", last_poll: float | None = None, interval: int = 5, ttl_s: int = 900
) -> GrantRow:
    return GrantRow(
        id="sgn_1",
        mac="02:00:5e:00:00:01",
        tenant_id="contoso",
        client_id="dev_1",
        scope="",
        status=GrantStatus(status),
        username="u" if status in ("approved", "issued") else None,
        created_at=iso(T0),
        expires_at=iso(T0 + timedelta(seconds=ttl_s)),
        interval_s=interval,
        last_poll_at=last_poll,
        user_code_sealed=None,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("g", "now", "result", "interval"),
    [
        (grant(), at(0), "authorization_pending", 5),  # the first poll may come at once
        (grant(last_poll=at(0).timestamp()), at(5), "authorization_pending", 5),
        (grant(last_poll=at(0).timestamp()), at(4.6), "authorization_pending", 5),  # jitter
        (grant(last_poll=at(0).timestamp()), at(4.4), "slow_down", 10),
        (grant(last_poll=at(0).timestamp()), at(0), "slow_down", 10),
        (grant(last_poll=at(0).timestamp(), interval=10), at(9), "slow_down", 15),
        (grant(last_poll=at(0).timestamp(), interval=10), at(10), "authorization_pending", 10),
        (grant("approved", last_poll=at(0).timestamp()), at(1), "issue", 5),  # no slow_down
        (grant("denied"), at(1), "access_denied", 5),
        (grant("denied"), at(1000), "access_denied", 5),
        (grant(), at(899), "authorization_pending", 5),
        (grant(), at(900), "expired_token", 5),
        (grant("approved"), at(900), "expired_token", 5),
        (grant("issued"), at(1), "invalid_grant", 5),
        (grant("revoked"), at(1), "invalid_grant", 5),
    ],
)
def test_poll_outcome(g: GrantRow, now: datetime, result: str, interval: int) -> None:
    out = poll_outcome(g, now)
    assert (out.result, out.interval_s) == (result, interval)


def test_single_params_refuses_repeats_and_drops_empty_values() -> None:
    assert single_params([("a", "1"), ("b", ""), ("b", "2")]) == {"a": "1", "b": "2"}
    with pytest.raises(OAuthError) as e:
        single_params([("grant_type", "x"), ("grant_type", "y")])
    assert e.value.error == "invalid_request" and e.value.status == 400


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_credentials_are_form_urlencoded_halves() -> None:
    # RFC 6749 §2.3.1: client_id and secret are form-urlencoded, then joined with ':'.
    cid, secret = "dev 1", "a:b%c/d+é"
    header = basic(f"{quote_plus(cid)}:{quote_plus(secret)}".encode())
    assert client_credentials(header, {}) == (cid, secret)
    assert client_credentials(header, {"client_id": cid}) == (cid, secret)
    assert client_credentials(basic(b"dev_1:s3cret"), {}) == ("dev_1", "s3cret")


@pytest.mark.parametrize(
    ("header", "params", "error"),
    [
        ("Bearer abc", {}, "invalid_client"),
        ("Basic !!!", {}, "invalid_client"),
        (basic(b"no-colon"), {}, "invalid_client"),
        (basic(b"\xff\xfe:x"), {}, "invalid_client"),
        (None, {}, "invalid_client"),
        (None, {"client_id": "dev_1"}, "invalid_client"),  # public clients are not allowed
        (None, {"client_secret": "s"}, "invalid_request"),
        (basic(b"dev_1:s"), {"client_secret": "s"}, "invalid_request"),  # two methods
        (basic(b"dev_1:s"), {"client_id": "dev_2"}, "invalid_request"),
    ],
)
def test_client_authentication_errors(
    header: str | None, params: dict[str, str], error: str
) -> None:
    with pytest.raises(OAuthError) as e:
        client_credentials(header, params)
    assert e.value.error == error
    if error == "invalid_client":
        assert e.value.status == 401 and e.value.headers["WWW-Authenticate"].startswith("Basic")


def test_client_secret_post() -> None:
    assert client_credentials(None, {"client_id": "dev_1", "client_secret": "s"}) == ("dev_1", "s")


def test_scope_rules() -> None:
    assert validate_scope(None) == "" and validate_scope("") == ""
    assert validate_scope("b a b") == "b a"
    for bad in ('a"b', "a\\b", "a  b", " a", "x" * 1001, "é"):
        with pytest.raises(OAuthError) as e:
            validate_scope(bad)
        assert e.value.error == "invalid_scope", bad


def test_usernames() -> None:
    assert normalize_username("  Room-1@Contoso.COM ") == "room-1@contoso.com"
    assert normalize_username("a") == "a"
    for bad in ("", "-a", ".a", "a b", "a/b", "x" * 129, 5):
        with pytest.raises(Invalid):
            normalize_username(bad)


def test_signing_key_is_made_once_with_mode_0600_and_verifies_with_joserfc(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "key.pem"
    key = SigningKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = SigningKey.load_or_create(path)
    assert again.kid == key.kid
    jwk = key.public_jwk()
    imported = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y")})
    assert imported.thumbprint() == key.kid  # RFC 7638, computed by another library
    token = key.sign({"sub": "u", "n": 1})
    decoded = jwt.decode(token, imported, algorithms=["ES256"])
    assert decoded.claims == {"sub": "u", "n": 1} and decoded.header["kid"] == key.kid
    assert key.verify(token) == {"sub": "u", "n": 1}

    other = SigningKey.load_or_create(tmp_path / "other.pem")
    assert other.kid != key.kid and other.verify(token) is None
    with pytest.raises(BadSignatureError):
        jwt.decode(other.sign({"sub": "u"}), imported, algorithms=["ES256"])
    h, p, s = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin"}).encode()).rstrip(b"=")
    assert key.verify(f"{h}.{forged.decode()}.{s}") is None
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    assert key.verify(f"{none_header}.{p}.") is None
    assert key.verify("not a jwt") is None


def test_tokens_nested_deeper_than_the_decoder_goes_are_refused_not_raised(
    tmp_path: Path,
) -> None:
    """A bearer token's header is parsed before its signature is checked: JSON nested past
    the decoder's recursion limit there is a refusal, not a 500."""
    key = SigningKey.load_or_create(tmp_path / "key.pem")
    deep = base64.urlsafe_b64encode(b"[" * 50_000 + b"]" * 50_000).rstrip(b"=").decode()
    _, p, s = key.sign({"sub": "u"}).split(".")
    assert key.verify(f"{deep}.{p}.{s}") is None


def test_signing_key_file_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    with pytest.raises(ValueError):
        SigningKey.load_or_create(path)


def test_approval_form_tokens() -> None:
    keys = CodeKeys(b"k" * 32)
    token = keys.sign_form("sgn_1", "alice", expires=1000, nonce="n1")
    assert keys.verify_form(token, "n1", now=999) == ("sgn_1", "alice")
    assert keys.verify_form(token, "n1", now=1001) is None  # expired
    assert keys.verify_form(token, "n2", now=999) is None  # another browser's cookie
    assert CodeKeys(b"j" * 32).verify_form(token, "n1", now=999) is None  # another server
    payload, _, mac = token.partition(".")
    flipped = payload[:-1] + ("B" if payload[-1] == "A" else "A")
    assert keys.verify_form(f"{flipped}.{mac}", "n1", 999) is None
    assert keys.verify_form("garbage", "n1", 999) is None


def test_approval_form_token_with_a_lone_surrogate_is_refused_not_raised() -> None:
    """Found by bench/reliability/fuzz.py: two bytes of a token that are not UTF-8, decoded
    with surrogateescape as aiohttp decodes headers, raised UnicodeEncodeError."""
    keys = CodeKeys(b"k" * 32)
    raw = b"eyJlIjotOTIyMzM3MjAz\x02\xd4;\x84Njg1NDc3NTgwOCwiZyI6ImE0YThjMzVkIywidSI6InV1dXV1dXV1In0.uDMbFcu8APxw9bJqPYmBcxyN4NEPWb7HaqSKKuit1_Q"
    token = raw.decode("utf-8", "surrogateescape")
    assert "\udcd4" in token
    assert keys.verify_form(token, "n1", 999) is None
    good = keys.sign_form("sgn_1", "alice", expires=1000, nonce="n1")
    assert keys.verify_form(good, "n1\udcff", 999) is None


def test_user_codes_are_keyed_and_sealed_per_grant() -> None:
    keys = CodeKeys(b"k" * 32)
    assert keys.user_code_digest("BCDFGHJK") == keys.user_code_digest("BCDFGHJK")
    assert keys.user_code_digest("BCDFGHJK") != CodeKeys(b"j" * 32).user_code_digest("BCDFGHJK")
    sealed = keys.seal("BCDFGHJK", "sgn_1")
    assert b"BCDFGHJK" not in sealed and keys.unseal(sealed, "sgn_1") == "BCDFGHJK"
    with pytest.raises(InvalidTag):
        keys.unseal(sealed, "sgn_2")


async def test_passwords_are_argon2id() -> None:
    pw = Passwords()
    stored = await pw.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await pw.verify(stored, "correct horse")
    assert not await pw.verify(stored, "wrong horse")
    assert not await pw.verify(None, "correct horse")
    assert not await pw.verify("not-a-hash", "correct horse")
