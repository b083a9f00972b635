"""Schemathesis against the real `imprint serve`: what tests/integration/api/test_schemathesis.py
and bench/reliability/schema.py share.

`SeededServer` starts `imprint serve` (plain HTTP on a loopback port, its own SQLite file) over
data made with the real CLI and the real API: two tenants, devices in every state the API can
reach (awaiting activation with a code, provisioned with a pending device sign-in), a user
account and an operator token. `run_probe` loads the OpenAPI document from the server's own
/api/v1/openapi.json and runs schemathesis over every operation it lists (explicit examples,
coverage and fuzzing phases, positive and negative data) as one caller: the operator token, no
credentials, or a token the server never issued. Every response is checked; nothing stops at
the first failure, so one run reports every violation it met, each with a curl command that
reproduces it.

    with SeededServer(tmp_path) as srv:
        report = run_probe(srv, "operator", examples=20)
        assert not report.violations, report.describe()
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.helpers.fixtures import REPO_ROOT
from tests.helpers.proc import clean_env, free_port
from tests.helpers.server import imprint_argv, to_toml, wait_until

PROBES = ("operator", "no_auth", "bad_token")
BAD_TOKEN = "imp__this-token-was-never-issued-by-this-server-000000"
SEED = 17  # the run is deterministic (derandomized); the seed is only the schemathesis config's

TENANTS = ("acme", "globex")
ACME_MACS = ("02:00:5e:00:0a:01", "02:00:5e:00:0a:02", "02:00:5e:00:0a:03", "02:00:5e:00:0a:04")
GLOBEX_MACS = ("02:00:5e:00:0b:01",)
PROVISIONED = ACME_MACS[0]  # redeemed at seeding, then a device sign-in started
USERNAME = "room-101@acme.example"
CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # server/provisioning/codes.py


def _env() -> dict[str, str]:
    # The tree under test first on the path: an editable install elsewhere (another worktree's
    # venv) must not serve its own copy of `server` instead of this one.
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Seed:
    """What the server holds at the start: the values path parameters are drawn from."""

    tenants: tuple[str, ...]
    macs: tuple[str, ...]
    usernames: tuple[str, ...]


class SeededServer:
    """`imprint serve` on 127.0.0.1 with seeded data; an operator token in `token`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "imprint.toml"
        self.log_path = workdir / "imprint-serve.log"
        self.proc: subprocess.Popen[str] | None = None
        self.token = ""
        self.seed = Seed(TENANTS, ACME_MACS + GLOBEX_MACS, (USERNAME,))
        self.config.write_text(
            to_toml(
                {
                    "store": {
                        "path": str(workdir / "state" / "imprint.db"),
                        "poll_interval_s": 0.2,
                    },
                    "http": {"host": "127.0.0.1", "port": self.port, "public_url": self.url},
                    "tls": {"enabled": False},  # loopback only; requests without TLS warnings
                    "log": {"level": "INFO", "format": "human"},
                    # Every request comes from 127.0.0.1: the default (2 entries a second) would
                    # answer nearly every /provision with 429 and the handler behind it would go
                    # untested. The failure limiter (wrong codes) stays as shipped.
                    "provision": {"rate_per_source": 10000.0, "burst_per_source": 10000},
                    # Full mode on loopback, so GET /api/v1/leases has leases to answer with
                    # (an empty list: nothing asks for an address) rather than always 409.
                    "dhcp": {
                        "enabled": True,
                        "mode": "full",
                        "host": "127.0.0.1",
                        "port": free_port(socket.SOCK_DGRAM),
                        "server_ip": "127.0.0.1",
                        "probe_other_servers": False,
                        "subnets": [{"subnet": "127.0.0.0/24", "pool": "127.0.0.100-127.0.0.150"}],
                    },
                }
            )
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*imprint_argv(), *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
        if done.returncode != 0:
            raise AssertionError(f"imprint {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def __enter__(self) -> SeededServer:
        self.cli("db", "init")
        for tid in TENANTS:
            self.cli("tenants", "create", "--id", tid, "--name", tid.title())
        for tid, macs in (("acme", ACME_MACS), ("globex", GLOBEX_MACS)):
            csv = self.workdir / f"{tid}.csv"
            csv.write_text("MAC ID,Location\r\n" + "".join(f"{m},Room {m[-2:]}\r\n" for m in macs))
            self.cli("devices", "import", "--tenant", tid, str(csv))
        self.token = self.cli("tokens", "create", "--role", "operator", "--name", "st").strip()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*imprint_argv(), "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
                text=True,
            )
        try:
            wait_until(self._ready, 30, "imprint serve to be ready")
            self._seed_over_http()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _seed_over_http(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        with requests.Session() as s:
            r = s.post(
                f"{self.url}/api/v1/tenants/acme/verification-codes",
                json={"all_awaiting_activation": True},
                headers=auth,
            )
            assert r.status_code == 201, r.text
            codes = {c["mac"]: c["code"] for c in r.json()}
            r = s.post(
                f"{self.url}/provision", json={"mac": PROVISIONED, "code": codes[PROVISIONED]}
            )
            assert r.status_code == 200, r.text
            client = r.json()
            r = s.post(
                f"{self.url}/oauth2/device_authorization",
                data={"client_id": client["client_id"], "client_secret": client["client_secret"]},
            )
            assert r.status_code == 200, r.text
            r = s.post(
                f"{self.url}/api/v1/tenants/acme/users",
                json={"username": USERNAME, "display_name": "Room 101", "password": "s3cret-pass"},
                headers=auth,
            )
            assert r.status_code == 201, r.text

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---- checks of our own, beside schemathesis's built-in ones -----------------------------------


def _error_format(path: str) -> str:
    """Which error format an audience answers with (server/web/errors.py)."""
    if path == "/oauth2" or path.startswith("/oauth2/"):
        return "oauth"  # RFC 6749 §5.2
    if path == "/device" or path.startswith("/device/"):
        return "html"  # the verification page: an HTML page for people
    return "house"  # the API and the device-facing root


def house_error_format(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx/5xx is in its audience's error format: `{"error", "message", "details"}` for the
    API and the root, RFC 6749 `{"error", "error_description"}` for /oauth2, HTML for /device."""
    if response.status_code < 400:
        return
    kind = _error_format(case.operation.path)
    ctype = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if kind == "html":
        assert ctype == "text/html", f"{response.status_code} as {ctype!r}, not an HTML page"
        return
    assert ctype == "application/json", f"{response.status_code} error as {ctype!r}, not JSON"
    body = json.loads(response.content)
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    if kind == "oauth":
        assert isinstance(body.get("error"), str) and isinstance(
            body.get("error_description"), str
        ), f"not an RFC 6749 error: {body!r}"
        return
    assert isinstance(body.get("error"), str) and body["error"], f"no 'error' code: {body!r}"
    assert isinstance(body.get("message"), str) and body["message"], f"no 'message': {body!r}"
    assert isinstance(body.get("details"), list), f"'details' is not a list: {body!r}"


def declared_success(ctx: Any, response: Any, case: Any) -> None:
    """A 1xx-3xx status is one the operation declares by number: `default` stands for errors."""
    if response.status_code >= 400:
        return
    declared = set(case.operation.definition.raw.get("responses", {}))
    assert str(response.status_code) in declared, (
        f"{response.status_code} is not among the declared {sorted(declared)}"
    )


def refused_without_credentials(ctx: Any, response: Any, case: Any) -> None:
    """Without a valid token, an operation that needs one answers 401 (never runs)."""
    security = case.operation.definition.raw.get("security") or []
    # The coverage phase also sends methods the path does not serve (405 before any auth).
    if case.method.upper() == case.operation.method.upper() and any(
        "bearerToken" in s for s in security
    ):
        assert response.status_code == 401, (
            f"{response.status_code} to a request without a valid bearer token"
        )


# ---- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    operation: str
    check: str
    status: int
    message: str
    curl: str
    body: str


@dataclass
class ProbeReport:
    probe: str
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    failed_requests: int = 0
    seconds: float = 0.0
    violations: dict[tuple[str, str, int], Violation] = field(default_factory=dict)
    counts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status)
    errors: list[str] = field(default_factory=list)  # operations schemathesis could not test

    def summary(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "operations": self.operations,
            "requests": self.requests,
            "server_errors": self.server_errors,
            "violations": len(self.violations),
            "failed_requests": self.failed_requests,
            "seconds": round(self.seconds, 1),
        }

    def describe(self) -> str:
        lines = [json.dumps(self.summary())]
        for key, v in sorted(self.violations.items()):
            lines.append(
                f"- {v.operation}: {v.check} ({v.status}, {self.counts[key]} request(s)): "
                f"{_first_lines(v.message)}\n    {v.curl}\n    -> {v.body}"
            )
        lines += [f"- could not test: {e}" for e in self.errors]
        return "\n".join(lines)


def _first_lines(text: str, n: int = 4) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[:n]) + (" / ..." if len(lines) > n else "")


BUILTIN_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def _config(examples: int, headers: dict[str, str]) -> Any:
    import schemathesis

    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "generation": {
                "deterministic": True,
                "max-examples": examples,
                "mode": "all",  # valid and invalid data
                # Only the probe's own Authorization header: none generated from the scheme.
                "with-security-parameters": False,
                "database": "none",  # nothing written to .hypothesis/ in the tree
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in BUILTIN_CHECKS}},
            "headers": headers,
            "request-timeout": 30,
        }
    )


def probe_headers(probe: str, srv: SeededServer) -> dict[str, str]:
    if probe == "operator":
        return {"Authorization": f"Bearer {srv.token}"}
    if probe == "bad_token":
        return {"Authorization": f"Bearer {BAD_TOKEN}"}
    if probe == "no_auth":
        return {}
    raise ValueError(f"unknown probe {probe!r}; one of {PROBES}")


_UNDOING = {("POST", "sign-out"): 1, ("POST", "reset"): 2, ("DELETE", "{mac}"): 3}


def run_probe(srv: SeededServer, probe: str, examples: int) -> ProbeReport:
    """Every operation of the server's own OpenAPI document, as the caller `probe`."""
    import hypothesis.strategies as st
    import schemathesis
    from schemathesis.checks import load_all_checks
    from schemathesis.core.failures import FailureGroup
    from schemathesis.core.result import Ok
    from schemathesis.pytest.lazy import get_all_tests

    load_all_checks()
    headers = probe_headers(probe, srv)
    schema = schemathesis.openapi.from_url(
        srv.url + "/api/v1/openapi.json", config=_config(examples, headers)
    )
    schema.config.update(base_url=srv.url)
    report = ProbeReport(probe)
    real = {"tenant": srv.seed.tenants, "mac": srv.seed.macs, "username": srv.seed.usernames}

    def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
        # Cases name rows that exist (real tenants, MACs, users), or what
        # schemathesis made up (rows that do not exist, or malformed values).
        if not path_parameters:
            return st.just(path_parameters)
        seeded = st.fixed_dictionaries(
            {
                k: st.sampled_from(real[k]) if k in real else st.just(v)
                for k, v in path_parameters.items()
            }
        )
        return st.one_of(seeded, st.just(path_parameters))

    fresh = st.integers(0, 255).map(lambda i: f"02:00:5e:00:0c:{i:02x}")
    macs = st.one_of(st.sampled_from(srv.seed.macs), fresh)
    # Well-formed verification codes (XXXX-XXXX from the code alphabet), almost all wrong.
    codes = st.text(CODE_ALPHABET, min_size=8, max_size=8).map(lambda c: f"{c[:4]}-{c[4:]}")

    def flatmap_body(context: Any, body: Any) -> Any:
        # JSON bodies that name devices: registered MACs or fresh valid ones (or what was made up),
        # and codes of the right shape, so registration, code issue and code entry get past the
        # format checks to the rows.
        if not isinstance(body, dict):
            return st.just(body)
        subs: dict[str, Any] = {}
        if isinstance(body.get("mac"), str):
            subs["mac"] = macs
        if isinstance(body.get("macs"), list):
            subs["macs"] = st.lists(macs, max_size=3)
        if isinstance(body.get("code"), str):
            subs["code"] = codes
        if not subs:
            return st.just(body)
        seeded = st.fixed_dictionaries({**{k: st.just(v) for k, v in body.items()}, **subs})
        return st.one_of(seeded, st.just(body))

    schema.hook(flatmap_path_parameters)
    schema.hook(flatmap_body)
    extra = [house_error_format, declared_success]
    if probe != "operator":
        extra.append(refused_without_credentials)

    session = requests.Session()

    def test(case: Any) -> None:
        response = case.call(session=session)
        report.requests += 1
        report.statuses[(case.operation.label, response.status_code)] += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, additional_checks=extra)
        except FailureGroup as group:
            report.failed_requests += 1
            for failure in group.exceptions:
                key = (case.operation.label, failure.title, response.status_code)
                report.counts[key] += 1
                if key not in report.violations:
                    report.violations[key] = Violation(
                        case.operation.label,
                        failure.title,
                        response.status_code,
                        failure.message,
                        case.as_curl_command(headers=dict(response.request.headers)),
                        " ".join(response.text[:300].split()),
                    )

    started = time.monotonic()
    tests = []
    for result in get_all_tests(schema=schema, test_func=test, settings=None, given_kwargs=None):
        if isinstance(result, Ok):
            tests.append(result.ok())
        else:
            report.errors.append(str(result.err()))
    # What undoes the seeded state last (sign-out, reset, then deletion), so the operations
    # before them still find signed-in devices and registered rows.
    tests.sort(key=lambda t: _UNDOING.get((t[0].method.upper(), t[0].path.rsplit("/", 1)[-1]), 0))
    report.operations = len(tests)
    try:
        for operation, hypothesis_test in tests:
            try:
                hypothesis_test()
            except Exception as e:  # a failure outside the checks: the operation is untested
                report.errors.append(f"{operation.label}: {type(e).__name__}: {e}"[:500])
    finally:
        session.close()
    report.seconds = time.monotonic() - started
    return report
