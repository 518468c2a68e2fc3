"""CA keys are sealed as encrypted PKCS#8 and open only with the right secret and certificate."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from identity.pki import KeyStoreError
from identity.pki.keystore import KeyStore
from tests.identity.pki.conftest import make_authority


def store() -> KeyStore:
    return KeyStore(SecretStr(secrets.token_urlsafe(32)))


def test_a_sealed_key_is_encrypted_pkcs8_and_opens_with_the_same_secret() -> None:
    _, ca = make_authority()
    keystore = store()
    sealed = keystore.seal(ca.key)
    assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert "BEGIN PRIVATE KEY" not in sealed
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(sealed.encode(), password=None)
    opened = keystore.open(sealed, certificate=ca.certificate)
    assert opened.private_numbers() == ca.key.private_numbers()


def test_another_secret_cannot_open_a_sealed_key() -> None:
    _, ca = make_authority()
    sealed = store().seal(ca.key)
    with pytest.raises(KeyStoreError, match="wrong key encryption key"):
        store().open(sealed, certificate=ca.certificate)


def test_a_key_is_only_opened_for_its_own_certificate() -> None:
    root, ca = make_authority()
    keystore = store()
    with pytest.raises(KeyStoreError, match="does not match its certificate"):
        keystore.open(keystore.seal(root.key), certificate=ca.certificate)


def test_the_keystore_never_shows_its_passphrase() -> None:
    secret = secrets.token_urlsafe(32)
    keystore = KeyStore(SecretStr(secret))
    assert secret not in repr(keystore)
    assert repr(keystore) == "KeyStore(<sealed>)"
    with pytest.raises(ValueError, match="empty"):
        KeyStore(SecretStr(""))
