"""Convert between the cloud API's text values and the operation table's.

The OpenAPI face sends every parameter as text; the operation schemas
(``agent.rpc.params``) declare the kind of each. Binary parameters arrive
as Base64, integers as decimal text, and booleans as ``true``/``false``
in any case (the Python SDK sends ``True``). Maps and lists stay JSON
text, which ``parse_params`` reads. Replies go back as JSON, with bytes
as Base64.

Some parameters the schema takes as ``PLAINTEXT`` are Base64 in the
cloud API (``BASE64_TEXT_PARAMS``), and so is SecretData when
SecretDataType is ``binary``.

Decrypt is the one reply rendered by hand. Alibaba Cloud KMS treats a
plaintext as UTF-8 text, and GenerateDataKey encrypts the Base64 text of
the data key, so its Decrypt returns that text. The agent's blobs hold
the raw data key and mark it with format byte 2 (``agent.keys.blob``),
so a data key blob decrypts here to the Base64 text of the key, as in
the cloud; any other blob decrypts to its plaintext as UTF-8 text.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from agent.keys.blob import FORMAT_DATA_KEY, VERSION_ID_BYTES
from agent.rpc.dispatch import Operation
from agent.rpc.params import BYTES, INT
from client.errors import InvalidParameterError, UnsupportedOperationError

BASE64_TEXT_PARAMS = frozenset({
    ("AsymmetricEncrypt", "Plaintext"), ("GenerateMac", "Message"),
    ("VerifyMac", "Message"),
})
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def decode_params(operation: Operation | None, raw: dict[str, str]) -> dict[str, Any]:
    """Convert text parameters to the kinds ``operation`` declares.

    Parameters the schema does not name pass through as text, for
    ``parse_params`` to reject by name. With no operation (an unknown
    action) everything passes through.

    Raises:
        InvalidParameterError: a value is not valid Base64 or an integer.
    """
    if operation is None:
        return dict(raw)
    kinds = {param.name: param.kind for param in operation.params}
    values: dict[str, Any] = {}
    for name, text in raw.items():
        kind = kinds.get(name)
        if kind == BYTES or (operation.name, name) in BASE64_TEXT_PARAMS:
            values[name] = decode_base64(name, text)
        elif kind == INT:
            values[name] = decode_integer(name, text)
        else:
            values[name] = text
    if raw.get("SecretDataType") == "binary" and "SecretData" in raw:
        values["SecretData"] = decode_base64("SecretData", raw["SecretData"])
    return values


def decode_base64(name: str, text: str) -> bytes:
    """Decode standard Base64 text, with padding.

    Raises:
        InvalidParameterError: naming the parameter.
    """
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidParameterError(
            f"The parameter {name} must be Base64 text.") from None


def decode_integer(name: str, text: str) -> int:
    """Parse a decimal integer.

    Raises:
        InvalidParameterError: naming the parameter.
    """
    if not _INTEGER.fullmatch(text):
        raise InvalidParameterError(f"The parameter {name} must be an integer.")
    return int(text)


def encode_reply(value: Any) -> Any:
    """Return ``value`` with bytes as Base64 text, for a JSON reply."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: encode_reply(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_reply(item) for item in value]
    return value


def is_data_key_blob(blob: bytes) -> bool:
    """Return whether a (decrypted, hence valid) blob contains a data key."""
    return len(blob) > VERSION_ID_BYTES and blob[VERSION_ID_BYTES] == FORMAT_DATA_KEY


def render_plaintext(blob: bytes, plaintext: bytes) -> str:
    """Return the Plaintext text of a Decrypt reply on the OpenAPI face.

    Raises:
        UnsupportedOperationError: the plaintext is binary, which this
            face cannot return; the msgpack socket and the
            dedicated-instance protocol return bytes.
    """
    if is_data_key_blob(blob):
        return base64.b64encode(plaintext).decode("ascii")
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedOperationError(
            "The plaintext is binary, and the OpenAPI face returns plaintext "
            "as UTF-8 text; decrypt it over the agent socket or the "
            "dedicated-instance protocol.") from None
