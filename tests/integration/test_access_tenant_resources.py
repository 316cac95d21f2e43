"""Tenant isolation of tagging, batch reads and the rotation budget.

alice administers keystore tenant-a and bob uses keystore tenant-b, on
one daemon with two tokens; root administers both. A refusal of another
tenant's secret or certificate must read exactly like the refusal of
one that does not exist, apart from the caller's own reference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.access_env import (
    codes, keystore_table, make_tokens, run_as, start, traversable_dir,
    unix_users,  # noqa: F401 (fixture)
)
from tests.integration.test_access_users import POLICIES, Tenants

pytestmark = pytest.mark.hsm

ROTATION = """
[[secrets.rotation]]
pattern = "*"
command = ["/bin/sh", "-c", "echo next-$$"]
"""
TAGS = [{"TagKey": "team", "TagValue": "pay"}]
KMSCTL = Path(sys.executable).with_name("kmsctl")


@pytest.fixture(scope="module")
def tenants(unix_users):
    directory = traversable_dir()
    try:
        module, token_a, token_b = make_tokens(directory)
        keystores = (keystore_table("tenant-a", module, token_a)
                     + keystore_table("tenant-b", module, token_b) + ROTATION)
        policies = POLICIES.replace(
            'resources = ["key/*", "secret/*"', 'resources = ["key/*", "secret/*", '
            '"certificate/*"').format(alice=unix_users.alice.name,
                                      bob=unix_users.bob.name)
        agent = start(directory, unix_users.group, keystores, policies)
        try:
            tenants = Tenants(agent, directory, unix_users)
            with tenants.admin() as admin:
                tenants.certificate_b = admin.call(
                    "CreateCertificate", KeySpec="EC_P256",
                    Subject="CN=b,C=CN,O=tenant-b,OU=it",
                    DKMSInstanceId="tenant-b")["CertificateId"]
                admin.call("CreateSecret", SecretName="b/deleted", VersionId="v1",
                           SecretData="pw", EncryptionKeyId=tenants.key_b)
                admin.call("DeleteSecret", SecretName="b/deleted")
            yield tenants
        finally:
            agent.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def without_reference(outcome: dict, reference: str) -> dict:
    """Return an outcome with the caller's own reference blanked out."""
    return json.loads(json.dumps(outcome).replace(reference, "REF"))


def test_tagging_other_tenant_reads_as_missing(tenants):
    """Tagging another tenant's secret or certificate reads like a missing one."""
    missing_certificate = str(uuid.uuid4())
    pairs = [
        ("SecretName", "b/db", "b/missing"),
        ("SecretName", "acs:kms:local:tenant-b:secret/b/db", "b/missing"),
        ("SecretName", "b/deleted", "b/missing"),
        ("CertificateId", tenants.certificate_b, missing_certificate),
    ]
    for param, existing, missing in pairs:
        for operation, extra in (("TagResource", {"Tags": TAGS}),
                                 ("UntagResource", {"TagKeys": ["team"]})):
            outcomes = run_as(tenants.alice, tenants.socket, [
                (operation, {param: existing, **extra}),
                (operation, {param: missing, **extra})])
            assert codes(outcomes) == ["Forbidden.NoPermission"] * 2
            assert (without_reference(outcomes[0], existing)
                    == without_reference(outcomes[1], missing))


def test_tagging_other_tenant_changes_nothing(tenants):
    """Rejected tag calls, also those that name an own key, add no tag."""
    outcomes = run_as(tenants.alice, tenants.socket, [
        ("TagResource", {"SecretName": "b/db", "Tags": TAGS}),
        ("TagResource", {"KeyId": tenants.key_a, "SecretName": "b/db", "Tags": TAGS}),
        ("TagResource", {"KeyId": tenants.key_a,
                         "CertificateId": tenants.certificate_b, "Tags": TAGS}),
    ])
    assert codes(outcomes) == ["Forbidden.NoPermission"] * 3
    with tenants.admin() as admin:
        secret = admin.call("DescribeSecret", SecretName="b/db", FetchTags=True)
        certificate = admin.call("DescribeCertificate",
                                 CertificateId=tenants.certificate_b)
        key_tags = admin.call("ListResourceTags", KeyId=tenants.key_a)
    assert secret["Tags"]["Tag"] == []
    assert not certificate.get("Tags", {}).get("Tag")
    assert key_tags["Tags"]["Tag"] == []


def test_batch_refusal_reads_as_missing(tenants):
    """A forbidden and a missing secret fail alike, and own values are returned."""
    [outcome] = run_as(tenants.bob, tenants.socket, [
        ("BatchGetSecretValue", {"SecretsList": [
            {"SecretName": "a/db"}, {"SecretName": "a/missing"},
            {"SecretName": "b/db"}]})])
    assert outcome["code"] == "OK"
    reply = outcome["result"]
    assert [value["SecretName"] for value in reply["SecretValues"]] == ["b/db"]
    assert reply["SecretValues"][0]["SecretData"] == "pw-b"
    forbidden, missing = reply["Errors"]
    assert forbidden["Code"] == "Forbidden.NoPermission"
    assert (without_reference(forbidden, "a/db")
            == without_reference(missing, "a/missing"))
    assert "pw-a" not in json.dumps(reply)


def test_batch_refusals_audited(tenants):
    """The audit record names the refused items and its chain verifies."""
    run_as(tenants.alice, tenants.socket, [
        ("BatchGetSecretValue", {"SecretsList": [
            {"SecretName": "a/db"}, {"SecretName": "b/db"}]})])
    audit = tenants.directory / "data" / "audit.jsonl"
    batches = alice_batches(audit)
    assert batches[-1]["refused"] == ["b/db"]
    verified = subprocess.run([str(KMSCTL), "audit", "verify", str(audit)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def alice_batches(audit: Path) -> list[dict]:
    """Return alice's BatchGetSecretValue records once the trail wrote one."""
    # Records of read-only requests are written shortly after the reply.
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        batches = [record for record in records
                   if record.get("op") == "BatchGetSecretValue"
                   and record.get("principal") == "alice"]
        if batches or time.monotonic() > deadline:
            return batches
        time.sleep(0.05)


def test_rotation_budget_per_caller(tenants):
    """alice's 51st rotation in an hour is rejected, unlike a repeat or root's."""
    calls = [("RotateSecret", {"SecretName": "a/db", "VersionId": f"r{n}"})
             for n in range(50)]
    assert set(codes(run_as(tenants.alice, tenants.socket, calls))) == {"OK"}
    outcomes = run_as(tenants.alice, tenants.socket, [
        ("RotateSecret", {"SecretName": "a/db", "VersionId": "r49"}),
        ("RotateSecret", {"SecretName": "a/db", "VersionId": "r50"})])
    assert codes(outcomes) == ["OK", "Rejected.LimitExceeded"]
    with tenants.admin() as admin:
        reply = admin.call("RotateSecret", SecretName="a/db", VersionId="by-root")
    assert reply["VersionId"] == "by-root"
