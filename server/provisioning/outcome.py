"""The outcomes of a technician's code entry: one vocabulary for the decision, the wire and the
failure limiter.

Each value is the `error` code POST /provision answers with (and the `result` label of
`imprint_code_attempts_total`); it knows its HTTP status and whether it feeds the per-source
failure limiter, as h11's errors carry an `error_status_hint`. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    SUCCESS = "success"
    NOT_REGISTERED = "not_registered"
    ALREADY_PROVISIONED = "already_provisioned"
    NO_CODE = "no_code"
    LOCKED = "locked"
    EXPIRED_CODE = "expired_code"
    WRONG_CODE = "wrong_code"
    ADDRESS_MISMATCH = "address_mismatch"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]

    @property
    def counts_as_failure(self) -> bool:
        """Whether the source's failure limiter counts it: a guess at a code, not a mistake
        about the device (a wrong code, or knocking on a locked one)."""
        return self in _GUESSES

    @property
    def is_refusal(self) -> bool:
        return self is not Outcome.SUCCESS


_HTTP_STATUS: dict[Outcome, int] = {
    Outcome.SUCCESS: 200,
    Outcome.NOT_REGISTERED: 404,
    Outcome.ALREADY_PROVISIONED: 409,
    Outcome.NO_CODE: 409,
    Outcome.WRONG_CODE: 401,
    Outcome.EXPIRED_CODE: 410,
    Outcome.LOCKED: 423,
    Outcome.ADDRESS_MISMATCH: 403,
}

_GUESSES = frozenset({Outcome.WRONG_CODE, Outcome.LOCKED})

__all__ = ["Outcome"]
