"""GenerateRandom and GetRandomPassword.

GenerateRandom returns 1 to 1024 bytes from a keystore's generator: the
token's C_GenerateRandom for a PKCS#11 keystore, the operating system's
for a software one. It uses the default keystore unless DKMSInstanceId
names another.

GetRandomPassword returns 8 to 128 characters (32 by default) drawn with
the operating system's CSPRNG (``secrets``) from lowercase and uppercase
ASCII letters, digits and ASCII punctuation, less the excluded types and
characters. With RequireEachIncludedType (the default) every type that
still has characters appears at least once.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import string
from typing import Any

from agent.context import RequestContext
from agent.keystore.base import Keystore
from agent.rpc.dispatch import CRYPTO, Operation
from agent.rpc.params import BOOL, INT, Param
from client.errors import InvalidParameterError

MAX_RANDOM_BYTES = 1024
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
DEFAULT_PASSWORD_LENGTH = 32
# Character types in the order of the Exclude* parameters.
CHARACTER_TYPES = {
    "Lowercase": string.ascii_lowercase,
    "Uppercase": string.ascii_uppercase,
    "Numbers": string.digits,
    "Punctuation": string.punctuation,
}
_SYSTEM_RANDOM = secrets.SystemRandom()


@dataclasses.dataclass(frozen=True)
class PasswordPolicy:
    """The rules of a GetRandomPassword request.

    ``excluded_types`` names types by their CHARACTER_TYPES key.
    """

    length: int = DEFAULT_PASSWORD_LENGTH
    exclude_characters: str = ""
    excluded_types: frozenset[str] = frozenset()
    require_each_included_type: bool = True


def included_types(policy: PasswordPolicy) -> list[str]:
    """Return the characters of each type the policy allows, empty ones left out."""
    removed = set(policy.exclude_characters)
    found = []
    for name, characters in CHARACTER_TYPES.items():
        if name in policy.excluded_types:
            continue
        allowed = "".join(c for c in characters if c not in removed)
        if allowed:
            found.append(allowed)
    return found


def generate_password(policy: PasswordPolicy,
                      rng: random.Random = _SYSTEM_RANDOM) -> str:
    """Draw a password that meets ``policy``.

    With ``require_each_included_type``, one character of each included
    type is drawn first, the rest from all allowed characters, and the
    result is shuffled. ``rng`` must be a CSPRNG outside tests.

    Raises:
        InvalidParameterError: no character is allowed, or the length is
            shorter than the number of types that must appear.
    """
    types = included_types(policy)
    if not types:
        raise InvalidParameterError(
            "GetRandomPassword excludes every character; include at least one "
            "character type.")
    required = types if policy.require_each_included_type else []
    if policy.length < len(required):
        raise InvalidParameterError(
            f"PasswordLength {policy.length} is shorter than the {len(required)} "
            "character types that RequireEachIncludedType requires.")
    alphabet = "".join(types)
    chosen = [rng.choice(characters) for characters in required]
    chosen += [rng.choice(alphabet) for _ in range(policy.length - len(chosen))]
    rng.shuffle(chosen)
    return "".join(chosen)


async def random_bytes(keystores: dict[str, Keystore], name: str,
                       length: int) -> bytes:
    """Return ``length`` bytes from the generator of keystore ``name``.

    Raises:
        InvalidParameterError: no keystore has that name.
    """
    keystore = keystores.get(name)
    if keystore is None:
        raise InvalidParameterError(f"DKMSInstanceId {name!r} is not a keystore.")
    return await keystore.random_bytes(length)


# --- operations --------------------------------------------------------------


async def generate_random(services: Any, ctx: RequestContext, values: dict) -> dict:
    keys = services.keys
    name = values.get("DKMSInstanceId") or keys.default_keystore
    return {"Random": await random_bytes(keys.keystores, name, values["Length"])}


async def get_random_password(services: Any, ctx: RequestContext,
                              values: dict) -> dict:
    policy = PasswordPolicy(
        length=values.get("PasswordLength", DEFAULT_PASSWORD_LENGTH),
        exclude_characters=values.get("ExcludeCharacters", ""),
        excluded_types=frozenset(
            name for name in CHARACTER_TYPES if values.get(f"Exclude{name}")),
        require_each_included_type=values.get("RequireEachIncludedType", True))
    return {"RandomPassword": generate_password(policy)}


OPERATIONS = [
    Operation("GenerateRandom", generate_random,
              (Param("Length", INT, required=True, low=1, high=MAX_RANDOM_BYTES),
               Param("DKMSInstanceId", high=64)),
              permission="kms:GenerateRandom", group=CRYPTO),
    Operation("GetRandomPassword", get_random_password,
              (Param("PasswordLength", INT, low=MIN_PASSWORD_LENGTH,
                     high=MAX_PASSWORD_LENGTH),
               Param("ExcludeCharacters", high=1024),
               *(Param(f"Exclude{name}", BOOL) for name in CHARACTER_TYPES),
               Param("RequireEachIncludedType", BOOL)),
              permission="kms:GetRandomPassword", group=CRYPTO),
]
