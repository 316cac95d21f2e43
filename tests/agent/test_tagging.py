"""TagResource and UntagResource on secrets and certificates, and their errors."""

from __future__ import annotations

import pytest

from agent import tagging
from client import errors
from tests.agent.secret_harness import SecretAgent
from tests.agent.test_certificates import Agent as CertificateAgent
from tests.agent.test_certificates import agent as certificate_agent  # noqa: F401


@pytest.fixture
async def secrets(tmp_path):
    instance = SecretAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def secret_tags(agent, name="app/db") -> list[dict]:
    described = await agent.call("DescribeSecret", SecretName=name, FetchTags=True)
    return described["Tags"]["Tag"]


async def test_secret_tagged_and_untagged(secrets):
    """Tags set on a secret show in DescribeSecret; untagging removes only named keys."""
    await secrets.create()
    await secrets.call("TagResource", SecretName="app/db", Tags=[
        {"TagKey": "team", "TagValue": "pay"}, {"TagKey": "env", "TagValue": "prod"}])
    assert sorted((t["TagKey"], t["TagValue"]) for t in await secret_tags(secrets)) == [
        ("env", "prod"), ("team", "pay")]
    await secrets.call("UntagResource", SecretName="app/db", TagKeys=["env", "none"])
    assert await secret_tags(secrets) == [{"TagKey": "team", "TagValue": "pay"}]


async def test_secret_tag_errors(secrets):
    """Unknown, deleted and over-tagged secrets, and reserved keys, are rejected."""
    with pytest.raises(errors.ResourceNotFoundError):
        await secrets.call("TagResource", SecretName="nope",
                           Tags=[{"TagKey": "a", "TagValue": "b"}])
    await secrets.create()
    with pytest.raises(errors.InvalidParameterError, match="acs:"):
        await secrets.call("TagResource", SecretName="app/db",
                           Tags=[{"TagKey": "acs:x", "TagValue": "b"}])
    for batch in range(2):
        await secrets.call("TagResource", SecretName="app/db", Tags=[
            {"TagKey": f"k{batch}-{n}", "TagValue": "v"} for n in range(10)])
    with pytest.raises(errors.LimitExceededError):
        await secrets.call("TagResource", SecretName="app/db",
                           Tags=[{"TagKey": "one-more", "TagValue": "v"}])
    await secrets.call("DeleteSecret", SecretName="app/db")
    with pytest.raises(errors.ResourceInDeleteWindowError):
        await secrets.call("UntagResource", SecretName="app/db", TagKeys=["k0-0"])


@pytest.mark.parametrize("params, error", [
    ({}, errors.MissingParameterError),
    ({"KeyId": "k", "SecretName": "app/db"}, errors.InvalidParameterError),
    ({"SecretName": "app/db", "CertificateId": "c"}, errors.InvalidParameterError),
])
async def test_exactly_one_resource_named(secrets, params, error):
    """A request must name exactly one of KeyId, SecretName and CertificateId."""
    await secrets.create()
    with pytest.raises(error, match="KeyId, SecretName or CertificateId"):
        await secrets.call("TagResource", Tags=[{"TagKey": "a", "TagValue": "b"}],
                           **params)


async def test_certificate_tagged_and_untagged(certificate_agent):  # noqa: F811
    """Tags set on a certificate show in DescribeCertificate."""
    agent: CertificateAgent = certificate_agent
    agent.dispatcher.operations.update(
        {operation.name: operation for operation in tagging.OPERATIONS})
    certificate_id, _ = await agent.create("EC_P256")
    await agent.call("TagResource", CertificateId=certificate_id,
                     Tags=[{"TagKey": "team", "TagValue": "web"}])
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["Tags"] == {"Tag": [{"TagKey": "team", "TagValue": "web"}]}
    await agent.call("UntagResource", CertificateId=certificate_id, TagKeys=["team"])
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["Tags"] == {"Tag": []}
    with pytest.raises(errors.CertificateNotFoundError):
        await agent.call("TagResource", CertificateId="cert-none",
                         Tags=[{"TagKey": "a", "TagValue": "b"}])
