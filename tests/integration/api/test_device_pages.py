"""Cursor pages of the device list over a real loopback socket and a real SQLite file.

A walk in MAC order must return every device that is there for the whole walk exactly once,
while other requests add and remove devices between (and during) its pages."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.helpers.app import Api

PAGES = "/api/v1/tenants/contoso/devices"


def mac(i: int) -> str:
    return f"02:00:5e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


async def setup(api: Api, n: int) -> list[str]:
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "C"})
    assert status == 201, body
    macs = [mac(2 * i) for i in range(n)]  # even numbers: the odd ones are free to add later
    csv = "MAC ID,Location\n" + "\n".join(f"{m},Room {i}" for i, m in enumerate(macs))
    status, body = await api.call(
        "POST", f"{PAGES}/import", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert status == 201, body
    return macs


async def walk(api: Api, query: str, between: Any = None) -> list[dict[str, Any]]:
    """Every page from the first, following next_cursor; `between` runs after each page."""
    pages: list[dict[str, Any]] = []
    status, body = await api.call("GET", f"{PAGES}?{query}")
    for _ in range(1000):  # bounded: a walk that does not end is a failure, not a hang
        assert status == 200, body
        pages.append(body)
        if body["next_cursor"] is None:
            return pages
        if between is not None:
            await between(len(pages))
        status, body = await api.call("GET", f"{PAGES}?{query}&cursor={body['next_cursor']}")
    raise AssertionError("the walk did not reach a last page")


async def test_a_walk_sees_every_device_once_while_others_are_added_and_removed(
    api: Api,
) -> None:
    initial = await setup(api, 300)
    rng = random.Random(6)
    removed: set[str] = set()
    added: set[str] = set()

    async def change(_: int) -> None:
        # Between pages: new devices on both sides of the cursor, and some deletions.
        for _ in range(6):
            new = mac(2 * rng.randrange(300) + 1)
            if new not in added:
                status, body = await api.call("POST", PAGES, json={"mac": new})
                assert status == 201, body
                added.add(new)
        gone = rng.choice(initial)
        if gone not in removed:
            status, _ = await api.call("DELETE", f"{PAGES}/{gone}")
            assert status == 204
            removed.add(gone)

    async def churn() -> None:
        # And during pages: a second client adding as fast as it can.
        for i in range(60):
            new = mac(1_000_001 + 2 * i)
            status, body = await api.call("POST", PAGES, json={"mac": new})
            assert status == 201, body
            added.add(new)

    pages, _ = await asyncio.gather(walk(api, "limit=37", change), churn())
    seen = [d["mac"] for page in pages for d in page["results"]]
    assert len(seen) == len(set(seen)), "a device was returned twice"
    assert seen == sorted(seen), "pages are not in MAC order"
    present = set(initial) - removed
    assert present <= set(seen), f"missed: {sorted(present - set(seen))[:5]}"
    assert set(seen) <= set(initial) | added
    assert removed and added - set(initial)
    # The count comes with the first page; later pages do not pay for it.
    assert pages[0]["count"] == 300 and all(p["count"] is None for p in pages[1:])
    assert pages[0]["prev_cursor"] is None and all(p["prev_cursor"] for p in pages[1:])


async def test_prev_cursor_walks_back_through_the_same_pages(api: Api) -> None:
    macs = await setup(api, 95)
    forward = await walk(api, "limit=20&state=awaiting_activation")
    assert [len(p["results"]) for p in forward] == [20, 20, 20, 20, 15]
    assert [d["mac"] for p in forward for d in p["results"]] == macs
    body = forward[-1]
    back = [body]
    while body["prev_cursor"]:
        status, body = await api.call("GET", f"{PAGES}?limit=20&cursor={body['prev_cursor']}")
        assert status == 200, body
        back.append(body)
    assert [p["results"] for p in reversed(back)] == [p["results"] for p in forward]
    # The first page reached going back knows it is the first; it links forward again.
    assert back[-1]["prev_cursor"] is None and back[-1]["next_cursor"] == forward[0]["next_cursor"]


async def test_a_search_pages_by_cursor_and_can_ask_for_its_count(api: Api) -> None:
    await setup(api, 60)
    pages = await walk(api, "q=Room 1&limit=4")  # Room 1, 10-19: 11 devices
    assert sum(len(p["results"]) for p in pages) == 11 and pages[0]["count"] == 11
    cursor = pages[0]["next_cursor"]
    status, body = await api.call("GET", f"{PAGES}?q=Room 1&limit=4&cursor={cursor}&count=true")
    assert status == 200 and body["count"] == 11 and body["results"] == pages[1]["results"]
    status, body = await api.call("GET", f"{PAGES}?q=Room 1&count=false")
    assert status == 200 and body["count"] is None and len(body["results"]) == 11


async def test_a_cursor_the_server_did_not_give_is_refused_with_what_to_do(api: Api) -> None:
    await setup(api, 3)
    for bad in ("zz", "bm90LWEtY3Vyc29y", "YTpub3QtYS1tYWM", "x" * 65, "%00"):
        status, body = await api.call("GET", f"{PAGES}?cursor={bad}")
        assert status == 422, (bad, body)
        assert "not one this server gave" in body["message"] and "next_cursor" in body["message"]
        assert body["details"][0]["field"] == "cursor"
    status, body = await api.call("GET", f"{PAGES}?limit=1")
    status, body = await api.call("GET", f"{PAGES}?cursor={body['next_cursor']}&offset=5")
    assert status == 422 and "cursor or offset, not both" in body["message"]
    status, body = await api.call("GET", f"{PAGES}?count=maybe")
    assert status == 400 and "'count'" in body["message"]
