"""The statement-signing key: made once with mode 0600, public half exported, signatures checked."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.ledger import signing
from gateway.settings import LedgerSettings


def test_the_key_is_made_once_private_and_beside_the_ledger(tmp_path: Path) -> None:
    path = signing.key_path(LedgerSettings(path=str(tmp_path / "l.db")))
    assert path == tmp_path / "nometer-signing.key"
    assert signing.ensure_key(path) is True
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    assert signing.ensure_key(path) is False and path.read_bytes() == before  # never replaced
    pub = signing.public_path(path).read_bytes()
    assert pub.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert signing.key_path(LedgerSettings(signing_key=str(tmp_path / "k"))) == tmp_path / "k"


def test_sign_and_verify_with_either_public_key_form(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    signing.ensure_key(path)
    key = signing.load_private(path)
    sig = signing.sign(key, b"statement")
    pem = signing.load_public(signing.public_path(path).read_bytes())
    raw = signing.load_public(base64.b64encode(signing.raw_public(key.public_key())) + b"\n")
    for public in (pem, raw):
        assert signing.verify(public, b"statement", sig)
        assert not signing.verify(public, b"statement!", sig)
        assert signing.key_id(public) == signing.key_id(key.public_key())
    assert not signing.verify(pem, b"statement", "not base64!")


def test_bad_keys_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(signing.SigningKeyError, match="not an ed25519 public key"):
        signing.load_public(b"hello")
    with pytest.raises(signing.SigningKeyError, match="cannot read the signing key"):
        signing.load_private(tmp_path / "missing.key")
