"""Each installed peer starts on loopback and completes a short load.

A peer's virtualenv is made by ``bench/run.py`` on its first run with
peers, from PyPI; these tests install nothing and skip a peer whose
virtualenv is missing. They assert no timing.
"""

from __future__ import annotations

import pytest

from bench.peers import client as peer_client
from bench.peers import driver, install, servers


def _started_peer(name: str, tmp_path):
    venv = install.installed(name)
    if venv is None:
        pytest.skip(f"{name} is not installed in bench/.peers; "
                    "python bench/run.py installs it")
    return servers.STARTERS[name](venv, tmp_path / name)


@pytest.mark.parametrize("name", sorted(servers.STARTERS))
def test_peer_completes_encrypt_load(name: str, tmp_path) -> None:
    """Two clients of the peer complete Encrypt requests in a short window."""
    peer = _started_peer(name, tmp_path)
    try:
        client = driver.PeerDriver(peer, tmp_path / "client.log")
        try:
            sample = driver.measure(client, "encrypt", 2, 0.05, 0.3)
        finally:
            client.close()
    finally:
        peer.server.stop()
    assert len(sample.latencies_ns) > 0
    assert sample.cpu_s["server"] >= 0


@pytest.mark.parametrize("name", sorted(servers.STARTERS))
def test_peer_lists_its_operations(name: str, tmp_path) -> None:
    """The client program reports the operations its class declares."""
    peer = _started_peer(name, tmp_path)
    try:
        client = driver.PeerDriver(peer, tmp_path / "client.log")
        client.close()
    finally:
        peer.server.stop()
    assert client.operations == list(peer_client.SYSTEMS[name].operations)


def test_peer_server_stops_whole_group(tmp_path) -> None:
    """Stopping the PyKMIP server also ends its helper processes."""
    peer = _started_peer("pykmip", tmp_path)
    pids = peer.server.pids()
    peer.server.stop()
    assert len(pids) > 1
    assert [pid for pid in pids if _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
