"""Keys: the ES256 signing key (JWT access tokens, JWKS) and the keyed digests and sealed
copies of user codes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SIGNING_KEY_NAME = "imprint-oauth-signing.pem"  # in the state directory, mode 0600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class SigningKey:
    """The ES256 key access tokens are signed with; `kid` is its RFC 7638 thumbprint."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the OAuth signing key must be an EC P-256 key (ES256)")
        self._key = key
        self._public = key.public_key()
        nums = self._public.public_numbers()
        self._x = b64url(nums.x.to_bytes(32, "big"))
        self._y = b64url(nums.y.to_bytes(32, "big"))
        # RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
        required = {"crv": "P-256", "kty": "EC", "x": self._x, "y": self._y}
        self.kid = b64url(hashlib.sha256(_json_bytes(required)).digest())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Read the PEM key at `path`, or create it (mode 0600) on first start."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return cls(key)
        loaded = serialization.load_pem_private_key(data, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key; delete it to make a new one")
        return cls(loaded)

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": self._x,
            "y": self._y,
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS (ES256) of `claims` with `typ: at+jwt` (RFC 9068 §2.1)."""
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        signing_input = f"{b64url(_json_bytes(header))}.{b64url(_json_bytes(claims))}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # RFC 7518 §3.4: the JWS signature is R || S, each 32 bytes big-endian, not DER.
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this key signed, or None (no time checks here)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(b64url_decode(parts[0]))
            sig = b64url_decode(parts[2])
            if (
                not isinstance(header, dict)
                or header.get("alg") != "ES256"
                or header.get("kid") != self.kid
                or len(sig) != 64
            ):
                return None
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            self._public.verify(
                der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256())
            )
            claims = json.loads(b64url_decode(parts[1]))
        except (ValueError, RecursionError, InvalidSignature, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None


class CodeKeys:
    """Keys derived from the code key file: user code digest and seal, approval form MACs."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("code key must be at least 32 bytes")
        self._digest_key = self._derive(secret, b"imprint oauth user code digest v1")
        self._aead = AESGCM(self._derive(secret, b"imprint oauth user code seal v1"))
        self._form_key = self._derive(secret, b"imprint oauth approval form v1")

    @staticmethod
    def _derive(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    def user_code_digest(self, code: str) -> bytes:
        return hmac.new(self._digest_key, code.encode(), hashlib.sha256).digest()

    def seal(self, code: str, grant_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, code.encode(), grant_id.encode())

    def unseal(self, sealed: bytes, grant_id: str) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], grant_id.encode()).decode()

    def sign_form(self, grant_id: str, username: str, expires: int, nonce: str) -> str:
        """A short-lived approval token naming the grant and the user, bound to the CSRF nonce."""
        payload = b64url(_json_bytes({"g": grant_id, "u": username, "e": expires}))
        mac = hmac.new(self._form_key, f"{payload}|{nonce}".encode(), hashlib.sha256).digest()
        return f"{payload}.{b64url(mac)}"

    def verify_form(self, token: str, nonce: str, now: float) -> tuple[str, str] | None:
        """(grant_id, username) if `token` is ours, unexpired and bound to `nonce`."""
        payload, _, mac = token.partition(".")
        try:
            # Inside the try: text a peer sent may hold lone surrogates (UnicodeEncodeError).
            want = hmac.new(self._form_key, f"{payload}|{nonce}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(b64url_decode(mac), want):
                return None
            data = json.loads(b64url_decode(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int) or data["e"] < now:
            return None
        g, u = data.get("g"), data.get("u")
        return (g, u) if isinstance(g, str) and isinstance(u, str) else None
