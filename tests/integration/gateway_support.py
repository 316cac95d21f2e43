"""Helpers for the gateway tests: an agent with the gateway on, and SDK clients.

``start_gateway_agent`` starts the real daemon with principals, policies
and ``[gateway]`` on a free loopback port, then creates an AccessKey pair
and a client key file with ``kmsctl gateway``. ``openapi_client`` builds
the official ``alibabacloud-kms20160120`` client for it, and
``run_dkms`` runs calls of ``alibabacloud-dkms-gcs`` from its own
virtualenv (``tests/integration/dkms_driver.py``). The SDKs follow
HTTP_PROXY even for 127.0.0.1, so ``without_proxies`` clears those
variables for the test process and ``dkms_env`` for the subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import REPO, AgentProcess, start_agent

DKMS_PYTHON = REPO / "var" / "dkms-sdk" / "bin" / "python"
DKMS_DRIVER = Path(__file__).with_name("dkms_driver.py")
KMSCTL = Path(sys.executable).with_name("kmsctl")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                   "http_proxy", "https_proxy", "all_proxy", "no_proxy")
PASSWORD = "gateway-test-password"

ACCESS = """
[principals.app]
client_key = true
keystores = ["*"]

[principals.owner]
agent_user = true
keystores = ["*"]

[principals.reader]
client_key = true
keystores = ["*"]

[policies.everything]
principals = ["app", "owner"]
permissions = ["administrator", "key-user", "secret-user"]
resources = ["key/*", "secret/*", "agent"]

[policies.read-secrets]
principals = ["reader"]
permissions = ["secret-user"]
resources = ["secret/*"]
"""


@dataclasses.dataclass
class GatewayAgent:
    """A running agent with its gateway endpoint and credentials."""

    process: AgentProcess
    endpoint: str
    credentials: Path
    access_key_id: str
    access_key_secret: str
    client_key_file: Path
    client_key_id: str

    @property
    def socket(self) -> Path:
        return self.process.socket

    def stop(self) -> int:
        return self.process.stop()


def require_sdks() -> None:
    """Skip, or fail under CI, when the official SDKs are not installed."""
    try:
        import alibabacloud_kms20160120  # noqa: F401
        import alibabacloud_secretsmanager_client_v2  # noqa: F401
    except ImportError:
        message = ("the Alibaba Cloud SDKs are not installed; scripts/test.sh "
                   "installs the gateway-test extra")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def without_proxies() -> Iterator[None]:
    """Clear the proxy variables of this process for the block."""
    saved = {name: os.environ.pop(name) for name in PROXY_VARIABLES
             if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def dkms_env() -> dict[str, str]:
    """Return this environment without proxy variables."""
    return {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}


def start_gateway_agent(directory: Path, gateway: str = "") -> GatewayAgent:
    """Start an agent with the gateway on, and create its credentials."""
    require_sdks()
    settings = f"""
[gateway]
enabled = true
listen = "127.0.0.1:0"
credentials_file = "gateway-credentials.toml"
{gateway}
"""
    process = start_agent(directory, extra_agent=ACCESS + settings)
    credentials = directory / "gateway-credentials.toml"
    access_key = kmsctl("gateway", "create-access-key", "--principal", "app",
                        "--credentials-file", str(credentials))
    password_file = directory / "client-key-password"
    password_file.write_text(PASSWORD + "\n")
    client_key_file = directory / "clientKey_app.json"
    client_key = kmsctl("gateway", "create-client-key", "--principal", "app",
                        "--credentials-file", str(credentials),
                        "--output", str(client_key_file),
                        "--password-file", str(password_file))
    return GatewayAgent(process, gateway_endpoint(process), credentials,
                        access_key["AccessKeyId"], access_key["AccessKeySecret"],
                        client_key_file, client_key["ClientKeyId"])


def gateway_endpoint(process: AgentProcess) -> str:
    """Return ``host:port`` of the gateway, from the agent's log."""
    for line in process.log_text().splitlines():
        if '"gateway listening"' in line:
            address = json.loads(line)["socket"].split(",")[0]
            return address.split("://", 1)[1]
    raise AssertionError(f"no gateway address in the log:\n{process.log_text()}")


def kmsctl(*argv: str) -> dict[str, Any]:
    """Run kmsctl and return its JSON output."""
    done = subprocess.run([str(KMSCTL), *argv], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def openapi_client(agent: GatewayAgent, key_id: str | None = None,
                   secret: str | None = None, signature_algorithm: str | None = None,
                   protocol: str = "http", ca: str | None = None) -> Any:
    """Return an ``alibabacloud-kms20160120`` client for the gateway."""
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi.utils_models import Config

    return Client(Config(
        access_key_id=key_id or agent.access_key_id,
        access_key_secret=secret or agent.access_key_secret,
        endpoint=agent.endpoint, protocol=protocol, region_id="cn-hangzhou",
        signature_algorithm=signature_algorithm, ca=ca))


def run_dkms(agent: GatewayAgent, calls: list[dict[str, Any]],
             **job: Any) -> list[dict[str, Any]]:
    """Run dedicated-instance SDK calls; skip (fail under CI) without the SDK."""
    if not DKMS_PYTHON.exists():
        message = f"{DKMS_PYTHON} is missing; scripts/test.sh creates it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    document = {"endpoint": agent.endpoint,
                "client_key_file": str(agent.client_key_file),
                "password": PASSWORD, "calls": calls, **job}
    done = subprocess.run([str(DKMS_PYTHON), str(DKMS_DRIVER)],
                          input=json.dumps(document), capture_output=True, text=True,
                          timeout=120, env=dkms_env(), check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def b64(data: bytes) -> dict[str, str]:
    """Mark bytes for the dedicated-instance driver."""
    return {"b64": base64.b64encode(data).decode("ascii")}


def unb64(value: dict[str, str]) -> bytes:
    """Read bytes marked by the dedicated-instance driver."""
    return base64.b64decode(value["b64"])


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns a true value or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
