"""Schemathesis over every operation of the server's own OpenAPI document (issue 17, "Hold under
hostile traffic"): the real `imprint serve` on a loopback port over its own SQLite file, seeded
with tenants, devices, codes, a provisioned device with a pending sign-in and a user account.

Three callers, each a full pass (explicit examples, coverage and fuzzing phases; valid and
invalid data; path parameters and bodies that name real rows as well as missing ones):
- `operator`: a valid operator token;
- `no_auth`: no Authorization header, and `bad_token`: a token the server never issued; every
  operation that needs a token must answer 401, and nothing may answer 5xx.
Checked on every response: no 5xx, a status the operation documents (success statuses by
number), the documented content type, headers and body schema, and errors in the audience's
format (house JSON, RFC 6749 on /oauth2, HTML on /device). Bounded and derandomized: the same
requests every run. bench/reliability/schema.py runs the same with many more examples.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers.schemaprobe import PROBES, SeededServer, run_probe

EXAMPLES = 20  # fuzzing examples per operation and caller (explicit and coverage cases come on top)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededServer]:
    with SeededServer(tmp_path_factory.mktemp("schemathesis")) as srv:
        yield srv


def _operations(srv: SeededServer) -> set[str]:
    """Every documented operation but the document itself (schemathesis loads it, and leaves
    the operation it was served from out of the run)."""
    with urllib.request.urlopen(srv.url + "/api/v1/openapi.json", timeout=10) as r:
        doc = json.load(r)
    every = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    return every - {"GET /api/v1/openapi.json"}


@pytest.mark.parametrize("probe", PROBES)
def test_every_operation_holds_under_schemathesis(server: SeededServer, probe: str) -> None:
    report = run_probe(server, probe, EXAMPLES)
    print(report.describe())
    assert not report.errors, report.describe()
    tested = {op for op, _ in report.statuses}
    assert tested == _operations(server), f"untested: {_operations(server) - tested}"
    assert report.server_errors == 0 and not report.violations, report.describe()
    assert "unhandled error" not in server.log(), server.log()[-5000:]
    if probe == "operator":
        # The seeded rows were reached: every read answered 2xx at least once, and the device
        # lifecycle went through registration, code issue, sign-in and deletion.
        ok = {op for (op, status), _ in report.statuses.items() if 200 <= status < 400}
        reads = {op for op in tested if op.startswith("GET ")}
        assert reads <= ok, f"never a success: {sorted(reads - ok)}"
        for op in (
            "POST /api/v1/tenants/{tenant}/devices",
            "POST /api/v1/tenants/{tenant}/verification-codes",
            "POST /api/v1/tenants/{tenant}/devices/{mac}/sign-in",
            "DELETE /api/v1/tenants/{tenant}/devices/{mac}",
        ):
            assert op in ok, f"{op} never succeeded: {report.describe()}"
    else:
        assert report.statuses, "no request was sent"
