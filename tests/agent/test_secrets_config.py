"""The [secrets] and [data_key_cache] configuration sections."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from agent.config import ConfigError, RotationRule, parse_config

BASE = {
    "agent": {"socket": "run/agent.sock", "data_dir": "data"},
    "keystores": {"default": {"type": "pkcs11", "module": "/lib/x.so",
                              "token_label": "t", "pin_file": "pin"}},
}


def parse(**sections):
    raw = copy.deepcopy(BASE)
    raw.update(sections)
    return parse_config(raw, base_dir=Path("/tmp"))


def test_secrets_defaults():
    """Without a [secrets] section the documented defaults apply."""
    config = parse()
    assert config.secrets.cache_ttl == 300.0
    assert config.secrets.stale_max_age == 3600.0
    assert config.secrets.default_key == ""
    assert config.secrets.rotation == ()
    assert config.data_key_cache.max_uses == 100


def test_rotation_rules_parsed():
    """Rotation rules keep their order, argv and entry point."""
    config = parse(secrets={"rotation": [
        {"pattern": "db/*", "command": ["/usr/bin/rotate", "--db"]},
        {"pattern": "*", "entry_point": "pkg.mod:func"},
    ]})
    assert config.secrets.rotation == (
        RotationRule("db/*", command=("/usr/bin/rotate", "--db")),
        RotationRule("*", entry_point="pkg.mod:func"),
    )


@pytest.mark.parametrize("section, named", [
    ({"secrets": {"cache_tll": 5}}, "secrets.cache_tll"),
    ({"secrets": {"cache_ttl": -1}}, "secrets.cache_ttl"),
    ({"secrets": {"cache_max_bytes": 10}}, "secrets.cache_max_bytes"),
    ({"secrets": {"rotation": [{"pattern": "x"}]}}, "secrets.rotation[0]"),
    ({"secrets": {"rotation": [{"pattern": "x", "command": ["a"],
                                "entry_point": "m:f"}]}}, "secrets.rotation[0]"),
    ({"secrets": {"rotation": [{"pattern": "x", "command": []}]}},
     "secrets.rotation[0].command"),
    ({"secrets": {"rotation": [{"pattern": "x", "entry_point": "nocolon"}]}},
     "secrets.rotation[0].entry_point"),
    ({"data_key_cache": {"max_entries": 0}}, "data_key_cache.max_entries"),
    ({"data_key_cache": {"ttl": 1}}, "data_key_cache.ttl"),
])
def test_bad_secrets_config_named(section, named):
    """Each invalid key is rejected with its full name."""
    with pytest.raises(ConfigError) as caught:
        parse(**section)
    assert named in str(caught.value)
