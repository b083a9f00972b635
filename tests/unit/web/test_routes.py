"""The route table's typed adapter over a real loopback socket: path parameters and the JSON
body come in by name, the declared success status goes out, and a body is not read before the
table's check that the caller may touch the resource."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from server.web.errors import ApiError, json_errors
from server.web.routes import BodyError, RouteTable, parse_json


class ThingIn(BaseModel):
    name: str


checked: list[str] = []


async def owner_only(request: web.Request) -> None:
    checked.append(request.match_info["owner"])
    if request.match_info["owner"] != "me":
        raise ApiError(404, "not_found", "no such owner")


table = RouteTable(before_body=owner_only)


@table.route("GET", "/o/{owner}/things/{name}", summary="one", tag="t")
async def get_thing(request: web.Request, owner: str, name: str) -> dict[str, Any]:
    return {"owner": owner, "name": name}


@table.route(
    "POST",
    "/o/{owner}/things",
    summary="create",
    tag="t",
    body=ThingIn,
    responses={201: ("", None)},
)
async def create_thing(request: web.Request, owner: str, body: ThingIn) -> ThingIn:
    return body


@table.route("DELETE", "/o/{owner}/things/{name}", summary="delete", tag="t")
async def delete_thing(request: web.Request, owner: str, name: str) -> None:
    return None


@table.route("GET", "/raw", summary="raw", tag="t")
async def raw(request: web.Request) -> web.Response:
    return web.Response(text="as is", status=299)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[json_errors])
    table.add_to(app)
    c: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await c.start_server()
    checked.clear()
    try:
        yield c
    finally:
        await c.close()


async def test_path_parameters_arrive_by_name(client: TestClient[Any, Any]) -> None:
    async with client.get("/o/me/things/lamp") as r:
        assert r.status == 200
        assert await r.json() == {"owner": "me", "name": "lamp"}


async def test_body_is_validated_and_the_declared_status_is_sent(
    client: TestClient[Any, Any],
) -> None:
    async with client.post("/o/me/things", json={"name": "lamp"}) as r:
        assert r.status == 201
        assert await r.json() == {"name": "lamp"}
    async with client.post("/o/me/things", json={"name": 3}) as r:
        assert r.status == 400
        body = await r.json()
        assert body["error"] == "bad_request" and body["details"][0]["field"] == "name"
    async with client.post("/o/me/things") as r:
        assert r.status == 400
        assert "send a JSON body (name)" in (await r.json())["message"]


async def test_the_access_check_runs_before_any_body_is_read(
    client: TestClient[Any, Any],
) -> None:
    async with client.post("/o/you/things", data=b"{not json") as r:
        assert r.status == 404  # not 400: a stranger learns nothing from a malformed body
    assert checked == ["you"]


async def test_none_is_204_and_a_response_passes_through(client: TestClient[Any, Any]) -> None:
    async with client.delete("/o/me/things/lamp") as r:
        assert r.status == 204
    async with client.get("/raw") as r:
        assert (r.status, await r.text()) == (299, "as is")


def test_a_parameter_the_path_does_not_have_is_refused_when_declared() -> None:
    t = RouteTable()
    with pytest.raises(TypeError, match="colour"):

        @t.route("GET", "/things/{name}", summary="x", tag="t")
        async def bad(request: web.Request, name: str, colour: str) -> None:
            return None


def test_a_route_outside_its_sub_application_is_refused() -> None:
    t = RouteTable()

    @t.route("GET", "/other/x", summary="x", tag="t")
    async def x(request: web.Request) -> None:
        return None

    with pytest.raises(ValueError, match="outside the sub-application /api/v1"):
        t.add_to(web.Application(), "/api/v1")


class _JsonRequest:
    content_type = "application/json"


def test_parse_json_refuses_a_4301_digit_number_as_a_body_error() -> None:
    """Found by bench/reliability/fuzz.py: int()'s 4300-digit limit raised a bare ValueError
    (a 500), not a JSONDecodeError. 4300 digits still parse; a syntax error stays what it is."""
    with pytest.raises(BodyError, match="4300 digits"):
        parse_json(_JsonRequest(), b'{"exp":' + b"1" * 4301 + b',"sub":"x"}')  # type: ignore[arg-type]
    assert parse_json(_JsonRequest(), b"[" + b"9" * 4300 + b"]") == [int("9" * 4300)]  # type: ignore[arg-type]
    with pytest.raises(json.JSONDecodeError):
        parse_json(_JsonRequest(), b'{"exp": 1')  # type: ignore[arg-type]
