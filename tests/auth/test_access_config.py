"""Principals, policies and their configuration: parsing, matching, deciding.

Every entry a configuration can get wrong is rejected with a message
that names it; the example configuration admits root and the user who
runs the agent.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest

from agent.auth import policy
from agent.auth.policy import (
    ADMINISTRATOR, ALLOW, DENY, KEY, KEY_USER, AccessConfig, Resource,
    implicit_access, parse_access,
)
from agent.auth.principals import (
    AccessConfigError, find_principal, process_groups, process_start_time,
)
from agent.config import ConfigError, load_config, parse_config, reload_access
from agent.context import Peer
from agent.rpc.server import peer_credentials

REPO = Path(__file__).resolve().parents[2]
KEYSTORES = {"a", "b"}
PRINCIPALS = {
    "ops": {"users": ["root"], "keystores": ["*"]},
    "apps": {"groups": ["root"], "keystores": ["a"]},
    "svc": {"uids": [5000], "keystores": ["a", "b"]},
}
POLICIES = {
    "ops-all": {"principals": ["ops"], "permissions": ["administrator"],
                "resources": ["key/*", "agent"]},
    "apps-use": {"principals": ["apps", "svc"], "permissions": ["key-user"],
                 "resources": ["key/*"]},
}


def access(principals=None, policies=None) -> AccessConfig:
    principals = PRINCIPALS if principals is None else principals
    policies = POLICIES if policies is None else policies
    return parse_access(copy.deepcopy(principals), copy.deepcopy(policies), KEYSTORES)


def rejected(principals=None, policies=None) -> str:
    """Return the message of the error parsing fails with."""
    with pytest.raises(AccessConfigError) as caught:
        access(principals, policies)
    return str(caught.value)


# --- principals -------------------------------------------------------------------


def test_principals_resolve_names():
    """User and group names become uids and gids."""
    parsed = access().principals
    assert parsed["ops"].uids == {0}
    assert parsed["apps"].gids == {0}
    assert parsed["apps"].keystores == {"a"}
    assert parsed["ops"].keystores is None


@pytest.mark.parametrize("change, named", [
    ({"users": ["no-such-user-x"]}, "no-such-user-x"),
    ({"groups": ["no-such-group-x"]}, "no-such-group-x"),
    ({"keystores": ["c"]}, "'c'"),
    ({"keystores": ["*", "a"]}, "only entry"),
    ({"keystores": []}, "at least one"),
    ({"uids": ["0"]}, "uids"),
    ({"colour": "red"}, "colour"),
    ({"client_key": "yes"}, "client_key"),
])
def test_bad_principal_named(change, named):
    """Each invalid principal entry is rejected by name."""
    principals = copy.deepcopy(PRINCIPALS)
    principals["svc"].update(change)
    assert named in rejected(principals)


def test_principal_keystores_required():
    """A principal must say which keystores it may use."""
    principals = copy.deepcopy(PRINCIPALS)
    del principals["svc"]["keystores"]
    assert "principals.svc.keystores" in rejected(principals)


def test_principal_matching_nothing():
    """A principal with no matcher and no client key is rejected."""
    assert "matches no caller" in rejected({"x": {"keystores": ["a"]}}, {})


def test_uid_in_two_principals():
    """A uid may name only one principal without a client key."""
    principals = {**PRINCIPALS, "other": {"uids": [0], "keystores": ["a"]}}
    assert "uid 0" in rejected(principals, {})


def test_keyed_principal_may_share_uid():
    """A client key principal may name a uid another principal names."""
    principals = {**PRINCIPALS,
                  "other": {"uids": [0], "client_key": True, "keystores": ["a"]}}
    assert access(principals, {}).principals["other"].client_key


def test_uid_match_beats_group():
    """A uid match wins over a group match that comes first."""
    principals = {"grouped": {"groups": ["root"], "keystores": ["a"]},
                  "named": {"uids": [0], "keystores": ["a"]}}
    found = find_principal(access(principals, {}).principals, Peer(0, 0, 1))
    assert found.name == "named"


def test_supplementary_group_matches():
    """A group matches through the peer's supplementary groups."""
    found = find_principal(access().principals, Peer(77, 77, 1, groups=(0,)))
    assert found.name == "apps"


def test_no_principal_matches():
    """A peer outside every principal matches none."""
    assert find_principal(access().principals, Peer(77, 77, 1, groups=(88,))) is None


