"""GenerateRandom and GetRandomPassword: lengths, exclusions, bad combinations."""

from __future__ import annotations

import random
import string

import pytest

from agent.keys import random_ops
from agent.keys.random_ops import PasswordPolicy, generate_password
from client import errors
from tests.agent.test_versions import Agent
from tests.fakes import FakeKeystore

TYPES = {
    "Lowercase": set(string.ascii_lowercase),
    "Uppercase": set(string.ascii_uppercase),
    "Numbers": set(string.digits),
    "Punctuation": set(string.punctuation),
}


class CountingKeystore(FakeKeystore):
    """A fake keystore that records the lengths requested from its generator."""

    def __init__(self, name="default"):
        super().__init__(name)
        self.requests: list[int] = []

    async def random_bytes(self, length):
        self.requests.append(length)
        return await super().random_bytes(length)


@pytest.fixture
async def agent(tmp_path):
    instance = Agent(tmp_path / "data", keystore=CountingKeystore())
    instance.keys.keystores["other"] = CountingKeystore("other")
    yield instance
    await instance.store.aclose()


# --- GenerateRandom ----------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 32, 1024])
async def test_random_lengths(agent, length):
    """GenerateRandom returns exactly Length bytes from the keystore."""
    reply = await agent.call("GenerateRandom", Length=length)
    assert isinstance(reply["Random"], bytes)
    assert len(reply["Random"]) == length
    assert agent.keystore.requests == [length]


async def test_random_differs_per_call(agent):
    """Two 32-byte draws differ."""
    first = (await agent.call("GenerateRandom", Length=32))["Random"]
    second = (await agent.call("GenerateRandom", Length=32))["Random"]
    assert first != second


@pytest.mark.parametrize("length", [0, -1, 1025, 2**31])
async def test_random_length_bounds(agent, length):
    """Length outside 1 to 1024 is InvalidParameter and draws nothing."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GenerateRandom", Length=length)
    assert agent.keystore.requests == []


@pytest.mark.parametrize("length", ["32", 32.0, True, None])
async def test_random_length_type(agent, length):
    """A Length that is not an integer is invalid, and a missing one is missing."""
    expected = (errors.MissingParameterError if length is None
                else errors.InvalidParameterError)
    with pytest.raises(expected):
        await agent.call("GenerateRandom", Length=length)


async def test_random_named_keystore(agent):
    """DKMSInstanceId picks the keystore whose generator is used."""
    await agent.call("GenerateRandom", Length=16, DKMSInstanceId="other")
    assert agent.keys.keystores["other"].requests == [16]
    assert agent.keystore.requests == []


async def test_random_unknown_keystore(agent):
    """An unknown DKMSInstanceId is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GenerateRandom", Length=16, DKMSInstanceId="nowhere")


# --- GetRandomPassword through the API ------------------------------------------


async def test_password_defaults(agent):
    """By default: 32 characters with every type present."""
    password = (await agent.call("GetRandomPassword"))["RandomPassword"]
    assert isinstance(password, str)
    assert len(password) == 32
    for name, characters in TYPES.items():
        assert set(password) & characters, name


@pytest.mark.parametrize("length", [8, 9, 64, 128])
async def test_password_lengths(agent, length):
    """PasswordLength sets the number of characters."""
    reply = await agent.call("GetRandomPassword", PasswordLength=length)
    assert len(reply["RandomPassword"]) == length


