"""Opening keystores when one fails: stand-ins, start refusal, reopening.

Software keystores with domain key files in tmp_path stand in for
tokens: a key file of the wrong length cannot be opened, like a token
with a wrong PIN.
"""

from __future__ import annotations

import copy

import pytest

from agent.config import parse_config
from agent.daemon import open_keystores, reopen_keystores
from agent.keystore.unavailable import UnavailableKeystore
from agent.rpc.server import StartupError
from client import errors

RAW = {
    "agent": {"socket": "agent.sock", "data_dir": "data", "default_keystore": "a"},
    "keystores": {"a": {"type": "software", "domain_key_file": "a.key"},
                  "b": {"type": "software", "domain_key_file": "b.key"}},
}


def broken_key_file(path) -> None:
    path.write_bytes(b"short")
    path.chmod(0o600)


async def test_failed_keystore_stands_in(tmp_path):
    """A keystore that fails to open is replaced, the others open."""
    broken_key_file(tmp_path / "b.key")
    keystores = await open_keystores(parse_config(copy.deepcopy(RAW), tmp_path))
    assert not isinstance(keystores["a"], UnavailableKeystore)
    assert isinstance(keystores["b"], UnavailableKeystore)
    assert "32 bytes" in keystores["b"].reason
    for keystore in keystores.values():
        await keystore.aclose()


async def test_stand_in_answers_503(tmp_path):
    """Every cryptographic call on the stand-in is ServiceUnavailable."""
    stand_in = UnavailableKeystore("b", "token missing")
    with pytest.raises(errors.ServiceUnavailableError) as caught:
        await stand_in.random_bytes(8)
    assert "token missing" not in caught.value.message
    assert stand_in.status()["ready"] is False


async def test_no_keystore_opens_refused(tmp_path):
    """When every keystore fails, the start is refused naming each."""
    broken_key_file(tmp_path / "a.key")
    broken_key_file(tmp_path / "b.key")
    with pytest.raises(StartupError) as caught:
        await open_keystores(parse_config(copy.deepcopy(RAW), tmp_path))
    assert "keystore a" in str(caught.value)
    assert "keystore b" in str(caught.value)


async def test_reopen_replaces_stand_in(tmp_path):
    """A keystore fixed after start opens again in place."""
    broken_key_file(tmp_path / "b.key")
    config = parse_config(copy.deepcopy(RAW), tmp_path)
    keystores = await open_keystores(config)
    (tmp_path / "b.key").unlink()
    await reopen_keystores(config, keystores)
    assert not isinstance(keystores["b"], UnavailableKeystore)
    for keystore in keystores.values():
        await keystore.aclose()
