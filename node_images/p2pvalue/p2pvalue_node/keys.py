"""The node's ed25519 signing key: generate, store, load, encode."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyError_(Exception):
    """A key file that cannot be read or used."""


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def generate() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def write_key(key: SigningKey, path: Path) -> None:
    """Write the 32-byte seed as base64, readable by the owner only."""
    seed = key.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("ed25519 " + base64.b64encode(seed).decode() + "\n")


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
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


def public_key_from_b64(b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))
