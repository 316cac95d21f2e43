"""Throwaway Unix users, a two-keystore agent, and calls made as other uids.

``unix_users`` creates a group and two users with ``groupadd`` and
``useradd`` and deletes them afterwards. It needs root: without root the
tests are skipped, except under CI=true, where they fail. ``run_as``
forks this process and drops to a user's uid and gid before calling the
agent, so the kernel reports that user to the agent. The child calls
only code the parent has already imported, because the interpreter's
own files may not be readable by the user.
"""

from __future__ import annotations

import dataclasses
import grp
import itertools
import json
import os
import pickle
import pwd
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
# Imported here so that a child that dropped root never has to read them.
from cryptography.hazmat.primitives import serialization  # noqa: F401
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401

from agent.keystore import softhsm
from client import KmsClient, errors
from tests.integration.conftest import AgentProcess, launch, require_softhsm


@dataclasses.dataclass(frozen=True)
class User:
    """A throwaway account: its name, uid and primary gid."""

    name: str
    uid: int
    gid: int


@dataclasses.dataclass
class UnixUsers:
    """The group whose members may reach the socket, and its users."""

    group: str
    gid: int
    alice: User
    bob: User


def require_root() -> None:
    """Skip unless root; under CI=true a missing root fails instead."""
    reason = None
    if os.geteuid() != 0:
        reason = "creating throwaway users needs root"
    elif shutil.which("useradd") is None or shutil.which("groupadd") is None:
        reason = "useradd and groupadd are not installed (package passwd)"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; the access tests must run in CI")
    pytest.skip(f"{reason}; run the tests as root to include them")


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


# Each module that imports ``unix_users`` gets its own instance of the
# fixture, so each instance needs names of its own.
_INSTANCES = itertools.count()


@pytest.fixture(scope="session")
def unix_users():
    """Create a group and two users for the session, then delete them."""
    require_root()
    suffix = f"{os.getpid()}-{next(_INSTANCES)}"
    group = f"kmsit-{suffix}"
    names = (f"kmsit-a-{suffix}", f"kmsit-b-{suffix}")
    _run("groupadd", group)
    try:
        for name in names:
            _run("useradd", "--system", "--no-create-home", "--shell",
                 "/usr/sbin/nologin", "--gid", group, name)
        users = [pwd.getpwnam(name) for name in names]
        yield UnixUsers(group, grp.getgrnam(group).gr_gid,
                        *(User(u.pw_name, u.pw_uid, u.pw_gid) for u in users))
    finally:
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def traversable_dir() -> Path:
    """Make a directory under /tmp that other users may traverse but not list.

    pytest's tmp_path lies under a directory only root may enter, so the
    agent of these tests lives here, where the throwaway users can reach
    its socket. The caller removes it.
    """
    directory = Path(tempfile.mkdtemp(prefix="kmsit-", dir="/tmp"))
    directory.chmod(0o711)
    return directory


# --- the agent ------------------------------------------------------------------


def make_tokens(directory: Path) -> tuple[Path, softhsm.TokenInfo, softhsm.TokenInfo]:
    """Create two tokens in one SoftHSM2 directory; return module and tokens."""
    module = require_softhsm()
    token_dir = directory / "token"
    return (module, softhsm.init_token(token_dir, "tenant-a"),
            softhsm.init_token(token_dir, "tenant-b"))


def keystore_table(name: str, module: Path, token: softhsm.TokenInfo,
                   pin_file: Path | None = None, label: str | None = None) -> str:
    return textwrap.dedent(f"""
        [keystores.{name}]
        type = "pkcs11"
        module = "{module}"
        token_label = "{label or token.label}"
        pin_file = "{pin_file or token.pin_file}"
        softhsm2_conf = "{token.conf_path}"
        """)


def write_agent_config(directory: Path, group: str, keystores: str) -> Path:
    """Write a config that takes its principals from policies.toml."""
    config = directory / "config.toml"
    config.write_text(textwrap.dedent(f"""
        [agent]
        socket = "agent.sock"
        socket_mode = "0660"
        socket_group = "{group}"
        data_dir = "data"
        default_keystore = "tenant-a"
        policy_file = "policies.toml"
        purge_interval = 0.2

        [log]
        level = "debug"
        format = "json"
        requests = "all"
        """) + keystores)
    return config


def write_policies(directory: Path, text: str) -> Path:
    """Write policies.toml (mode 0644) next to the config."""
    path = directory / "policies.toml"
    path.write_text(textwrap.dedent(text))
    path.chmod(0o644)
    return path


def start(directory: Path, group: str, keystores: str,
          policies: str) -> AgentProcess:
    """Write the config and policies under ``directory`` and start an agent.

    ``directory`` must be traversable by the users who call the agent.
    """
    write_policies(directory, policies)
    return launch(write_agent_config(directory, group, keystores), directory)


# --- calls as another user -------------------------------------------------------


def _perform(socket_path: str, calls: list[tuple[str, dict]],
             client_key: str | None) -> list[dict[str, Any]]:
    outcomes = []
    try:
        client = KmsClient(socket_path, client_key=client_key, timeout=30)
    except errors.KmsError as error:
        return [{"code": error.code, "message": error.message}] * len(calls)
    with client:
        for operation, params in calls:
            try:
                outcomes.append({"code": "OK",
                                 "result": client.call(operation, **params)})
            except errors.KmsError as error:
                outcomes.append({"code": error.code, "status": error.http_status,
                                 "message": error.message})
    return outcomes


def run_as(user: User, socket_path: Path, calls: list[tuple[str, dict]],
           client_key: str | None = None) -> list[dict[str, Any]]:
    """Make ``calls`` from a child process running as ``user``.

    Returns one outcome per call: ``{"code": "OK", "result": ...}`` or
    the error's code, status and message.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, call, report, exit
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            payload = pickle.dumps(_perform(str(socket_path), calls, client_key))
        except BaseException as exc:  # reported to the parent, which fails
            payload = pickle.dumps(repr(exc))
            status = 1
        with os.fdopen(write_end, "wb") as stream:
            stream.write(payload)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        payload = stream.read()
    _, status = os.waitpid(pid, 0)
    outcome = pickle.loads(payload)
    assert status == 0, f"the child running as {user.name} failed: {outcome}"
    return outcome


def codes(outcomes: list[dict[str, Any]]) -> list[str]:
    """Return the code of each outcome."""
    return [outcome["code"] for outcome in outcomes]


def save_client_key(reply: dict, path: Path, owner: User) -> Path:
    """Write a CreateClientKey reply as a 0600 key file owned by ``owner``."""
    path.write_text(json.dumps({"ClientKeyId": reply["ClientKeyId"],
                                "PrivateKeyData": reply["PrivateKeyData"]}))
    os.chown(path, owner.uid, owner.gid)
    path.chmod(0o600)
    return path
