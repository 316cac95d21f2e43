"""Start each peer key server on 127.0.0.1 with a fresh port.

Every peer runs as a child process in its own session (see
``bench.processes``), with HOME set to its own directory in the run's
temporary directory, so it neither reads nor writes the user's files:

- OpenBao: ``bao server -dev`` with in-memory storage, a random root
  token and no token helper file. It also listens for cluster traffic on
  the next port.
- moto: ``moto_server``, whose boto3 clients get dummy credentials and
  never look for real ones.
- PyKMIP: ``pykmip-server`` with its configuration, log, policy
  directory and SQLite database passed explicitly (otherwise it reads
  /etc/pykmip and writes /var/log/pykmip and /tmp), over mutual TLS with
  throwaway certificates.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import secrets
from pathlib import Path
from typing import Callable

from bench import processes
from bench.peers import tls

LABELS = {"pykmip": "PyKMIP", "moto": "moto", "openbao": "OpenBao"}


@dataclasses.dataclass
class PeerServer:
    """A running peer: its process, its virtualenv and its clients' settings."""

    name: str
    venv: Path
    server: processes.ServerProcess
    settings: dict
    env: dict[str, str]

    @property
    def python(self) -> Path:
        """The peer virtualenv's interpreter, which runs its clients."""
        return self.venv / "bin" / "python"


def peer_environment(home: Path) -> dict[str, str]:
    """Return the environment of a peer and its clients, with HOME at ``home``."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        # boto3 gets its credentials and region in code; this keeps it
        # from asking the instance metadata service or reading files.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


def start_openbao(venv: Path, directory: Path) -> PeerServer:
    """Start ``bao server -dev`` and wait until it reports itself healthy.

    Raises:
        ServerStartError: the server exited or was not ready in time.
    """
    env = peer_environment(directory)
    port = processes.free_port(span=2)
    token = secrets.token_hex(16)
    command = [str(venv / "bin" / "bao"), "server", "-dev",
               f"-dev-listen-address=127.0.0.1:{port}",
               f"-dev-root-token-id={token}", "-dev-no-store-token"]
    server = processes.start_process(
        "OpenBao", command, directory / "server.log", env,
        lambda: _http_ok(port, "/v1/sys/health"), port=port, cwd=directory)
    return PeerServer("openbao", venv, server, {"port": port, "token": token}, env)


def start_moto(venv: Path, directory: Path) -> PeerServer:
    """Start ``moto_server`` and wait until it accepts connections.

    Raises:
        ServerStartError: the server exited or was not ready in time.
    """
    env = peer_environment(directory)
    port = processes.free_port()
    command = [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = processes.start_process(
        "moto", command, directory / "server.log", env,
        lambda: processes.accepts_tcp(port), port=port, cwd=directory)
    settings = {"endpoint": f"http://127.0.0.1:{port}"}
    return PeerServer("moto", venv, server, settings, env)


def start_pykmip(venv: Path, directory: Path) -> PeerServer:
    """Start ``pykmip-server`` and wait until it accepts connections.

    Raises:
        ServerStartError: the server exited or was not ready in time.
    """
    env = peer_environment(directory)
    certificates = tls.make_certificates(directory / "certs")
    port = processes.free_port()
    policies = directory / "policies"
    policies.mkdir()
    config = directory / "server.conf"
    config.write_text(_PYKMIP_SERVER.format(
        port=port, certificates=certificates, policies=policies,
        database=directory / "pykmip.sqlite"), encoding="utf-8")
    client_config = directory / "client.conf"
    client_config.write_text(_PYKMIP_CLIENT.format(
        port=port, certificates=certificates), encoding="utf-8")
    command = [str(venv / "bin" / "pykmip-server"), "-f", str(config),
               "-l", str(directory / "pykmip.log")]
    server = processes.start_process(
        "PyKMIP", command, directory / "server.log", env,
        lambda: processes.accepts_tcp(port), port=port, cwd=directory)
    settings = {"port": port, "cert": str(certificates.client_cert),
                "key": str(certificates.client_key), "ca": str(certificates.ca),
                "config_file": str(client_config)}
    return PeerServer("pykmip", venv, server, settings, env)


STARTERS: dict[str, Callable[[Path, Path], PeerServer]] = {
    "pykmip": start_pykmip, "moto": start_moto, "openbao": start_openbao,
}

_PYKMIP_SERVER = """\
[server]
hostname=127.0.0.1
port={port}
certificate_path={certificates.server_cert}
key_path={certificates.server_key}
ca_path={certificates.ca}
auth_suite=TLS1.2
policy_path={policies}
enable_tls_client_auth=True
logging_level=INFO
database_path={database}
"""

_PYKMIP_CLIENT = """\
[client]
host=127.0.0.1
port={port}
certfile={certificates.client_cert}
keyfile={certificates.client_key}
ca_certs={certificates.ca}
ssl_version=PROTOCOL_TLSv1_2
"""


def _http_ok(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