@pytest.mark.parametrize("length", [0, 7, 129])
async def test_password_length_bounds(agent, length):
    """PasswordLength outside 8 to 128 is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GetRandomPassword", PasswordLength=length)


@pytest.mark.parametrize("excluded", list(TYPES))
async def test_password_excludes_type(agent, excluded):
    """An excluded type never appears, and every other type does."""
    for _ in range(20):
        reply = await agent.call("GetRandomPassword", PasswordLength=8,
                                 **{f"Exclude{excluded}": True})
        password = set(reply["RandomPassword"])
        assert not password & TYPES[excluded]
        for name, characters in TYPES.items():
            if name != excluded:
                assert password & characters, name


async def test_password_excludes_characters(agent):
    """ExcludeCharacters removes single characters from every type."""
    banned = "aeiouAEIOU01'\"\\` "
    for _ in range(20):
        reply = await agent.call("GetRandomPassword", PasswordLength=128,
                                 ExcludeCharacters=banned)
        assert not set(reply["RandomPassword"]) & set(banned)


async def test_password_accepts_text_flags(agent):
    """Exclude flags may be the strings true and false, as the cloud sends them."""
    reply = await agent.call("GetRandomPassword", ExcludeNumbers="true",
                             ExcludePunctuation="false")
    assert not set(reply["RandomPassword"]) & TYPES["Numbers"]


async def test_password_only_digits(agent):
    """With letters and punctuation excluded only digits remain."""
    reply = await agent.call("GetRandomPassword", ExcludeLowercase=True,
                             ExcludeUppercase=True, ExcludePunctuation=True)
    assert set(reply["RandomPassword"]) <= TYPES["Numbers"]


async def test_password_everything_excluded(agent):
    """Excluding every type is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GetRandomPassword", ExcludeLowercase=True,
                         ExcludeUppercase=True, ExcludeNumbers=True,
                         ExcludePunctuation=True)


async def test_password_all_characters_excluded(agent):
    """ExcludeCharacters listing every allowed character is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GetRandomPassword", ExcludeLowercase=True,
                         ExcludeUppercase=True, ExcludePunctuation=True,
                         ExcludeCharacters=string.digits)


async def test_password_unknown_parameter(agent):
    """An unknown parameter such as IncludeSpace is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GetRandomPassword", IncludeSpace=True)


# --- the generator ------------------------------------------------------------------


def test_generator_each_type_present():
    """Every included type appears in every password of the minimum length."""
    policy = PasswordPolicy(length=8)
    for _ in range(500):
        password = set(generate_password(policy))
        for name, characters in TYPES.items():
            assert password & characters, name


def test_generator_emptied_type_not_required():
    """A type emptied by ExcludeCharacters is no longer required."""
    policy = PasswordPolicy(length=8, exclude_characters=string.punctuation)
    for _ in range(100):
        assert not set(generate_password(policy)) & TYPES["Punctuation"]


def test_generator_single_allowed_character():
    """With one character left the password repeats it."""
    allowed = "7"
    banned = "".join(c for c in string.digits if c != allowed)
    policy = PasswordPolicy(
        length=8, exclude_characters=banned,
        excluded_types=frozenset({"Lowercase", "Uppercase", "Punctuation"}))
    assert generate_password(policy) == allowed * 8


def test_generator_without_requirement():
    """Without RequireEachIncludedType a password may lack a type."""
    policy = PasswordPolicy(length=8, require_each_included_type=False,
                            exclude_characters=string.ascii_letters + string.digits)
    # Only punctuation is left, so the draw is still well defined.
    assert set(generate_password(policy)) <= TYPES["Punctuation"]


def test_generator_length_below_types():
    """A length shorter than the required types is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        generate_password(PasswordPolicy(length=3))


def test_generator_length_below_types_optional():
    """Without the requirement a short length is allowed."""
    policy = PasswordPolicy(length=3, require_each_included_type=False)
    assert len(generate_password(policy)) == 3


def test_generator_uses_given_rng():
    """The same seeded generator yields the same password, and shuffles."""
    policy = PasswordPolicy(length=16)
    first = generate_password(policy, random.Random(7))
    assert first == generate_password(policy, random.Random(7))
    assert first != generate_password(policy, random.Random(8))


def test_generator_default_is_system_random():
    """Outside tests the generator draws from the OS CSPRNG."""
    assert isinstance(random_ops._SYSTEM_RANDOM, random.SystemRandom)


def test_generator_spreads_characters():
    """Over many draws every allowed character appears."""
    policy = PasswordPolicy(length=128)
    seen = set()
    for _ in range(50):
        seen |= set(generate_password(policy))
    assert seen == set().union(*TYPES.values())