def test_keyed_principal_not_matched_by_uid():
    """A client key principal never matches on credentials alone."""
    principals = {"keyed": {"uids": [0], "client_key": True, "keystores": ["a"]}}
    assert find_principal(access(principals, {}).principals, Peer(0, 0, 1)) is None


# --- policies ----------------------------------------------------------------------


@pytest.mark.parametrize("resource", [
    "key", "key/", "keys/*", "key/ab*", "key/alias/x", "secret/a b",
    "acs:kms:local:a:key/key-1", "*", 7,
])
def test_bad_resource_form(resource):
    """Unknown resource forms are rejected."""
    policies = {"p": {"principals": ["ops"], "permissions": ["key-user"],
                      "resources": [resource]}}
    assert "policies.p.resources" in rejected(policies=policies)


@pytest.mark.parametrize("change, named", [
    ({"permissions": ["superuser"]}, "superuser"),
    ({"principals": ["ghost"]}, "ghost"),
    ({"principals": []}, "principals"),
    ({"effect": "Maybe"}, "Maybe"),
    ({"extra": 1}, "extra"),
])
def test_bad_policy_named(change, named):
    """Unknown templates, principals and keys are rejected by name."""
    policies = copy.deepcopy(POLICIES)
    policies["apps-use"].update(change)
    assert named in rejected(policies=policies)


def test_policies_need_principals():
    """[policies] without [principals] is rejected."""
    with pytest.raises(AccessConfigError):
        parse_access(None, POLICIES, KEYSTORES)


def test_cloud_template_names_accepted():
    """The KMS instance RBAC template names map to ours."""
    policies = {"p": {"principals": ["svc"], "resources": ["key/*"], "permissions": [
        "RbacPermission/Template/CryptoServiceKeyUser"]}}
    assert access(policies=policies).grants[0].templates == {KEY_USER}


def test_decide_deny_wins():
    """A Deny grant overrides an Allow on the same resource."""
    policies = {**POLICIES, "no": {"principals": ["svc"], "effect": "Deny",
                                   "permissions": ["key-user"],
                                   "resources": ["key/k1"]}}
    config = access(policies=policies)
    svc = config.principals["svc"]
    assert config.decide(svc, frozenset({KEY_USER}), Resource(KEY, "k1", "a")) == DENY
    assert config.decide(svc, frozenset({KEY_USER}), Resource(KEY, "k2", "a")) == ALLOW


def test_decide_keystore_binding():
    """A resource outside the principal's keystores is denied."""
    config = access()
    apps = config.principals["apps"]
    assert config.decide(apps, frozenset({KEY_USER}), Resource(KEY, "k", "b")) == DENY


def test_decide_repeats_from_memo():
    """A repeated decision is the same, and every decision is remembered once."""
    config = access()
    svc = config.principals["svc"]
    apps = config.principals["apps"]
    resource = Resource(KEY, "k", "b")
    for _ in range(3):
        assert config.decide(svc, frozenset({KEY_USER}), resource) == ALLOW
        assert config.decide(apps, frozenset({KEY_USER}), resource) == DENY
    assert len(config._decisions) == 2


def test_decide_memo_is_bounded(monkeypatch):
    """Past MAX_DECISIONS entries the memo starts over and decides anew."""
    monkeypatch.setattr(policy, "MAX_DECISIONS", 2)
    config = access()
    svc = config.principals["svc"]
    for name in ("k1", "k2", "k3"):
        assert config.decide(svc, frozenset({KEY_USER}), Resource(KEY, name, "a")) == ALLOW
    assert len(config._decisions) == 1


def test_decide_nothing_applies():
    """Without a matching grant the decision is None (denied)."""
    config = access()
    svc = config.principals["svc"]
    assert config.decide(svc, frozenset({ADMINISTRATOR}),
                         Resource(KEY, "k", "a")) is None


def test_implicit_access_admits_owner():
    """Without [principals], the agent's uid and root get everything."""
    config = implicit_access(agent_uid=1234)
    assert config.implicit
    owner = find_principal(config.principals, Peer(1234, 1234, 1))
    assert owner is not None
    assert find_principal(config.principals, Peer(0, 0, 1)) is owner
    assert find_principal(config.principals, Peer(999, 999, 1)) is None
    assert config.decide(owner, frozenset({KEY_USER}), Resource(KEY, "k", "x")) == ALLOW


# --- the configuration file ----------------------------------------------------------


