"""The node's ed25519 signing key: generate, store, load, encode.

The key file holds the 32-byte ed25519 seed in base64 ("ed25519 <base64 seed>"). Signing uses PyNaCl
(libsodium): on the devices it costs about 5 MB less resident memory than `cryptography`, and
ed25519 signatures are deterministic, so the same key signs exactly the same bytes whichever library
is used; key files written by earlier versions load unchanged.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey


class KeyError_(Exception):
    """A key file that cannot be read or used."""


@dataclass(frozen=True)
class SigningKey:
    private: _NaclSigningKey

    @property
    def public_b64(self) -> str:
        return base64.b64encode(bytes(self.private.verify_key)).decode()

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data).signature


def generate() -> SigningKey:
    return SigningKey(_NaclSigningKey.generate())


def write_key(key: SigningKey, path: Path) -> None:
    """Write the 32-byte seed as base64, readable by the owner only."""
    seed = bytes(key.private)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("ed25519 " + base64.b64encode(seed).decode() + "\n")


def ensure_key(path: Path) -> str:
    """Create the key file if it does not exist (mode 0600); return the base64 public key."""
    if not Path(path).exists():
        write_key(generate(), Path(path))
    return load_key(Path(path)).public_b64


def load_key(path: Path) -> SigningKey:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the signing key ({exc.strerror})") from None
    algo, _, b64 = text.partition(" ")
    try:
        seed = base64.b64decode(b64, validate=True)
    except ValueError:
        seed = b""
    if algo != "ed25519" or len(seed) != 32:
        raise KeyError_(f"{path}: not a signing key written by 'p2pvalue-node keygen'")
    return SigningKey(_NaclSigningKey(seed))


def public_key_from_b64(b64: str) -> VerifyKey:
    return VerifyKey(base64.b64decode(b64))
