"""The gateway's statement-signing key: ed25519, created beside the ledger on first start.

Files: ``nometer-signing.key`` (PKCS#8 PEM, mode 0600; never leaves the machine) and
``nometer-signing.key.pub`` (SubjectPublicKeyInfo PEM: give this one to reviewers; ``openssl pkey
-pubin -in nometer-signing.key.pub -text`` reads it). A statement also carries the raw 32-byte
public key in base64, and ``load_public`` accepts either form, so a reviewer can paste it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.settings import LedgerSettings

log = logging.getLogger("nometer")
KEY_NAME = "nometer-signing.key"
ALGORITHM = "ed25519"


class SigningKeyError(ValueError):
    """A key file is missing, unreadable or not an ed25519 key."""


def key_path(ledger: LedgerSettings) -> Path:
    """``ledger.signing_key``, else ``nometer-signing.key`` beside the ledger file."""
    return Path(ledger.signing_key) if ledger.signing_key else Path(ledger.path).resolve().parent / KEY_NAME


def public_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def ensure_key(path: Path) -> bool:
    """Create the key pair at ``path`` unless it exists; True when it was created now."""
    if path.exists():
        if not public_path(path).exists():
            _write_public(path, load_private(path))
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:  # O_EXCL: two replicas starting together on one directory make one key, not two halves
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # whatever the umask
    _write_public(path, key)
    log.info("created the statement signing key %s (public key: %s)", path, public_path(path))
    return True


def _write_public(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path(path).write_bytes(pem)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an ed25519 private key")
    return key


def load_public(text: bytes) -> Ed25519PublicKey:
    """A public key as PEM, or as the base64 of its 32 raw bytes."""
    data = text.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise SigningKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("the PEM public key is not an ed25519 key")
        return key
    try:
        raw = base64.b64decode(data, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"not an ed25519 public key (PEM, or base64 of 32 bytes): {exc}") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint: the first 16 hex of the SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify(key: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
