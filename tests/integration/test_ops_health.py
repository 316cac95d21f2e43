"""Health and metrics of the real daemon: client, kmsctl and a scrape."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agent.keystore.softhsm import find_softhsm_module
from client import KmsClient
from tests.integration.conftest import REPO, launch, wait_until_serving
from tests.integration.ops_support import prepare, spawn_agent, wait_for_log

pytestmark = pytest.mark.hsm

KMSCTL = str(Path(sys.executable).with_name("kmsctl"))

# A second keystore naming a token that does not exist: it fails to open.
BROKEN_KEYSTORE = f"""
[keystores.broken]
type = "pkcs11"
module = "{find_softhsm_module()}"
token_label = "no-such-token"
pin_file = "token/pin"
softhsm2_conf = "token/softhsm2.conf"
"""


def kmsctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KMSCTL, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_health_through_client(shared_agent):
    """The client gets Ready, the store and each keystore's state."""
    with KmsClient(shared_agent.socket) as client:
        health = client.call("DescribeAgentHealth")
    assert health["Ready"] is True
    assert health["Store"]["Ready"] is True
    assert health["Keystores"]["Keystore"] == [
        {"Name": "default", "Type": "pkcs11", "Ready": True}]


def test_kmsctl_health_ready_zero(shared_agent):
    """kmsctl health exits 0 for a ready agent."""
    result = kmsctl("--socket", str(shared_agent.socket), "health")
    assert result.returncode == 0
    assert '"Status": "ready"' in result.stdout


def test_kmsctl_health_unreachable_two(tmp_path):
    """kmsctl health exits 2 when no agent listens on the socket."""
    result = kmsctl("--socket", str(tmp_path / "none.sock"), "health")
    assert result.returncode == 2
    assert "SDK.ServerUnreachable" in result.stderr


def test_kmsctl_health_degraded_three(tmp_path):
    """A keystore that failed to open makes health exit 3; --live exits 0."""
    config = prepare(tmp_path / "agent", extra=BROKEN_KEYSTORE)
    agent = launch(config, config.parent)
    try:
        degraded = kmsctl("--socket", str(agent.socket), "health")
        live = kmsctl("--socket", str(agent.socket), "health", "--live")
        assert degraded.returncode == 3
        assert '"Status": "degraded"' in degraded.stdout
        assert live.returncode == 0
        assert "no-such-token" not in degraded.stdout
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def metrics_agent(tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics") / "agent"
    config = prepare(directory, extra='[metrics]\nlisten = "127.0.0.1:0"\n'
                                      'textfile = "kms_agent.prom"\n')
    agent = spawn_agent(config)
    wait_until_serving(agent)
    port = int(wait_for_log(agent, r"http://127\.0\.0\.1:(\d+)/metrics").group(1))
    yield agent, port
    agent.stop()


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return reply.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name + ("{" + selector + "}" if selector else "")) + r" (\S+)"
    match = re.search("^" + pattern + "$", text, re.MULTILINE)
    assert match, f"{name} {labels} not in the scrape"
    return float(match.group(1))


def test_scrape_counts_requests(metrics_agent):
    """Requests are counted by operation and code, and timed."""
    agent, port = metrics_agent
    with KmsClient(agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        client.encrypt(key_id, b"x")
        client.encrypt(key_id, b"y")
    text = scrape(port)
    assert sample(text, "kms_agent_requests_total", operation="Encrypt", code="OK") == 2
    assert sample(text, "kms_agent_request_duration_seconds_count",
                  operation="Encrypt") == 2


def test_scrape_times_hsm_calls(metrics_agent):
    """HSM calls are timed by keystore and call."""
    agent, port = metrics_agent
    with KmsClient(agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        client.encrypt(key_id, b"x")
    text = scrape(port)
    assert sample(text, "kms_agent_keystore_call_duration_seconds_count",
                  keystore="default", call="encrypt") >= 1
    assert sample(text, "kms_agent_keystore_call_duration_seconds_count",
                  keystore="default", call="generate") >= 1


def test_scrape_reports_state(metrics_agent):
    """Keystore state, caches and connections are read at scrape time."""
    agent, port = metrics_agent
    with KmsClient(agent.socket) as client:
        client.call("ListKeys")
        text = scrape(port)
    assert sample(text, "kms_agent_keystore_up", keystore="default") == 1
    assert sample(text, "kms_agent_open_connections") >= 1
    assert sample(text, "kms_agent_cache_hits_total", cache="secret_value") >= 0


def test_textfile_written(metrics_agent):
    """The textfile for node_exporter contains the same metric families."""
    agent, _ = metrics_agent
    path = agent.config.parent / "kms_agent.prom"
    wait_for_log(agent, "ready")
    assert "# TYPE kms_agent_requests_total counter" in path.read_text()
