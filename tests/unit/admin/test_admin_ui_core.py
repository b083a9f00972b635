"""Pure parts of the admin UI: account rules, session expiry, CSRF comparison, redirects, and the
bounded in-memory state (flash messages, pending uploads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from server.admin.auth import (
    SessionPolicy,
    needs_touch,
    session_problem,
    tokens_match,
    validate_password,
    validate_role,
    validate_username,
)
from server.admin.ui.codes import provision_qr_text
from server.admin.ui.common import qr_svg, tenant_url
from server.admin.ui.state import (
    Flash,
    FlashBox,
    PendingUpload,
    PendingUploads,
    page_count,
    safe_next,
    size_text,
    when,
)
from server.registry.service import ImportRow
from server.store.base import Invalid

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_usernames_are_lowercased_and_limited() -> None:
    assert validate_username("  Alice@Contoso.com ") == "alice@contoso.com"
    for bad in ("", "-x", "x-", "a b", "ä", "x" * 65, "a/b"):
        with pytest.raises(Invalid):
            validate_username(bad)


def test_passwords_have_a_length_range_and_no_surrounding_space() -> None:
    assert validate_password("x" * 10) == "x" * 10
    for bad in ("x" * 9, "x" * 1025, " " + "x" * 12, "x" * 12 + "\n"):
        with pytest.raises(Invalid):
            validate_password(bad)


def test_roles_follow_the_token_rule() -> None:
    assert validate_role("operator", None) == "operator"
    assert validate_role("admin", "contoso") == "admin"
    for role, tenant in (("operator", "contoso"), ("admin", None), ("root", None)):
        with pytest.raises(Invalid):
            validate_role(role, tenant)


def test_session_expiry_idle_and_absolute() -> None:
    p = SessionPolicy(timedelta(minutes=30), timedelta(hours=12), timedelta(seconds=60))
    assert session_problem(T0, T0, T0 + timedelta(minutes=29, seconds=59), p) is None
    assert session_problem(T0, T0, T0 + timedelta(minutes=30), p) == "idle"
    late = T0 + timedelta(hours=12)
    assert session_problem(T0, late - timedelta(minutes=1), late, p) == "expired"
    assert not needs_touch(T0, T0 + timedelta(seconds=59), p)
    assert needs_touch(T0, T0 + timedelta(seconds=60), p)


def test_csrf_tokens_must_match_exactly_and_never_match_empty() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("abc", None)
    assert not tokens_match("", "")
    assert not tokens_match("abc", "abcd")


def test_argon2id_is_the_password_hash() -> None:
    digest = PasswordHasher().hash("correct horse battery")
    assert digest.startswith("$argon2id$")


def test_post_login_redirects_stay_inside_the_ui() -> None:
    assert safe_next("/ui/tenants/a/devices?tab=signed_in") == "/ui/tenants/a/devices?tab=signed_in"
    assert safe_next("/ui") == "/ui"
    for bad in (
        None,
        "",
        "https://evil.example/ui",
        "//evil.example/ui/x",
        "/\\evil.example",
        "/api/v1/tenants",
        "/uix",
        "/ui/login?next=/ui",
        "javascript:alert(1)",
        "/ui/x\r\nSet-Cookie: a=b",
        "/ui/a b",
    ):
        assert safe_next(bad) == "/ui", bad


def test_urls_paging_and_times() -> None:
    assert tenant_url("a", "devices", tab="x", q="", page=1) == "/ui/tenants/a/devices?tab=x"
    assert tenant_url("a", "users", "room+1@x.com", "disable") == (
        "/ui/tenants/a/users/room%2B1@x.com/disable"
    )
    assert tenant_url("a", "sheet", mac=["m1", "m2"]) == "/ui/tenants/a/sheet?mac=m1&mac=m2"
    assert [page_count(n, 50) for n in (0, 1, 50, 51, 100_000)] == [1, 1, 1, 2, 2000]
    assert [size_text(n) for n in (512, 65536, 32 << 20)] == ["512 bytes", "64 KiB", "32 MiB"]
    assert when("2026-11-27T12:00:00Z") == "2026-11-27 12:00 UTC" and when(None) == ""


def test_flash_messages_are_shown_once_and_bounded() -> None:
    box = FlashBox(max_sessions=2)
    box.add("s1", Flash("ok", "one"))
    box.add("s1", Flash("ok", "two"))
    assert [f.text for f in box.pop("s1")] == ["one", "two"] and box.pop("s1") == []
    for key in ("a", "b", "c"):
        box.add(key, Flash("ok", key))
    assert box.pop("a") == [] and [f.text for f in box.pop("c")] == ["c"]


def _upload(uid: str, user: str = "ops", tenant: str = "a", at: float = 0.0) -> PendingUpload:
    return PendingUpload(uid, user, tenant, "f.csv", (ImportRow(2, "02:00:5e:00:00:01", ""),), at)


def test_pending_uploads_belong_to_one_admin_and_tenant_and_expire() -> None:
    ups = PendingUploads(max_entries=3, ttl_s=900)
    ups.put(_upload("u1"), 0)
    assert ups.take("u1", "alice", "a", 1) is None  # another admin
    assert ups.take("u1", "ops", "b", 1) is None  # another tenant
    got = ups.take("u1", "ops", "a", 1)
    assert got is not None and got.id == "u1"
    assert ups.take("u1", "ops", "a", 2) is None  # confirmed once
    ups.put(_upload("u2"), 10)
    assert ups.take("u2", "ops", "a", 910) is None  # expired after 15 minutes
    ups.put(_upload("u3"), 0)
    ups.put(_upload("u4"), 1)  # a newer upload of the same admin and tenant replaces u3
    assert len(ups) == 1 and ups.take("u3", "ops", "a", 2) is None
    for i in range(5):
        ups.put(_upload(f"x{i}", user=f"user{i}"), 2)
    assert len(ups) == 3


def test_sheet_qr_codes_carry_mac_and_code_and_a_label() -> None:
    text = provision_qr_text("02:00:5e:00:00:01", "BCDF-GHJK")
    assert text == "imprint:provision?mac=02:00:5e:00:00:01&code=BCDF-GHJK"
    svg = qr_svg(text, 'QR code for "x"')
    assert svg.startswith('<svg role="img" aria-label="QR code for &#34;x&#34;" ')
    assert "style=" not in svg  # the page's CSP forbids inline styles
