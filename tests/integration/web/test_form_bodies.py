"""Form bodies on the real server: a form that cannot be read as the form its Content-Type names
is a 400 page saying what to send, never a 500 (issue 17: found by schemathesis on POST /device
with `Content-Type: multipart/form-data` and no boundary).

aiohttp's `request.post()` raises ValueError or LookupError for these; every form reader (the
device verification page, the admin sign-in, the admin UI's forms behind a session) now reads
through `server.web.routes.read_form`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from server.app import build_app
from server.registry.service import Principal
from server.web.keys import SERVICES
from server.web.limits import HttpListener
from tests.helpers.app import Api, lab_settings
from tests.helpers.ui import UiClient, db_snapshot

PASSWORD = "correct horse battery staple"
FORM = "application/x-www-form-urlencoded"
MULTIPART_BAD_HEADER = (
    b'--xyz\r\nContent-Disposition\xc6 form-data; name="id"\r\n\r\na\r\n--xyz--\r\n'
)
MULTIPART_TWICE = (
    b'--xyz\r\nContent-Disposition: form-data; name="id"\r\nContent-Type: text/plain\r\n'
    b"Content-Type: text/plain\r\n\r\na\r\n--xyz--\r\n"
)
MULTIPART_PART = b'--xyz\r\nContent-Disposition: form-data; name="id"\r\n\r\n\xff\r\n--xyz--\r\n'
MULTIPART_ENCODING = (
    b'--xyz\r\nContent-Disposition: form-data; name="id"\r\n'
    b"Content-Transfer-Encoding: base65\r\n\r\na\r\n--xyz--\r\n"
)

BROKEN = [
    ("multipart/form-data", b""),  # the exact request schemathesis sent: no boundary
    ("multipart/form-data; boundary=xyz", b"garbage"),  # no starting boundary
    ("multipart/form-data; boundary=xyz", MULTIPART_PART),  # a part that is not UTF-8
    (FORM, b"id=\xff\xfe&name=x"),  # not UTF-8
    (FORM + "; charset=nope", b"id=a&name=b"),  # a charset Python does not know
    # Found by bench/reliability/fuzz.py: a part's header line that is not `Name: value`, and
    # one header given twice, raise aiohttp's HttpProcessingError, which is no ValueError.
    ("multipart/form-data; boundary=xyz", MULTIPART_BAD_HEADER),
    ("multipart/form-data; boundary=xyz", MULTIPART_TWICE),
    # Found by the same bench at 1,000,000 inputs: a transfer encoding aiohttp does not know
    # raises RuntimeError.
    ("multipart/form-data; boundary=xyz", MULTIPART_ENCODING),
]
IDS = [
    "multipart-no-boundary",
    "multipart-garbage",
    "multipart-bad-utf8",
    "bad-utf8",
    "charset",
    "multipart-bad-part-header",
    "multipart-duplicate-part-header",
    "multipart-unknown-transfer-encoding",
]


async def post(api: Api, path: str, ctype: str, data: bytes, **kw: object) -> tuple[int, str]:
    async with api.client.post(
        path, data=data, headers={"Content-Type": ctype}, allow_redirects=False, **kw
    ) as r:
        text = await r.text()
        assert r.content_type == "text/html", (r.status, text[:300])
        return r.status, text


@pytest.mark.parametrize("path", ["/device", "/ui/login"])
@pytest.mark.parametrize(("ctype", "data"), BROKEN, ids=IDS)
async def test_an_unreadable_form_is_400_with_what_to_send(
    api: Api, path: str, ctype: str, data: bytes
) -> None:
    status, text = await post(api, path, ctype, data)
    assert status == 400, text[:500]
    assert "the form could not be read" in text and "application/x-www-form-urlencoded" in text
    assert (await api.call("GET", "/healthz"))[0] == 200


@pytest.mark.parametrize(("ctype", "data"), BROKEN, ids=IDS)
async def test_an_unreadable_admin_form_is_400_and_changes_nothing(
    api: Api, ctype: str, data: bytes
) -> None:
    svc = api.client.app[SERVICES]
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    await api.registry.create_tenant(Principal("test", "operator"), "a", "Alpha Corp")
    ui = UiClient(str(api.client.make_url("/")))
    try:
        assert (await ui.login("ops", PASSWORD)).status == 303
        before = db_snapshot(api.settings.store.path)
        # The session's cookie, and the CSRF token in the header: the form itself is unreadable.
        async with ui.http.post(
            "/ui/tenants",
            data=data,
            headers={"Content-Type": ctype, "X-CSRF-Token": ui.csrf},
            allow_redirects=False,
        ) as r:
            text = await r.text()
            assert r.status == 400 and r.content_type == "text/html", (r.status, text[:500])
        assert "the form could not be read" in text
        assert db_snapshot(api.settings.store.path) == before
    finally:
        await ui.close()


@pytest.fixture
async def listening(tmp_path: Path) -> AsyncIterator[int]:
    """The real app behind the real listener, as `imprint serve` runs it (plain HTTP)."""
    app = build_app(lab_settings(tmp_path))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    listener = HttpListener(
        runner,
        "127.0.0.1",
        0,
        ssl_context=None,
        max_connections=16,
        max_connections_per_source=16,
        head_timeout=5,
        keepalive_timeout=5,
        metrics=app[SERVICES].metrics,
    )
    await listener.start()
    try:
        yield listener.port
    finally:
        await listener.stop()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/ui/login", FORM),
        ("/provision", "application/json"),
        ("/oauth2/device_authorization", FORM),
        ("/device", FORM),
    ],
)
async def test_a_client_that_leaves_before_its_body_is_not_an_error(
    listening: int, caplog: pytest.LogCaptureFixture, path: str, ctype: str
) -> None:
    # aiohttp fails the body read with ConnectionResetError when the peer goes: nobody to
    # answer and nothing wrong with the server, so no "unhandled error" and no traceback
    # (a slowloris that hangs up would write one per connection).
    reader, writer = await asyncio.open_connection("127.0.0.1", listening)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        "Content-Length: 1000\r\n\r\nab".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    writer.close()
    await asyncio.sleep(0.3)
    assert "unhandled error" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
