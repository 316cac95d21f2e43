"""Reading the user PIN and the settings checks done before any token load."""

from __future__ import annotations

import pytest

from agent.keystore import KeystoreSettings, KeystoreUnavailable, open_keystore
from agent.keystore import read_pin

SECRET_PIN = "s3cret-PIN-value"


def pkcs11_settings(**overrides) -> KeystoreSettings:
    fields = dict(name="hsm", type="pkcs11", module="/nonexistent/libpkcs11.so",
                  token_label="token")
    fields.update(overrides)
    return KeystoreSettings(**fields)


def write_pin(path, mode: int):
    path.write_text(SECRET_PIN + "\n")
    path.chmod(mode)
    return path


def test_pin_file_read_stripped(tmp_path):
    """A private PIN file is read without its final newline."""
    pin_file = write_pin(tmp_path / "pin", 0o600)
    assert read_pin(pkcs11_settings(pin_file=pin_file)) == SECRET_PIN


async def test_pin_file_0644_rejected(tmp_path):
    """A PIN file readable by others is rejected before the module loads."""
    pin_file = write_pin(tmp_path / "pin", 0o644)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(pkcs11_settings(pin_file=pin_file))
    message = str(caught.value)
    assert str(pin_file) in message
    assert "0644" in message
    assert SECRET_PIN not in message


def test_pin_file_group_readable_rejected(tmp_path):
    """A PIN file readable by its group is rejected too."""
    pin_file = write_pin(tmp_path / "pin", 0o640)
    with pytest.raises(KeystoreUnavailable):
        read_pin(pkcs11_settings(pin_file=pin_file))


def test_pin_file_missing_named(tmp_path):
    """A missing PIN file gives an error that names it."""
    pin_file = tmp_path / "absent"
    with pytest.raises(KeystoreUnavailable) as caught:
        read_pin(pkcs11_settings(pin_file=pin_file))
    assert str(pin_file) in str(caught.value)


def test_pin_env_read(monkeypatch):
    """The PIN can come from the environment variable pin_env names."""
    monkeypatch.setenv("KMS_TEST_PIN", SECRET_PIN)
    assert read_pin(pkcs11_settings(pin_env="KMS_TEST_PIN")) == SECRET_PIN


def test_pin_env_unset_named(monkeypatch):
    """An unset PIN variable gives an error naming the variable."""
    monkeypatch.delenv("KMS_TEST_PIN", raising=False)
    with pytest.raises(KeystoreUnavailable) as caught:
        read_pin(pkcs11_settings(pin_env="KMS_TEST_PIN"))
    assert "KMS_TEST_PIN" in str(caught.value)


def test_pin_source_required():
    """Settings without pin_file or pin_env are rejected."""
    with pytest.raises(KeystoreUnavailable):
        read_pin(pkcs11_settings())


async def test_missing_module_unavailable(tmp_path):
    """A module path that does not load gives KeystoreUnavailable."""
    pin_file = write_pin(tmp_path / "pin", 0o600)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(pkcs11_settings(pin_file=pin_file))
    assert "/nonexistent/libpkcs11.so" in str(caught.value)
    assert SECRET_PIN not in str(caught.value)


async def test_unknown_type_unavailable():
    """An unknown keystore type is rejected."""
    with pytest.raises(KeystoreUnavailable):
        await open_keystore(KeystoreSettings(name="x", type="cloud"))
