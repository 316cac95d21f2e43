"""Configuration loading: every bad key is named, paths resolve."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from agent.config import ConfigError, check_data_dir, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]

VALID = {
    "agent": {"socket": "run/agent.sock", "data_dir": "data"},
    "keystores": {"default": {"type": "pkcs11", "module": "/lib/x.so",
                              "token_label": "t", "pin_file": "pin"}},
}


def with_change(section: str, key: str, value) -> dict:
    raw = copy.deepcopy(VALID)
    target = raw
    for part in section.split("."):
        target = target.setdefault(part, {})
    target[key] = value
    return raw


def test_example_config_is_valid():
    """config.example.toml loads and resolves paths next to itself."""
    config = load_config(REPO / "config.example.toml")
    assert config.socket == REPO / "var/run/agent.sock"
    assert config.keystores["default"].pin_file == REPO / "var/token/pin"
    assert config.socket_mode == 0o660


def test_relative_paths_join_base(tmp_path):
    """Relative paths are resolved against the config's directory."""
    config = parse_config(copy.deepcopy(VALID), tmp_path)
    assert config.data_dir == tmp_path / "data"


def test_request_lines_default_to_failures(tmp_path):
    """Without [log] requests, only failed requests get operator log lines."""
    assert parse_config(copy.deepcopy(VALID), tmp_path).log_requests == "failures"


@pytest.mark.parametrize("section, key, value, named", [
    ("agent", "sockett", "x", "agent.sockett"),
    ("agent", "max_frame_bytes", "big", "agent.max_frame_bytes"),
    ("agent", "max_frame_bytes", 10, "agent.max_frame_bytes"),
    ("agent", "drain_timeout", True, "agent.drain_timeout"),
    ("agent", "socket_mode", "0666", "agent.socket_mode"),
    ("agent", "socket_mode", "rw", "agent.socket_mode"),
    ("agent", "region", "bad region", "agent.region"),
    ("agent", "default_keystore", "nope", "agent.default_keystore"),
    ("log", "level", "loud", "log.level"),
    ("log", "requests", "successes", "log.requests"),
    ("log", "colour", "yes", "log.colour"),
    ("keystores.default", "type", "cloud", "keystores.default.type"),
    ("keystores.default", "pin", "1234", "keystores.default.pin"),
    ("keystores.default", "pin_env", "PIN", "keystores.default"),
    ("keystores.default", "worker_threads", 0, "keystores.default.worker_threads"),
    ("agent", "max_connections", 0, "agent.max_connections"),
    ("agent", "idle_timeout", "long", "agent.idle_timeout"),
    ("agent", "handshake_timeout", 0, "agent.handshake_timeout"),
])
def test_bad_keys_are_named(tmp_path, section, key, value, named):
    """Each invalid key raises ConfigError whose message names it."""
    with pytest.raises(ConfigError) as caught:
        parse_config(with_change(section, key, value), tmp_path)
    assert named in str(caught.value)


def test_missing_required_key(tmp_path):
    """A missing socket path is reported by name."""
    raw = copy.deepcopy(VALID)
    del raw["agent"]["socket"]
    with pytest.raises(ConfigError, match="agent.socket: missing"):
        parse_config(raw, tmp_path)


def test_unknown_section(tmp_path):
    """An unknown top-level table is reported."""
    raw = copy.deepcopy(VALID)
    raw["extra"] = {}
    with pytest.raises(ConfigError, match="extra: unknown key"):
        parse_config(raw, tmp_path)


def test_invalid_toml(tmp_path):
    """A file that is not TOML is reported with its path."""
    path = tmp_path / "bad.toml"
    path.write_text("[agent\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_missing_file(tmp_path):
    """A missing file is reported with its path."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_gateway_section_parsed(tmp_path):
    """[gateway] is off by default and its paths join the data dir."""
    default = parse_config(copy.deepcopy(VALID), tmp_path)
    enabled = parse_config(with_change("gateway", "enabled", True), tmp_path)
    assert not default.gateway.enabled
    assert enabled.gateway.enabled
    assert enabled.gateway.credentials_file == tmp_path / "data" / \
        "gateway-credentials.toml"


@pytest.mark.parametrize("key, value, named", [
    ("listen", "10.0.0.1:443", "gateway.listen"),
    ("colour", "red", "gateway.colour"),
    ("max_in_flight", 0, "gateway.max_in_flight"),
])
def test_bad_gateway_keys_named(tmp_path, key, value, named):
    """An invalid [gateway] key is named in the error."""
    with pytest.raises(ConfigError, match=named):
        parse_config(with_change("gateway", key, value), tmp_path)


def test_writable_config_refused(tmp_path):
    """A configuration file that others can write is refused."""
    source = (REPO / "config.example.toml").read_text()
    path = tmp_path / "config.toml"
    path.write_text(source)
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(path)


def test_data_dir_check_private(tmp_path):
    """A data directory private to its owner or group passes the check."""
    for mode in (0o700, 0o750, 0o770):
        tmp_path.chmod(mode)
        check_data_dir(tmp_path)


def test_data_dir_check_missing(tmp_path):
    """A missing data directory passes and is not created."""
    check_data_dir(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_data_dir_check_open(tmp_path):
    """A data directory other users can access is named with its fix."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    data_dir.chmod(0o705)
    with pytest.raises(ConfigError) as caught:
        check_data_dir(data_dir)
    assert "accessible by other users" in str(caught.value)
    assert f"run chmod o-rwx {data_dir}" in str(caught.value)


def test_data_dir_check_file(tmp_path):
    """A data_dir that is a regular file is rejected."""
    path = tmp_path / "data"
    path.write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        check_data_dir(path)


def test_foreign_policy_file_refused(tmp_path):
    """A policy file owned by another user is refused."""
    import os
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    policies = tmp_path / "policies.toml"
    policies.write_text("")
    os.chown(policies, 65534, 65534)
    raw = copy.deepcopy(VALID)
    raw["agent"]["policy_file"] = str(policies)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        parse_config(raw, tmp_path)
