"""Server-to-server request signatures.

A request carries its origin domain, destination domain, a timestamp (ms since epoch) and a random
nonce in headers; the signature covers method, path (with query), origin, destination, timestamp,
nonce and the SHA-256 of the body. The receiver rejects unknown origins, a wrong destination, bad
signatures, timestamps outside the allowed skew and any (origin, nonce) pair it has seen within the
skew window (replays; the node keeps them in SQLite, see replay.py, so a restart forgets none).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .keys import SigningKey, public_key_from_b64

H_ORIGIN = "X-P2P-Origin"
H_DESTINATION = "X-P2P-Destination"
H_TIMESTAMP = "X-P2P-Timestamp"
H_NONCE = "X-P2P-Nonce"
H_SIGNATURE = "X-P2P-Signature"


def canonical(method: str, path: str, origin: str, destination: str, ts_ms: int, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(["P2PV1", method.upper(), path, origin, destination, str(ts_ms), nonce, digest]).encode()


def sign_headers(
    key: SigningKey,
    method: str,
    path: str,
    origin: str,
    destination: str,
    body: bytes,
    now_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = nonce or secrets.token_hex(16)
    sig = key.sign(canonical(method, path, origin, destination, ts, nonce, body))
    return {
        H_ORIGIN: origin,
        H_DESTINATION: destination,
        H_TIMESTAMP: str(ts),
        H_NONCE: nonce,
        H_SIGNATURE: base64.b64encode(sig).decode(),
    }


class SignatureRejected(Exception):
    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class NonceStore(Protocol):
    def claim(self, ident: int, expires_s: float, now: float) -> None:
        """Remember the 64-bit digest of a request's (origin, nonce) until `expires_s`, or raise
        SignatureRejected if it is remembered already (a replay)."""


class MemoryNonces:
    """Nonce digests in memory (about 100 bytes each), each forgotten only when its timestamp has left the
    skew window; past `max_nonces` a new request is refused (503) rather than an unexpired nonce forgotten."""

    def __init__(self, max_nonces: int = 200_000) -> None:
        self.max_nonces = max_nonces
        self._seen: OrderedDict[int, float] = OrderedDict()

    def claim(self, ident: int, expires_s: float, now: float) -> None:
        # entries arrive in roughly increasing expiry order; a late one is dropped a little late at worst
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if ident in self._seen:
            raise SignatureRejected("replayed request")
        if len(self._seen) >= self.max_nonces:
            # never forget an unexpired nonce (that would let its request be replayed): refuse instead,
            # the sender retries later
            raise SignatureRejected("too many requests within the replay window; try again later", 503)
        self._seen[ident] = expires_s


class Verifier:
    """Checks signed requests against the trusted keys and remembers nonces to refuse replays."""

    def __init__(
        self,
        own_domain: str,
        trusted: dict[str, str],
        max_skew_s: float = 300.0,
        max_nonces: int = 200_000,
        nonces: NonceStore | None = None,
    ) -> None:
        self.own_domain = own_domain
        self.keys: dict[str, VerifyKey] = {d: public_key_from_b64(k) for d, k in trusted.items()}
        self.max_skew_s = max_skew_s
        # the node passes a persistent store (replay.PersistentNonces); the default lives in memory
        self.nonces: NonceStore = nonces or MemoryNonces(max_nonces)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """Return the verified origin domain or raise SignatureRejected."""
        get = headers.get
        origin = get(H_ORIGIN)
        dest = get(H_DESTINATION)
        ts_s = get(H_TIMESTAMP)
        nonce = get(H_NONCE)
        sig_b64 = get(H_SIGNATURE)
        if not (origin and dest and ts_s and nonce and sig_b64):
            raise SignatureRejected("missing signature headers")
        key = self.keys.get(origin)
        if key is None:
            raise SignatureRejected(f"unknown origin {origin[:100]!r}", 403)
        if dest != self.own_domain:
            raise SignatureRejected("wrong destination", 403)
        if len(nonce) > 64:
            raise SignatureRejected("nonce too long")
        try:
            ts_ms = int(ts_s)
            sig = base64.b64decode(sig_b64, validate=True)
        except (ValueError, binascii.Error):
            raise SignatureRejected("malformed timestamp or signature") from None
        try:
            key.verify(canonical(method, path, origin, dest, ts_ms, nonce, body), sig)
        except (BadSignatureError, ValueError):  # ValueError: not 64 bytes
            raise SignatureRejected("bad signature") from None
        now = time.time() if now is None else now
        if abs(now - ts_ms / 1000.0) > self.max_skew_s:
            raise SignatureRejected("stale timestamp")
        ident = int.from_bytes(hashlib.blake2b(f"{origin}\0{nonce}".encode(), digest_size=8).digest(), "big")
        # a nonce only needs remembering while its timestamp is acceptable
        self.nonces.claim(ident, ts_ms / 1000.0 + self.max_skew_s, now)
        return origin

    def verify_response(
        self,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        expected_origin: str,
        request_nonce: str,
        now: float | None = None,
    ) -> None:
        """Check a peer's signed response to our request (bound to our request's nonce)."""
        get = headers.get
        if get(H_ORIGIN) != expected_origin or get(H_DESTINATION) != self.own_domain:
            raise SignatureRejected("response from the wrong origin or to the wrong destination")
        if get(H_NONCE) != request_nonce:
            raise SignatureRejected("response does not answer this request")
        key = self.keys.get(expected_origin)
        ts_s, sig_b64 = get(H_TIMESTAMP), get(H_SIGNATURE)
        if key is None or not ts_s or not sig_b64:
            raise SignatureRejected("unsigned response")
        try:
            ts_ms = int(ts_s)
            sig = base64.b64decode(sig_b64, validate=True)
            key.verify(canonical("RESPONSE", path, expected_origin, self.own_domain, ts_ms, request_nonce, body), sig)
        except (ValueError, binascii.Error, BadSignatureError):
            raise SignatureRejected("bad response signature") from None
        now = time.time() if now is None else now
        if abs(now - ts_ms / 1000.0) > self.max_skew_s:
            raise SignatureRejected("stale response")
