"""The systemd units, checked by systemd's own tools where they exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
KMS_AGENT = Path(sys.executable).with_name("kms-agent")


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (package systemd)")
    return path


@pytest.fixture
def units(tmp_path):
    """The units, with ExecStart pointing at this checkout's kms-agent."""
    for name in ("kms-agent.service", "kms-agent.socket"):
        text = (SYSTEMD / name).read_text()
        text = text.replace("/opt/kms-agent/.venv/bin/kms-agent", str(KMS_AGENT))
        (tmp_path / name).write_text(text)
    return tmp_path


def test_units_verify_clean(units):
    """systemd-analyze verify finds nothing in the service and socket units."""
    tool = require("systemd-analyze")
    result = subprocess.run([tool, "verify", "kms-agent.service", "kms-agent.socket"],
                            cwd=units, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_service_exposure_low(units):
    """systemd-analyze security rates the service at most 1.0 (of 10)."""
    tool = require("systemd-analyze")
    result = subprocess.run([tool, "security", "--offline=yes", "--no-pager",
                             "kms-agent.service"], cwd=units, capture_output=True,
                            text=True, timeout=120)
    match = re.search(r"Overall exposure level for kms-agent\.service: ([\d.]+)",
                      result.stdout)
    if match is None and "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.0


def test_service_settings_present():
    """The service is Type=notify, with a watchdog and SIGHUP reload."""
    text = (SYSTEMD / "kms-agent.service").read_text()
    for line in ("Type=notify", "WatchdogSec=30s", "ExecReload=/bin/kill -HUP $MAINPID",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_UNIX", "Also=kms-agent.socket"):
        assert line in text.splitlines(), line


def test_socket_path_matches_config():
    """The socket unit listens where systemd/config.toml puts agent.socket."""
    socket_unit = (SYSTEMD / "kms-agent.socket").read_text()
    config = (SYSTEMD / "config.toml").read_text()
    listen = re.search(r"^ListenStream=(.*)$", socket_unit, re.MULTILINE).group(1)
    configured = re.search(r'^socket = "(.*)"$', config, re.MULTILINE).group(1)
    assert listen == configured


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles --root chowns as root")
def test_sysusers_tmpfiles_create(tmp_path):
    """sysusers makes the user and tmpfiles the directories, in a scratch root."""
    sysusers, tmpfiles = require("systemd-sysusers"), require("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}",
                    str(SYSTEMD / "kms-agent.sysusers")],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([tmpfiles, f"--root={tmp_path}", "--create",
                    str(SYSTEMD / "kms-agent.tmpfiles")],
                   check=True, capture_output=True, timeout=60)
    passwd = (tmp_path / "etc" / "passwd").read_text()
    uid = int(re.search(r"^kms-agent:x:(\d+):", passwd, re.MULTILINE).group(1))
    state = (tmp_path / "var" / "lib" / "kms-agent").stat()
    run = (tmp_path / "run" / "kms-agent").stat()
    assert (state.st_uid, state.st_mode & 0o777) == (uid, 0o700)
    assert (run.st_uid, run.st_mode & 0o777) == (uid, 0o750)
