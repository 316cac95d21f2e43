"""HMAC keys, GenerateMac and VerifyMac through the dispatcher.

The keystore is the real SoftwareKeystore, so every spec runs at SOFTWARE
level here; HSM HMAC keys are covered in tests/keystore and
tests/integration.
"""

from __future__ import annotations

import pytest

from client import errors
from tests.agent.test_asymmetric import agent  # noqa: F401  (fixture)

SPECS = {"HMAC_SHA_256": 32, "HMAC_SHA_384": 48, "HMAC_SHA_512": 64, "HMAC_SM3": 32}


async def mac_key(agent, spec: str = "HMAC_SHA_256") -> str:
    return (await agent.new_key(KeySpec=spec))[0]


async def test_hmac_key_defaults(agent):
    """An HMAC key has KeyUsage GENERATE/VERIFY_MAC and one version."""
    meta = (await agent.call("CreateKey", KeySpec="HMAC_SM3"))["KeyMetadata"]
    versions = await agent.call("ListKeyVersions", KeyId=meta["KeyId"])
    assert meta["KeyUsage"] == "GENERATE/VERIFY_MAC"
    assert meta["ProtectionLevel"] == "SOFTWARE"
    assert versions["TotalCount"] == 1


async def test_hmac_key_usage_checked(agent):
    """An HMAC key with KeyUsage ENCRYPT/DECRYPT is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("CreateKey", KeySpec="HMAC_SHA_256",
                         KeyUsage="ENCRYPT/DECRYPT")


@pytest.mark.parametrize("spec,length", SPECS.items())
async def test_mac_length_per_spec(agent, spec, length):
    """GenerateMac returns a MAC as long as the spec's hash output."""
    key_id = await mac_key(agent, spec)
    reply = await agent.call("GenerateMac", KeyId=key_id, Algorithm=spec,
                             Message=b"message")
    assert len(reply["Mac"]) == length
    assert reply["KeyId"] == key_id


@pytest.mark.parametrize("spec", SPECS)
async def test_verify_mac_round_trip(agent, spec):
    """VerifyMac accepts the MAC of the message and rejects any change."""
    key_id = await mac_key(agent, spec)
    mac = (await agent.call("GenerateMac", KeyId=key_id, Algorithm=spec,
                            Message=b"message"))["Mac"]
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    cases = [(b"message", mac, True), (b"messagE", mac, False),
             (b"message", flipped, False), (b"message", mac[:-1], False)]
    for message, value, expected in cases:
        reply = await agent.call("VerifyMac", KeyId=key_id, Algorithm=spec,
                                 Message=message, Mac=value)
        assert reply["Value"] is expected


async def test_mac_is_deterministic(agent):
    """The same key and message give the same MAC; other keys differ."""
    first = await mac_key(agent)
    second = await mac_key(agent)
    macs = [(await agent.call("GenerateMac", KeyId=key, Algorithm="HMAC_SHA_256",
                              Message=b"m"))["Mac"] for key in (first, first, second)]
    assert macs[0] == macs[1]
    assert macs[0] != macs[2]


async def test_wrong_mac_algorithm(agent):
    """An Algorithm other than the key's spec is InvalidParameter."""
    key_id = await mac_key(agent, "HMAC_SHA_256")
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.call("GenerateMac", KeyId=key_id, Algorithm="HMAC_SHA_512",
                         Message=b"m")
    assert "HMAC_SHA_256" in caught.value.message


async def test_message_limit(agent):
    """Messages of up to 4 KiB are accepted; longer ones are InvalidParameter."""
    key_id = await mac_key(agent)
    params = dict(KeyId=key_id, Algorithm="HMAC_SHA_256")
    await agent.call("GenerateMac", Message=bytes(4096), **params)
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GenerateMac", Message=bytes(4097), **params)


async def test_symmetric_key_cannot_mac(agent):
    """GenerateMac with an AES key is UnsupportedOperation."""
    key_id, _ = await agent.new_key()
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("GenerateMac", KeyId=key_id, Algorithm="HMAC_SHA_256",
                         Message=b"m")


async def test_hmac_key_cannot_encrypt(agent):
    """Encrypt with an HMAC key is UnsupportedOperation."""
    key_id = await mac_key(agent)
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")


async def test_hmac_key_has_one_version(agent):
    """CreateKeyVersion on an HMAC key is UnsupportedOperation."""
    key_id = await mac_key(agent)
    agent.clock.advance(days=8)
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("CreateKeyVersion", KeyId=key_id)


async def test_disabled_hmac_key(agent):
    """GenerateMac on a disabled key is Rejected.Disabled."""
    key_id = await mac_key(agent)
    await agent.call("DisableKey", KeyId=key_id)
    with pytest.raises(errors.KeyDisabledError):
        await agent.call("GenerateMac", KeyId=key_id, Algorithm="HMAC_SHA_256",
                         Message=b"m")


async def test_hsm_hmac_unavailable_here(agent):
    """The software keystore has no HSM, so HMAC at HSM level is refused."""
    with pytest.raises(errors.UnsupportedProtectionLevelError):
        await agent.call("CreateKey", KeySpec="HMAC_SHA_256", ProtectionLevel="HSM")