BASE = {
    "agent": {"socket": "run/agent.sock", "data_dir": "data", "default_keystore": "a"},
    "keystores": {"a": {"type": "software", "domain_key_file": "a.key"},
                  "b": {"type": "software", "domain_key_file": "b.key"}},
}


def test_example_config_admits_installer():
    """config.example.toml admits root and the agent's user with every template."""
    config = load_config(REPO / "config.example.toml").access
    assert not config.implicit
    for uid in (0, os.getuid()):
        owner = find_principal(config.principals, Peer(uid, uid, 1))
        assert owner is not None
        for template in ("administrator", "key-user", "secret-user"):
            assert config.decide(owner, frozenset({template}),
                                 Resource(KEY, "k", "default")) == ALLOW


def test_no_principals_is_implicit(tmp_path):
    """A config without [principals] uses the implicit access."""
    assert parse_config(copy.deepcopy(BASE), tmp_path).access.implicit


def test_config_access_errors_are_config_errors(tmp_path):
    """An access error in the file is a ConfigError naming the entry."""
    raw = {**copy.deepcopy(BASE), "principals": {"x": {"uids": [1]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path)
    assert "principals.x.keystores" in str(caught.value)


def write_policy_file(path: Path, mode: int = 0o644) -> Path:
    path.write_text('[principals.svc]\nuids = [5000]\nkeystores = ["a"]\n'
                    '[policies.p]\nprincipals = ["svc"]\npermissions = ["key-user"]\n'
                    'resources = ["key/*"]\n')
    path.chmod(mode)
    return path


def test_policy_file_loaded(tmp_path):
    """agent.policy_file supplies principals and policies."""
    write_policy_file(tmp_path / "policies.toml")
    raw = copy.deepcopy(BASE)
    raw["agent"]["policy_file"] = "policies.toml"
    config = parse_config(raw, tmp_path)
    assert set(config.access.principals) == {"svc"}


def test_policy_file_writable_rejected(tmp_path):
    """A policy file writable by group or others is rejected."""
    write_policy_file(tmp_path / "policies.toml", 0o664)
    raw = copy.deepcopy(BASE)
    raw["agent"]["policy_file"] = "policies.toml"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path)
    assert "chmod go-w" in str(caught.value)


def test_policy_file_and_tables_rejected(tmp_path):
    """policy_file and inline [principals] together are rejected."""
    write_policy_file(tmp_path / "policies.toml")
    raw = {**copy.deepcopy(BASE), "principals": {}}
    raw["agent"]["policy_file"] = "policies.toml"
    with pytest.raises(ConfigError):
        parse_config(raw, tmp_path)


def test_policy_file_error_names_file(tmp_path):
    """An error inside the policy file names the file."""
    path = tmp_path / "policies.toml"
    path.write_text('[principals.svc]\nuids = [5000]\nkeystores = ["zzz"]\n')
    raw = copy.deepcopy(BASE)
    raw["agent"]["policy_file"] = "policies.toml"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path)
    assert str(path) in str(caught.value)


def test_reload_rejects_new_keystore(tmp_path):
    """A reload may not bind principals to keystores the agent did not open."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[agent]\nsocket = "s"\ndata_dir = "d"\ndefault_keystore = "a"\n'
        '[keystores.a]\ntype = "software"\ndomain_key_file = "a.key"\n'
        '[keystores.c]\ntype = "software"\ndomain_key_file = "c.key"\n'
        '[principals.p]\nuids = [1]\nkeystores = ["c"]\n')
    with pytest.raises(ConfigError) as caught:
        reload_access(config, {"a"})
    assert "restart" in str(caught.value)
    assert reload_access(config, {"a", "c"}).principals["p"].keystores == {"c"}


# --- the kernel and /proc -------------------------------------------------------------


def test_own_start_time_read():
    """The start time of this process can be read."""
    assert isinstance(process_start_time(os.getpid()), int)


def test_reused_pid_lends_no_groups():
    """Groups of a pid whose start time changed are not used."""
    start = process_start_time(os.getpid())
    assert process_groups(os.getpid(), start + 1) is None
    assert set(process_groups(os.getpid(), start)) == set(os.getgroups())


def test_peer_credentials_of_socketpair():
    """The kernel reports this process at the other end of a socketpair."""
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        peer = peer_credentials(left)
    assert peer.uid == os.getuid()
    assert peer.pid == os.getpid()
    assert peer.start_time == process_start_time(os.getpid())
    assert set(peer.groups) == set(os.getgroups())
