"""The checks ``kms-agent --dev DIR`` makes on DIR before it uses it.

The directory contains the socket, the token and the store, so the agent
rejects one that another user owns or can write to. The tests call
``main`` in process and stop before any token is made.
"""

from __future__ import annotations

import os
import stat

import pytest

from agent.main import main, prepare_dev_directory
from agent.rpc.server import StartupError


def test_missing_directory_created_private(tmp_path):
    """A missing DIR is created with mode 0700."""
    directory = tmp_path / "parent" / "dev"
    prepare_dev_directory(directory)
    assert directory.is_dir()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_private_directory_accepted(tmp_path):
    """An existing DIR of this user with mode 0700 is accepted."""
    directory = tmp_path / "dev"
    directory.mkdir(mode=0o700)
    prepare_dev_directory(directory)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o720, 0o702])
def test_writable_directory_rejected(tmp_path, mode):
    """A DIR writable by group or others is rejected with its mode."""
    directory = tmp_path / "dev"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StartupError) as caught:
        prepare_dev_directory(directory)
    assert "writable by group or others" in str(caught.value)
    assert f"{mode:04o}" in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_foreign_directory_rejected(tmp_path):
    """A DIR owned by another user is rejected naming its owner."""
    directory = tmp_path / "dev"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, -1)
    with pytest.raises(StartupError) as caught:
        prepare_dev_directory(directory)
    assert "owned by uid 65534" in str(caught.value)


def test_file_in_place_rejected(tmp_path):
    """A regular file at DIR is rejected, not used as a directory."""
    directory = tmp_path / "dev"
    directory.write_bytes(b"")
    with pytest.raises(StartupError, match="cannot create the dev directory"):
        prepare_dev_directory(directory)


async def _never_serve(config):
    raise AssertionError("the agent started on a rejected directory")


def test_main_exits_2_on_writable(tmp_path, capsys, monkeypatch):
    """kms-agent --dev on a world-writable DIR exits 2 and makes no token."""
    monkeypatch.setattr("agent.daemon.run_agent", _never_serve)
    directory = tmp_path / "dev"
    directory.mkdir()
    directory.chmod(0o777)
    status = main(["--dev", str(directory)])
    assert status == 2
    assert "writable by group or others" in capsys.readouterr().err
    assert not (directory / "token").exists()
