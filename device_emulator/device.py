"""One emulated device from power-on to the sign-in screen, as an explicit state machine.

    BOOT -> DISCOVER -> PROVISION_SCREEN -> CODE_ENTRY -> PROVISIONING -> SIGN_IN_SCREEN
                 \\               \\               \\          |  ^  \\
                  '----------------'---------------'--> FAILED  '--'  '-> CODE_ENTRY (interactive,
                                                               (429 retry)  wrong or malformed code)

    Remote sign-in (RFC 8628), when the driver is asked for it:

    SIGN_IN_SCREEN -> SIGNING_IN -> POLLING -> SIGNED_IN
          ^  |  ^         |           |  ^        |
          '--'  '---------'-----------'  '--'     '-> SIGN_IN_SCREEN (signed out: invalid_grant)
      (server   (declined or expired:  (slow_down)    any of the three -> FAILED (client refused)
      unreachable) a new code)

`DeviceMachine` is the pure core: every transition takes `now` from the caller, records an
`Event`, and `screen()` renders what the device shows. `Device` is the driver that does the I/O
(discovery, the code prompt, the HTTPS POST) and feeds the results to the machine.

After SIGN_IN_SCREEN the device holds its OAuth client credentials (`DeviceMachine.credentials`);
`Device.sign_in` then runs the RFC 8628 device flow (logic in `device_emulator.signin`). A machine
made without `sign_in=True` treats SIGN_IN_SCREEN as its last state. Imports nothing from server/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from device_emulator.dhcp_client import (
    DeviceIdentity,
    DhcpResult,
    DhcpTransport,
    RetryPolicy,
    discover_request,
    inform,
)
from device_emulator.https_client import (
    Dialer,
    HttpClient,
    HttpError,
    HttpProtocolError,
    HttpResponse,
    NoPin,
    PinMismatch,
    TlsSessions,
)
from device_emulator.mdns_client import MdnsTransport, query_service
from device_emulator.mdns_codec import DEFAULT_SERVICE
from device_emulator.provisioning import NoAnswer, ProvisioningInfo, normalize_fingerprint
from device_emulator.signin import (
    DeviceAuthorization,
    OAuthClient,
    OAuthFailure,
    PollSchedule,
    PollStep,
    RefreshStep,
    SignInError,
    Tokens,
    refresh_step,
)

__all__ = [
    "Credentials",
    "Device",
    "DeviceMachine",
    "Discoverer",
    "Event",
    "Failure",
    "PinPolicy",
    "SignInOptions",
    "State",
    "dhcp_discoverer",
    "discover_first",
    "mdns_discoverer",
    "post_code",
]


class State(StrEnum):
    """Where the device is; each value is also the name shown in events."""

    BOOT = "BOOT"
    DISCOVER = "DISCOVER"
    PROVISION_SCREEN = "PROVISION_SCREEN"
    CODE_ENTRY = "CODE_ENTRY"
    PROVISIONING = "PROVISIONING"
    SIGN_IN_SCREEN = "SIGN_IN_SCREEN"
    SIGNING_IN = "SIGNING_IN"
    POLLING = "POLLING"
    SIGNED_IN = "SIGNED_IN"
    FAILED = "FAILED"


# The only legal moves. PROVISIONING -> PROVISIONING is a retry after 429 Retry-After.
# SIGN_IN_SCREEN -> SIGN_IN_SCREEN: the device authorization request failed, shown and retried
# (the device is provisioned; only the admin can take that away, so it never shows FAILED).
# POLLING -> POLLING is slow_down (RFC 8628 §3.5).
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.BOOT: frozenset({State.DISCOVER, State.FAILED}),
    State.DISCOVER: frozenset({State.PROVISION_SCREEN, State.FAILED}),
    State.PROVISION_SCREEN: frozenset({State.CODE_ENTRY, State.FAILED}),
    State.CODE_ENTRY: frozenset({State.PROVISIONING, State.FAILED}),
    State.PROVISIONING: frozenset(
        {State.SIGN_IN_SCREEN, State.CODE_ENTRY, State.PROVISIONING, State.FAILED}
    ),
    State.SIGN_IN_SCREEN: frozenset({State.SIGNING_IN, State.SIGN_IN_SCREEN}),
    State.SIGNING_IN: frozenset(
        {State.POLLING, State.SIGNED_IN, State.SIGN_IN_SCREEN, State.FAILED}
    ),
    State.POLLING: frozenset({State.POLLING, State.SIGNED_IN, State.SIGN_IN_SCREEN, State.FAILED}),
    State.SIGNED_IN: frozenset({State.SIGN_IN_SCREEN, State.FAILED}),
    State.FAILED: frozenset(),
}

SCREEN_WIDTH = 48  # characters per line of the emulated display

# Errors a technician can fix by typing again; all others need the admin (or a new network).
RETYPE_ERRORS = frozenset({"wrong_code", "bad_request", "invalid"})
# Failures that are the device's own finding, not the server's answer.
LOCAL_ERRORS = frozenset(
    {
        "no_answer",
        "no_url",
        "unsupported_scheme",
        "no_pin",
        "pin_mismatch",
        "connection_failed",
        "protocol_error",
        "no_code_entered",
    }
)


class TransitionError(RuntimeError):
    """The driver asked for a move the state machine does not allow (a bug in the driver)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One state change: when (the driver's monotonic clock, seconds), into what, and why."""

    at: float
    state: State
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"at": round(self.at, 6), "state": self.state.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Failure:
    """Why provisioning did not succeed: the server's error code and message, or a local one."""

    error: str
    message: str
    status: int | None = None
    attempts_left: int | None = None
    retry_after: float | None = None
    details: tuple[Any, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "error": self.error,
            "message": self.message,
            "status": self.status,
            "attempts_left": self.attempts_left,
            "retry_after": self.retry_after,
            "details": list(self.details),
        }


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a successful code entry gives the device: its tenant and OAuth client."""

    tenant_id: str
    tenant_name: str
    device_id: str
    client_id: str
    client_secret: str = field(repr=False)
    authorization_server: str

    def as_dict(self, *, secret: bool = False) -> dict[str, Any]:
        """JSON-ready form; the client secret is left out unless `secret`."""
        out: dict[str, Any] = {
            "tenant": {"id": self.tenant_id, "name": self.tenant_name},
            "device_id": self.device_id,
            "client_id": self.client_id,
            "authorization_server": self.authorization_server,
        }
        if secret:
            out["client_secret"] = self.client_secret
        return out


@dataclass(frozen=True, slots=True)
class PinPolicy:
    """Which certificate the device trusts: the advertised pin, a forced one, or (lab) none."""

    override: str | None = None  # --pin: pin this instead of what was advertised (tests, labs)
    insecure_no_pin: bool = False  # accept an https server nobody advertised a pin for


def credentials_from_body(body: Any) -> Credentials | None:
    """Read the 200 body of the provisioning contract; None when a field is missing."""
    if not isinstance(body, dict):
        return None
    tenant = body.get("tenant")
    fields = (
        body.get("device_id"),
        body.get("client_id"),
        body.get("client_secret"),
        body.get("authorization_server"),
    )
    if (
        body.get("status") != "provisioned"
        or not isinstance(tenant, dict)
        or not isinstance(tenant.get("id"), str)
        or not isinstance(tenant.get("name"), str)
        or not all(isinstance(f, str) and f for f in fields)
    ):
        return None
    device_id, client_id, secret, auth = (str(f) for f in fields)
    return Credentials(
        tenant_id=tenant["id"],
        tenant_name=tenant["name"],
        device_id=device_id,
        client_id=client_id,
        client_secret=secret,
        authorization_server=auth,
    )


def failure_from_response(response: HttpResponse) -> Failure:
    """The server's refusal as a Failure: its error code and the message for the technician."""
    retry_after = None
    header = response.header("retry-after")
    if header is not None and header.strip().isdigit():
        retry_after = float(header.strip())  # RFC 9110 §10.2.3: delay-seconds (dates ignored)
    try:
        body = response.json()
    except HttpProtocolError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        left = body.get("attempts_left")
        details = body.get("details")
        return Failure(
            error=body["error"],
            message=str(body.get("message") or body["error"]),
            status=response.status,
            attempts_left=left if isinstance(left, int) and not isinstance(left, bool) else None,
            retry_after=retry_after,
            details=tuple(details) if isinstance(details, list) else (),
        )
    return Failure(
        error=f"http_{response.status}",
        message=f"the server answered HTTP {response.status} {response.reason} without an "
        "error message",
        status=response.status,
        retry_after=retry_after,
    )


class DeviceMachine:
    """The pure state machine of one device; no I/O, no clock: `now` comes from the caller."""

    def __init__(
        self,
        mac: str,
        *,
        interactive: bool = False,
        pin_policy: PinPolicy | None = None,
        rate_limit_retries: int = 3,
        max_retry_after: float = 30.0,
        sign_in: bool = False,
    ) -> None:
        self.mac = mac
        self.sign_in = sign_in  # go on past SIGN_IN_SCREEN with the RFC 8628 device flow
        self.interactive = interactive
        self.pin_policy = pin_policy or PinPolicy()
        self.rate_limit_retries = rate_limit_retries
        self.max_retry_after = max_retry_after
        self.state = State.BOOT
        self.events: list[Event] = []
        self.methods: tuple[str, ...] = ()
        self.info: ProvisioningInfo | None = None
        self.pin: str | None = None  # the fingerprint the HTTPS connection must present
        self.warnings: list[str] = []
        self.failure: Failure | None = None  # final failure (state FAILED)
        self.last_refusal: Failure | None = None  # shown on the code entry screen
        self.credentials: Credentials | None = None
        self.code_attempts = 0
        self.retries = 0
        self.retry_after = 0.0
        self.authorization: DeviceAuthorization | None = None  # the code shown now
        self.poll_interval = 0.0
        self.user: str | None = None  # who is signed in (the access token's `sub`)
        self.notice: str | None = None  # why the sign-in screen is back (declined, signed out)
        self.sign_in_problem: Failure | None = None  # why no code could be had (still retried)
        self.sign_ins = 0  # device authorizations obtained

    # --- transitions ------------------------------------------------------------------------

    def _move(self, state: State, now: float, detail: str) -> Event:
        if self.events and state not in TRANSITIONS[self.state]:
            raise TransitionError(f"{self.state} -> {state} is not a legal move ({detail})")
        self.state = state
        event = Event(now, state, detail)
        self.events.append(event)
        return event

    def power_on(self, now: float) -> Event:
        """The device starts (BOOT); must be the first call."""
        if self.events:
            raise TransitionError("power_on twice")
        return self._move(State.BOOT, now, f"power on, MAC {self.mac}")

    def start_discovery(self, methods: Sequence[str], now: float) -> Event:
        """BOOT -> DISCOVER by `methods` (e.g. ("dhcp", "mdns"))."""
        self.methods = tuple(methods)
        return self._move(State.DISCOVER, now, f"looking for Imprint by {', '.join(methods)}")

    def discovered(self, info: ProvisioningInfo, now: float) -> Event:
        """DISCOVER -> PROVISION_SCREEN, or FAILED when the answer cannot be used safely."""
        self.info = info
        if not info.url or not info.host:
            return self._fail(
                Failure("no_url", f"the {info.source} answer carried no provisioning URL"), now
            )
        if info.scheme not in ("https", "http"):
            return self._fail(
                Failure(
                    "unsupported_scheme",
                    f"the advertised URL {info.url} is not https or http",
                ),
                now,
            )
        policy = self.pin_policy
        if info.scheme == "http":
            self.warnings.append(
                f"plain HTTP ({info.url}): the code will cross the network unencrypted; "
                "use this only in a lab with TLS off"
            )
        elif policy.override is not None:
            self.pin = normalize_fingerprint(policy.override)
            if self.pin is None:
                return self._fail(
                    Failure("no_pin", f"--pin {policy.override!r} is not 64 hex digits"), now
                )
            if info.fingerprint and info.fingerprint != self.pin:
                self.warnings.append(
                    f"pinning {self.pin} given on the command line instead of the advertised "
                    f"{info.fingerprint}"
                )
        elif info.fingerprint:
            self.pin = info.fingerprint
        elif policy.insecure_no_pin:
            self.warnings.append(
                "no certificate fingerprint was advertised; connecting WITHOUT pinning "
                "(--insecure-no-pin): anyone on the path could read the code"
            )
        else:
            return self._fail(
                Failure(
                    "no_pin",
                    f"the {info.source} answer gave {info.url} but no certificate fingerprint "
                    "to pin; refusing to send a code to an unverified server "
                    "(--insecure-no-pin overrides this in a lab)",
                ),
                now,
            )
        return self._move(State.PROVISION_SCREEN, now, f"{info.url} via {info.source.upper()}")

    def discovery_failed(self, message: str, now: float, detail: str = "") -> Event:
        """DISCOVER -> FAILED: nobody answered (an unregistered MAC gets silence); `detail` is
        what each method saw, for the log rather than the screen."""
        failure = Failure("no_answer", message, details=(detail,) if detail else ())
        self.failure = failure
        return self._move(
            State.FAILED, now, f"no_answer: {message}" + (f" ({detail})" if detail else "")
        )

    def ask_code(self, now: float) -> Event:
        """PROVISION_SCREEN -> CODE_ENTRY."""
        return self._move(State.CODE_ENTRY, now, "waiting for the verification code")

    def code_entered(self, code: str, now: float) -> Event:
        """CODE_ENTRY -> PROVISIONING with the typed code."""
        self.code_attempts += 1
        self.retries = 0
        shown = code.strip()
        return self._move(
            State.PROVISIONING,
            now,
            f"code entry #{self.code_attempts} ({len(shown)} characters) to "
            f"{self.info.url if self.info else '?'}",
        )

    def no_code(self, message: str, now: float) -> Event:
        """CODE_ENTRY -> FAILED: nobody typed a code."""
        return self._fail(Failure("no_code_entered", message), now)

    def provisioned(self, credentials: Credentials, now: float) -> Event:
        """PROVISIONING -> SIGN_IN_SCREEN."""
        self.credentials = credentials
        self.last_refusal = None
        return self._move(
            State.SIGN_IN_SCREEN,
            now,
            f"provisioned to tenant {credentials.tenant_id} as {credentials.device_id}",
        )

    def refused(self, failure: Failure, now: float) -> Event:
        """PROVISIONING -> PROVISIONING (rate limited, retry), CODE_ENTRY (retype) or FAILED."""
        self.last_refusal = failure
        if failure.error == "rate_limited" and self.retries < self.rate_limit_retries:
            self.retries += 1
            self.retry_after = min(
                self.max_retry_after, failure.retry_after if failure.retry_after else 1.0
            )
            return self._move(
                State.PROVISIONING,
                now,
                f"rate limited; retry {self.retries} of {self.rate_limit_retries} in "
                f"{self.retry_after:g} s",
            )
        if self.interactive and failure.error in RETYPE_ERRORS:
            left = "" if failure.attempts_left is None else f", {failure.attempts_left} left"
            return self._move(State.CODE_ENTRY, now, f"{failure.error}{left}: type it again")
        return self._fail(failure, now)

    def sign_in_unavailable(self, failure: Failure, now: float) -> Event:
        """SIGN_IN_SCREEN -> SIGN_IN_SCREEN: no device authorization could be had (shown)."""
        self.sign_in_problem = failure
        return self._move(State.SIGN_IN_SCREEN, now, f"{failure.error}: {failure.message}")

    def sign_in_started(self, authorization: DeviceAuthorization, now: float) -> Event:
        """SIGN_IN_SCREEN -> SIGNING_IN: show the user code and where to enter it."""
        self.authorization = authorization
        self.poll_interval = authorization.interval
        self.sign_in_problem = None
        self.notice = None
        self.user = None
        self.sign_ins += 1
        return self._move(
            State.SIGNING_IN,
            now,
            f"user code {authorization.user_code} at {authorization.verification_uri} "
            f"(expires in {authorization.expires_in:g} s, poll every {authorization.interval:g} s)",
        )

    def polling(self, interval: float, now: float, slow_down: bool = False) -> Event:
        """SIGNING_IN -> POLLING (the first answer was authorization_pending), or
        POLLING -> POLLING on slow_down with the grown interval."""
        self.poll_interval = interval
        detail = (
            f"slow_down: polling every {interval:g} s from now on (RFC 8628 §3.5)"
            if slow_down
            else f"authorization_pending: polling every {interval:g} s"
        )
        return self._move(State.POLLING, now, detail)

    def signed_in(self, user: str, now: float) -> Event:
        """SIGNING_IN/POLLING -> SIGNED_IN as `user`."""
        self.user = user
        self.notice = None
        return self._move(State.SIGNED_IN, now, f"signed in as {user}")

    def back_to_sign_in(self, reason: str, notice: str, now: float) -> Event:
        """SIGNING_IN/POLLING/SIGNED_IN -> SIGN_IN_SCREEN: declined, expired or signed out."""
        self.notice = notice
        self.user = None
        self.authorization = None
        return self._move(State.SIGN_IN_SCREEN, now, f"{reason}: {notice}")

    def fail(self, failure: Failure, now: float) -> Event:
        """Any state -> FAILED for a local reason (pin mismatch, network error, ...)."""
        return self._fail(failure, now)

    def _fail(self, failure: Failure, now: float) -> Event:
        self.failure = failure
        return self._move(State.FAILED, now, f"{failure.error}: {failure.message}")

    # --- views ------------------------------------------------------------------------------

    def is_in(self, state: State) -> bool:
        """True when the device is in `state` (a call, so type checkers do not narrow it)."""
        return self.state is state

    @property
    def finished(self) -> bool:
        """True in a state the driver has nothing more to do in (without sign-in, the sign-in
        screen is the last)."""
        if self.state is State.SIGN_IN_SCREEN and not self.sign_in:
            return True
        return not TRANSITIONS[self.state]

    def entered(self, state: State) -> float | None:
        """When the device first entered `state`, or None."""
        return next((e.at for e in self.events if e.state is state), None)

    @property
    def time_to_provision(self) -> float | None:
        """Seconds from power-on to the sign-in screen, or None if it never got there."""
        start, end = self.entered(State.BOOT), self.entered(State.SIGN_IN_SCREEN)
        return None if start is None or end is None else end - start

    def screen(self) -> str:
        """What the device's display shows now, as text."""
        info = self.info
        server = ""
        if info is not None and info.host:
            server = f"{info.host}:{info.port}" if info.port else info.host
        if self.state is State.BOOT:
            lines = ["Starting...", f"MAC {self.mac}"]
        elif self.state is State.DISCOVER:
            lines = ["Looking for the provisioning server", f"({' then '.join(self.methods)})"]
        elif self.state is State.PROVISION_SCREEN:
            lines = ["Provision device", f"Server: {server} (found by {self._source()})"]
            lines.append(
                f"Certificate: sha256 {self.pin[:16]}..." if self.pin else "Certificate: not pinned"
            )
            lines.append(f"MAC {self.mac}")
        elif self.state is State.CODE_ENTRY:
            lines = ["Provision device", f"Server: {server}"]
            refusal = self.last_refusal
            if refusal is not None:
                lines.append(refusal.message)
                if refusal.attempts_left is not None and str(refusal.attempts_left) not in (
                    refusal.message
                ):
                    lines.append(f"Attempts left: {refusal.attempts_left}")
            lines.append("Enter the verification code (XXXX-XXXX):")
        elif self.state is State.PROVISIONING:
            lines = ["Provisioning...", f"Contacting {server}"]
            if self.retries:
                lines.append(f"Server busy, retrying in {self.retry_after:g} s")
        elif self.state is State.SIGN_IN_SCREEN:
            creds = self.credentials
            assert creds is not None
            lines = [f"Sign in to {creds.tenant_name}", f"Device {creds.device_id}"]
            if self.notice:
                lines.append(self.notice)
            if self.sign_in_problem is not None:
                lines.append(f"Cannot start sign-in: {self.sign_in_problem.message}")
            elif self.sign_in:
                lines.append("Getting a sign-in code...")
        elif self.state in (State.SIGNING_IN, State.POLLING):
            creds, auth = self.credentials, self.authorization
            assert creds is not None and auth is not None
            lines = [
                f"Sign in to {creds.tenant_name}",
                "On a phone or computer, go to",
                auth.verification_uri,
                "and enter the code",
                auth.user_code,
            ]
            if self.state is State.POLLING:
                lines.append(f"Waiting for approval (checking every {self.poll_interval:g} s)")
        elif self.state is State.SIGNED_IN:
            creds = self.credentials
            assert creds is not None
            lines = [f"Signed in as {self.user}", creds.tenant_name]
        else:
            failure = self.failure
            assert failure is not None
            title = "Sign-in failed" if self.entered(State.SIGNING_IN) else "Provisioning failed"
            lines = [title, failure.message, f"({failure.error})"]
        lines = [part for line in lines for part in textwrap.wrap(line, SCREEN_WIDTH) or [""]]
        width = max(len(line) for line in lines) + 2
        border = "+" + "-" * width + "+"
        return "\n".join([border, *(f"| {line.ljust(width - 2)} |" for line in lines), border])

    def sign_in_view(self) -> dict[str, Any]:
        """The sign-in part of the story: the code shown, the user, the notice (no secrets)."""
        auth = self.authorization
        return {
            "user_code": None if auth is None else auth.user_code,
            "verification_uri": None if auth is None else auth.verification_uri,
            "verification_uri_complete": None if auth is None else auth.verification_uri_complete,
            "interval": self.poll_interval or None,
            "user": self.user,
            "notice": self.notice,
            "problem": None if self.sign_in_problem is None else self.sign_in_problem.as_dict(),
            "sign_ins": self.sign_ins,
        }

    def _source(self) -> str:
        return self.info.source.upper() if self.info else "?"

    def as_dict(self) -> dict[str, Any]:
        """The device's story as plain JSON (the client secret is left out)."""
        return {
            "mac": self.mac,
            "state": self.state.value,
            "provisioning": None if self.info is None else self.info.as_dict(),
            "pin": self.pin,
            "warnings": list(self.warnings),
            "failure": None if self.failure is None else self.failure.as_dict(),
            "credentials": None if self.credentials is None else self.credentials.as_dict(),
            "code_attempts": self.code_attempts,
            "time_to_provision": self.time_to_provision,
            "sign_in": self.sign_in_view(),
            "events": [e.as_dict() for e in self.events],
        }


# --- I/O: discovery, code entry, the POST ---------------------------------------------------

Discoverer = Callable[[], Awaitable[ProvisioningInfo]]
CodeSource = Callable[[DeviceMachine], Awaitable[str | None]]


def _fingerprint_from_option_225(result: DhcpResult) -> ProvisioningInfo:
    """The generic profile sends the pin as text in option 225; read it when nothing else did."""
    info = result.provisioning
    raw = result.reply.options.get(225)
    if info.fingerprint is None and raw:
        fp = normalize_fingerprint(raw.rstrip(b"\x00").decode("ascii", errors="replace"))
        if fp is not None:
            return replace(info, fingerprint=fp)
    return info


def dhcp_discoverer(
    identity: DeviceIdentity,
    transport: DhcpTransport,
    *,
    ciaddr: str | None,
    time_limit: float,
    retry: RetryPolicy | None = None,
) -> Discoverer:
    """DHCPINFORM from `ciaddr` (DISCOVER/REQUEST without one) over an open transport."""

    async def run() -> ProvisioningInfo:
        if ciaddr is not None:
            result = await inform(
                identity, transport, ciaddr=ciaddr, time_limit=time_limit, retry=retry
            )
        else:
            result = await discover_request(identity, transport, time_limit=time_limit, retry=retry)
        return _fingerprint_from_option_225(result)

    return run


def mdns_discoverer(
    open_transport: Callable[[], MdnsTransport],
    *,
    service: str = DEFAULT_SERVICE,
    time_limit: float,
    retry_initial: float = 1.0,
) -> Discoverer:
    """A DNS-SD browse on a transport opened for it and closed after it."""

    async def run() -> ProvisioningInfo:
        transport = open_transport()
        try:
            result = await query_service(
                transport, service=service, time_limit=time_limit, retry_initial=retry_initial
            )
        finally:
            transport.close()
        return result.provisioning

    return run


async def discover_first(
    methods: Sequence[tuple[str, Discoverer]], *, parallel: bool = False
) -> ProvisioningInfo:
    """The first answer that carries a provisioning URL, asking in order or all at once.

    Raises NoAnswer naming what each method got when none produced a URL.
    """
    problems: list[str] = []

    async def one(name: str, discover: Discoverer) -> ProvisioningInfo | None:
        try:
            info = await discover()
        except NoAnswer as exc:
            problems.append(f"{name}: {exc}")
            return None
        except OSError as exc:  # e.g. no route to the mDNS group: the other method may work
            problems.append(f"{name}: cannot send: {exc.strerror or exc}")
            return None
        if not info.url:
            problems.append(f"{name}: the answer carried no provisioning URL")
            return None
        return info

    if not parallel:
        for name, discover in methods:
            found = await one(name, discover)
            if found is not None:
                return found
    else:
        tasks = [asyncio.ensure_future(one(name, d)) for name, d in methods]
        try:
            for next_done in asyncio.as_completed(tasks):
                found = await next_done
                if found is not None:
                    return found
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    raise NoAnswer("; ".join(problems) or "no discovery method configured")


async def post_code(
    info: ProvisioningInfo, mac: str, code: str, *, http: HttpClient
) -> Credentials | Failure:
    """POST {mac, code} to the provisioning URL over the device's client (kept-alive, pinned).

    A pin mismatch aborts before any request byte is written.
    """
    assert info.scheme and info.host and info.port and info.path
    body = json.dumps({"mac": mac, "code": code}).encode("utf-8")
    try:
        response = await http.send(
            info.scheme,
            info.host,
            info.port,
            "POST",
            info.path,
            body=body,
            content_type="application/json",
        )
    except PinMismatch as exc:
        return Failure("pin_mismatch", str(exc))
    except NoPin as exc:
        return Failure("no_pin", str(exc))
    except HttpProtocolError as exc:
        return Failure("protocol_error", str(exc))
    except HttpError as exc:
        return Failure("connection_failed", str(exc))
    if response.status == 200:
        try:
            creds = credentials_from_body(response.json())
        except HttpProtocolError as exc:
            return Failure("protocol_error", str(exc), status=200)
        if creds is None:
            return Failure(
                "protocol_error",
                "HTTP 200 but the body lacks status/tenant/device_id/client_id/client_secret/"
                "authorization_server",
                status=200,
            )
        return creds
    return failure_from_response(response)


@dataclass
class HttpOptions:
    """How the device talks HTTP: a shared TLS context, its source address, time limits."""

    context: ssl.SSLContext | None = None
    local_address: str | None = None
    timeout: float = 10.0
    keep_alive: bool = True
    sessions: TlsSessions | None = None  # TLS sessions to resume (one device's, or a fleet's)


@dataclass(frozen=True, slots=True)
class SignInOptions:
    """How the device signs in after provisioning (RFC 8628) and how long it keeps at it."""

    stay: bool = False  # after signing in, keep refreshing and follow a remote sign-out
    refresh_every: float = 30.0  # seconds between refreshes while signed in (with `stay`)
    time_limit: float = 600.0  # seconds from power-on after which the driver stops
    notice_pause: float = 1.0  # how long "Sign-in was declined" & co. show before a new code
    scope: str | None = None
    max_sign_ins: int = 100  # new device authorizations at most (bounded even if misused)


Listener = Callable[[DeviceMachine, Event], None]


class Device:
    """Drives one DeviceMachine through real discovery, code entry and the HTTPS POST."""

    def __init__(
        self,
        mac: str,
        discoverers: Sequence[tuple[str, Discoverer]],
        codes: CodeSource,
        *,
        interactive: bool = False,
        parallel_discovery: bool = False,
        pin_policy: PinPolicy | None = None,
        http: HttpOptions | None = None,
        clock: Callable[[], float] | None = None,
        listener: Listener | None = None,
        rate_limit_retries: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sign_in: SignInOptions | None = None,
    ) -> None:
        self.machine = DeviceMachine(
            mac,
            interactive=interactive,
            pin_policy=pin_policy,
            rate_limit_retries=rate_limit_retries,
            sign_in=sign_in is not None,
        )
        self.sign_in_options = sign_in
        self.discoverers = tuple(discoverers)
        self.codes = codes
        self.parallel_discovery = parallel_discovery
        self.http = http or HttpOptions()
        self._clock = clock
        self._listener = listener
        self._sleep = sleep
        self.http_time = 0.0  # seconds spent in POSTs (connect, TLS, request), for the bench
        self.client: HttpClient | None = None  # one HTTPS client for the code and sign-in
        self.token_time = 0.0  # seconds in the last token request (the one that signed in)
        self.last_poll_at: float | None = None  # when the last token request was sent

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _emit(self, event: Event) -> None:
        if self._listener is not None:
            self._listener(self.machine, event)

    async def run(self) -> DeviceMachine:
        """Power on and run until SIGN_IN_SCREEN or FAILED (with sign-in: until SIGNED_IN, or
        with `stay` until the time limit); return the machine."""
        m = self.machine
        started = self._now()
        self._emit(m.power_on(started))
        try:
            await self._provision()
            options = self.sign_in_options
            if options is not None and m.is_in(State.SIGN_IN_SCREEN):
                await self.sign_in(options, until=started + options.time_limit)
        finally:
            await self.close()
        return m

    def _client(self) -> HttpClient:
        """The device's HTTPS client, made once discovery gave the pin."""
        if self.client is None:
            self.client = HttpClient(self._dialer(), keep_alive=self.http.keep_alive)
        return self.client

    async def close(self) -> None:
        """Close the device's kept connection."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()

    async def _provision(self) -> DeviceMachine:
        m = self.machine
        self._emit(m.start_discovery([name for name, _ in self.discoverers], self._now()))
        try:
            info = await discover_first(self.discoverers, parallel=self.parallel_discovery)
        except (NoAnswer, OSError) as exc:
            self._emit(
                m.discovery_failed(
                    f"No provisioning server answered for MAC {m.mac}. Is this MAC registered "
                    "with Imprint? Ask your admin.",
                    self._now(),
                    str(exc),
                )
            )
            return m
        self._emit(m.discovered(info, self._now()))
        if m.finished:
            return m
        self._emit(m.ask_code(self._now()))
        http = self._client()
        while m.is_in(State.CODE_ENTRY):
            code = await self.codes(m)
            if code is None:
                self._emit(m.no_code("no verification code was entered", self._now()))
                break
            self._emit(m.code_entered(code, self._now()))
            while m.is_in(State.PROVISIONING):
                started = self._now()
                outcome = await post_code(info, m.mac, code, http=http)
                self.http_time += self._now() - started
                if isinstance(outcome, Credentials):
                    self._emit(m.provisioned(outcome, self._now()))
                elif outcome.error in LOCAL_ERRORS:
                    self._emit(m.fail(outcome, self._now()))
                else:
                    self._emit(m.refused(outcome, self._now()))
                    if m.is_in(State.PROVISIONING):
                        await self._sleep(m.retry_after)
        return m

    def _dialer(self) -> Dialer:
        """Connections to the server: pinned to what discovery found, as the options say."""
        m = self.machine
        return Dialer(
            pin=m.pin,
            allow_unpinned=m.pin_policy.insecure_no_pin,
            context=self.http.context,
            local_address=self.http.local_address,
            time_limit=self.http.timeout,
            sessions=self.http.sessions,
        )

    async def _wait_until(self, when: float, until: float) -> None:
        delay = min(when, until) - self._now()
        if delay > 0:
            await self._sleep(delay)

    async def sign_in(self, options: SignInOptions, *, until: float) -> DeviceMachine:
        """From SIGN_IN_SCREEN: RFC 8628 device flow, then (with `stay`) refresh until `until`,
        going back to the sign-in screen and a new code on denial, expiry or remote sign-out."""
        m = self.machine
        creds = m.credentials
        assert creds is not None and m.is_in(State.SIGN_IN_SCREEN)
        client = OAuthClient(
            creds.authorization_server,
            creds.client_id,
            creds.client_secret,
            http=self._client(),
        )
        backoff = 0.0
        schedule: PollSchedule | None = None
        refresh_token: str | None = None
        while self._now() < until:
            if m.is_in(State.SIGN_IN_SCREEN):
                if m.sign_ins >= options.max_sign_ins:
                    break
                try:
                    answer = await client.start(options.scope)
                except HttpError as exc:
                    answer = OAuthFailure("unreachable", str(exc))  # status None: retried
                except SignInError as exc:  # the server's metadata is unusable: not retried
                    answer = OAuthFailure("bad_metadata", str(exc), 0)
                if isinstance(answer, DeviceAuthorization):
                    backoff = 0.0
                    schedule = PollSchedule.start(answer, self._now())
                    self._emit(m.sign_in_started(answer, self._now()))
                    continue
                failure = Failure(answer.error, answer.description or answer.error, answer.status)
                self._emit(m.sign_in_unavailable(failure, self._now()))
                if answer.status is not None and answer.status < 500:
                    break  # refused (e.g. invalid_client: reset): asking again will not help
                backoff = min(60.0, backoff * 2 if backoff else 1.0)
                await self._wait_until(self._now() + backoff, until)
            elif m.is_in(State.SIGNING_IN) or m.is_in(State.POLLING):
                assert schedule is not None and m.authorization is not None
                await self._wait_until(schedule.next_at, until)
                now = self._now()
                if now >= until:
                    break
                if schedule.expired(now):
                    self._emit(m.back_to_sign_in("expired", "The sign-in code expired.", now))
                    continue
                self.last_poll_at = now
                try:
                    polled = await client.poll(m.authorization.device_code)
                    step = schedule.on_answer(polled, now)
                except (HttpError, SignInError):
                    polled, step = None, schedule.on_network_error(now)
                self.token_time = self._now() - now
                if step is PollStep.SIGNED_IN:
                    assert isinstance(polled, Tokens)
                    refresh_token = polled.refresh_token
                    self._emit(m.signed_in(polled.subject or "(unknown user)", self._now()))
                    if not options.stay:
                        break
                elif step is PollStep.PENDING and m.is_in(State.SIGNING_IN):
                    self._emit(m.polling(schedule.interval, self._now()))
                elif step is PollStep.SLOW_DOWN:
                    self._emit(m.polling(schedule.interval, self._now(), slow_down=True))
                elif step in (PollStep.DENIED, PollStep.EXPIRED):
                    notice = (
                        "Sign-in was declined."
                        if step is PollStep.DENIED
                        else "The sign-in code expired."
                    )
                    assert isinstance(polled, OAuthFailure)
                    self._emit(m.back_to_sign_in(polled.error, notice, self._now()))
                    await self._wait_until(self._now() + options.notice_pause, until)
                elif step is PollStep.FAILED:
                    assert isinstance(polled, OAuthFailure)
                    self._emit(m.fail(self._oauth_failure(polled), self._now()))
                    break
            elif m.is_in(State.SIGNED_IN):
                await self._wait_until(self._now() + options.refresh_every, until)
                if self._now() >= until:
                    break
                if refresh_token is None:
                    continue  # no refresh token: nothing to check a sign-out with
                try:
                    refreshed: Tokens | OAuthFailure = await client.refresh(refresh_token)
                except (HttpError, SignInError) as exc:
                    refreshed = OAuthFailure("unreachable", str(exc))
                what = refresh_step(refreshed)
                if what is RefreshStep.KEEP:
                    assert isinstance(refreshed, Tokens)
                    # Rotated on every use: the old one is spent (RFC 9700 §4.14.2).
                    refresh_token = refreshed.refresh_token or refresh_token
                elif what is RefreshStep.SIGNED_OUT:
                    refresh_token = None
                    self._emit(m.back_to_sign_in("invalid_grant", "Signed out.", self._now()))
                    await self._wait_until(self._now() + options.notice_pause, until)
                elif what is RefreshStep.FAILED:
                    assert isinstance(refreshed, OAuthFailure)
                    self._emit(m.fail(self._oauth_failure(refreshed), self._now()))
                    break
            else:
                break
        return m

    @staticmethod
    def _oauth_failure(answer: OAuthFailure) -> Failure:
        message = answer.description or answer.error
        if answer.error == "invalid_client":
            message = (
                "the server no longer accepts this device (reset or deleted): provision it "
                f"again with a new verification code ({message})"
            )
        return Failure(answer.error, message, answer.status)


def fixed_code(code: str | None) -> CodeSource:
    """A code source that gives `code` once (from --code or a CSV), then nothing."""
    given = [code]

    async def source(machine: DeviceMachine) -> str | None:
        return given.pop() if given else None

    return source
