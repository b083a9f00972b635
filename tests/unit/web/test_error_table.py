"""The one table from error type to HTTP status (server/web/errors.py), read with values."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pydantic import BaseModel, ValidationError

from server.store.base import Conflict, Invalid, NotFound, StoreError
from server.web.errors import ERRORS, ApiError, Problem, problem_of
from server.web.keys import NotReady


class _Body(BaseModel):
    n: int


def _request() -> web.Request:
    return make_mocked_request("GET", "/x")


def _validation_error() -> ValidationError:
    try:
        _Body.model_validate({"n": "many"})
    except ValidationError as e:
        return e
    raise AssertionError("the model accepted a bad value")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotFound("no tenant 'x'"), 404, "not_found"),
        (Conflict("tenant 'x' exists"), 409, "conflict"),
        (Invalid("device is provisioned"), 422, "invalid"),
        (NotReady("store closed"), 503, "not_ready"),
        (StoreError("bad"), 400, "store_error"),
        (_validation_error(), 400, "bad_request"),
        (json.JSONDecodeError("Expecting value", "x", 0), 400, "bad_request"),
        (web.HTTPMethodNotAllowed("GET", ["POST"]), 405, "method_not_allowed"),
        (ApiError(401, "unauthorized", "send a token"), 401, "unauthorized"),
    ],
)
def test_each_error_type_has_one_status_and_code(exc: Exception, status: int, code: str) -> None:
    problem = problem_of(exc, _request())
    assert problem is not None
    assert (problem.status, problem.code) == (status, code)
    assert problem.message and problem.title


def test_subclasses_come_before_their_bases_so_none_is_shadowed() -> None:
    kinds = [row[0] for row in ERRORS]
    for i, kind in enumerate(kinds):
        for later in kinds[i + 1 :]:
            assert not issubclass(later, kind), f"{later.__name__} is shadowed by {kind.__name__}"


def test_details_travel_with_the_problem() -> None:
    p = problem_of(Invalid("2 rows are bad", [{"row": 3}]), _request())
    assert p == Problem(422, "invalid", "Not possible", "2 rows are bad", [{"row": 3}])
    v = problem_of(_validation_error(), _request())
    assert v is not None and v.details[0]["field"] == "n"


def test_an_undeclared_exception_is_a_bug_not_a_status() -> None:
    assert problem_of(ZeroDivisionError("x"), _request()) is None
    assert problem_of(web.HTTPFound("/ui"), _request()) is None  # a redirect is not an error
