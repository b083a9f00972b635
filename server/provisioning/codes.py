"""Verification codes: generation, normalisation, and the keyed digest/seal that keeps them out
of the database in plaintext.

Scheme (documented in the README): a 32-byte secret in a key file outside the database (mode 0600).
HKDF-SHA256 derives two keys from it: one for HMAC-SHA256 digests (what redemption checks, in
constant time) and one for AES-256-GCM sealing (so admins can still view and export the codes that
are currently valid, as the Teams "Verification code" column does). The MAC is bound into both.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, no look-alikes
CODE_LENGTH = 8
_ALLOWED = frozenset(ALPHABET)
_SPACE = len(ALPHABET) ** CODE_LENGTH
_IGNORED = str.maketrans("", "", " -\t")


class CodeFormatError(ValueError):
    """Entered text cannot be a verification code; the message says what to fix."""


def generate_code(randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    """Return a fresh 8-character code from ALPHABET (CSPRNG by default), unformatted.

    One uniform draw below 20^8 per code, read as 8 base-20 digits: as uniform as 8 draws below
    20, and one system call instead of eight (100,000 codes in bulk).
    """
    n = randbelow(_SPACE)
    out = []
    for _ in range(CODE_LENGTH):
        n, digit = divmod(n, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(out)


def format_code(code: str) -> str:
    """Show a code as XXXX-XXXX."""
    return f"{code[:4]}-{code[4:]}"


def normalize_code(entered: str) -> str:
    """Canonical form of what a person typed: case, spaces and dashes ignored; or CodeFormatError."""
    code = entered.translate(_IGNORED).upper()
    if len(code) != CODE_LENGTH:
        raise CodeFormatError(
            f"a verification code has {CODE_LENGTH} letters (shown as XXXX-XXXX); got {len(code)}"
        )
    if not _ALLOWED.issuperset(code):
        raise CodeFormatError(
            "a verification code uses only the letters " + ALPHABET + " (no vowels or digits)"
        )
    return code


class CodeVault:
    """Keyed digest and sealing of codes, bound to the device's MAC."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("code key must be at least 32 bytes")
        self._mac_key = self._derive(secret, b"imprint code digest v1")
        self._aead = AESGCM(self._derive(secret, b"imprint code seal v1"))

    @staticmethod
    def _derive(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    def digest(self, mac: str, code: str) -> bytes:
        return hmac.new(self._mac_key, f"{mac}|{code}".encode(), sha256).digest()

    def matches(self, mac: str, code: str, digest: bytes) -> bool:
        return hmac.compare_digest(self.digest(mac, code), digest)

    def seal(self, mac: str, code: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, code.encode(), mac.encode())

    def unseal(self, mac: str, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], mac.encode()).decode()


def load_key(path: Path) -> bytes:
    """Read the code key file; FileNotFoundError when it is missing (nothing is created)."""
    data = path.read_bytes()
    if len(data) < 32:
        raise ValueError(f"code key file {path} is shorter than 32 bytes; restore it from backup")
    return data


def load_or_create_key(path: Path) -> bytes:
    """Read the code key file, creating it (0600, 32 random bytes) on first start."""
    try:
        return load_key(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data
