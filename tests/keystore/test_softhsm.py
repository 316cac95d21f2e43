"""Creating SoftHSM2 tokens with the helper module and its command line.

These tests run softhsm2-util on their own directories; they never load
the module in this process, which is tied to the session's directory.
"""

from __future__ import annotations

import os

import pytest

from agent.keystore import softhsm as helper

pytestmark = pytest.mark.hsm


def test_init_token_writes_files(softhsm, tmp_path):
    """init_token writes the configuration and a private PIN file."""
    info = helper.init_token(tmp_path / "token", "first")
    conf = info.conf_path.read_text()
    assert info.label == "first"
    assert f"directories.tokendir = {tmp_path / 'token' / 'tokens'}" in conf
    assert "objectstore.backend = file" in conf
    assert info.pin_file.stat().st_mode & 0o777 == 0o600
    assert len(info.pin_file.read_text().strip()) >= 24


def test_init_token_idempotent(softhsm, tmp_path):
    """A second call for the same label keeps the token and its PIN."""
    first = helper.init_token(tmp_path, "same")
    pin = first.pin_file.read_text()
    second = helper.init_token(tmp_path, "same")
    assert second == first
    assert second.pin_file.read_text() == pin
    assert helper._token_labels(first.conf_path) == {"same"}


def test_tokens_share_pin_file(softhsm, tmp_path):
    """Tokens in one directory share its PIN file."""
    first = helper.init_token(tmp_path, "one")
    pin = first.pin_file.read_text()
    second = helper.init_token(tmp_path, "two")
    assert second.pin_file == first.pin_file
    assert second.pin_file.read_text() == pin
    assert helper._token_labels(first.conf_path) == {"one", "two"}


def test_token_without_pin_file_fails(softhsm, tmp_path):
    """An existing token whose PIN file is gone raises TokenSetupError."""
    info = helper.init_token(tmp_path, "orphan")
    os.unlink(info.pin_file)
    with pytest.raises(helper.TokenSetupError):
        helper.init_token(tmp_path, "orphan")


def test_main_creates_then_reuses(softhsm, tmp_path, capsys):
    """The command line creates a token, then succeeds again unchanged."""
    assert helper.main([str(tmp_path), "cli"]) == 0
    pin = (tmp_path / "pin").read_text()
    assert helper.main([str(tmp_path), "cli"]) == 0
    output = capsys.readouterr().out
    assert str(tmp_path / "softhsm2.conf") in output
    assert pin.strip() not in output
    assert (tmp_path / "pin").read_text() == pin


def test_find_module_returns_file(softhsm):
    """find_softhsm_module returns an existing file."""
    assert os.path.isfile(helper.find_softhsm_module())
