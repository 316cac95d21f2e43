"""Streaming envelope encryption of files under a data key from the agent.

A file is sealed under a fresh AES-256 data key from ``GenerateDataKey``.
Only the data key's ``CiphertextBlob`` is stored, so decrypting needs the
agent. The data is sealed in chunks, so memory stays flat whatever the
file size. Format version 1, all integers big-endian::

    header  magic "KMSE" | version u8 = 1 | chunk size u32 | salt[32]
            | blob length u16 | context length u16
            | CiphertextBlob | encryption context (canonical JSON, UTF-8)
    chunks  AES-256-GCM(plaintext chunk) || tag[16], one after another

Every chunk but the last contains exactly ``chunk size`` plaintext bytes
(1 byte to 16 MiB, 64 KiB by default). The last contains 0 to ``chunk
size`` bytes, so an empty file still has one. The GCM key of a file is
HKDF-SHA256(data key, salt, info="kms-agent envelope v1"), and chunk ``i``
uses the nonce 0x00000000 || u64(i). A counter cannot repeat within a
file, and the random salt gives every file its own key even if a data key
were ever used twice. The AAD of chunk ``i`` is SHA-256(header) || u64(i)
|| u8(1 if it is the last chunk, else 0). This binds the header to every
chunk, so changing, reordering, dropping, truncating or appending
anything fails to decrypt.

Every decrypt failure raises one ``InvalidCiphertextError``, whatever the
cause. The encryption context is bound twice: by the agent to the data
key's blob, and by the header hash to the chunks. Decrypting needs the
same context again.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.errors import (
    InternalFailureError,
    InvalidCiphertextError,
    InvalidParameterError,
    KmsError,
)

MAGIC = b"KMSE"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
DATA_KEY_BYTES = 32
TAG_BYTES = 16
SALT_BYTES = 32
HKDF_INFO = b"kms-agent envelope v1"

# magic, version, chunk size, salt, blob length, context length
_FIXED_HEADER = struct.Struct(f">4sBI{SALT_BYTES}sHH")
_CHUNK_AAD_SUFFIX = struct.Struct(">QB")
_NONCE = struct.Struct(">4xQ")

DECRYPT_FAILED_MESSAGE = (
    "The file cannot be decrypted: it is damaged or was changed, it is not an "
    "encrypted file of this format, or the encryption context does not match."
)

Progress = Callable[[int], None]


class KmsCaller(Protocol):
    """The part of ``client.sync.KmsClient`` that envelope encryption uses."""

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        ...


def encrypt_stream(kms: KmsCaller, key_id: str, source: BinaryIO, sink: BinaryIO, *,
                   encryption_context: Mapping[str, str] | None = None,
                   chunk_size: int = DEFAULT_CHUNK_SIZE,
                   progress: Progress | None = None) -> None:
    """Encrypt ``source`` into ``sink`` under a new data key of ``key_id``.

    Args:
        kms: the agent client; ``GenerateDataKey`` is called once.
        key_id: the key id, alias or ARN of the master key.
        source, sink: binary streams; both are read or written in chunks.
        encryption_context: string pairs bound to the data key and header.
        chunk_size: plaintext bytes per chunk, 1 to ``MAX_CHUNK_SIZE``.
        progress: called with the number of plaintext bytes read so far.

    Raises:
        InvalidParameterError: the context or chunk size is invalid.
        KmsError: the agent refused or failed ``GenerateDataKey``.
        OSError: reading or writing a stream failed.
    """
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidParameterError(
            f"The chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {chunk_size}.")
    context = canonical_context(encryption_context)
    params: dict[str, Any] = {"KeyId": key_id, "NumberOfBytes": DATA_KEY_BYTES}
    if encryption_context:
        params["EncryptionContext"] = dict(encryption_context)
    reply = kms.call("GenerateDataKey", **params)
    data_key = _data_key_from(reply.pop("Plaintext", None))
    if data_key is None:
        raise InternalFailureError("The agent returned a data key of the wrong size.")

    salt = os.urandom(SALT_BYTES)
    header = _pack_header(chunk_size, salt, reply["CiphertextBlob"], context)
    aead = _file_cipher(data_key, salt)
    sink.write(header)
    _encrypt_chunks(aead, hashlib.sha256(header).digest(), source, sink,
                    chunk_size, progress)


def decrypt_stream(kms: KmsCaller, source: BinaryIO, sink: BinaryIO, *,
                   encryption_context: Mapping[str, str] | None = None,
                   progress: Progress | None = None) -> None:
    """Decrypt a stream written by ``encrypt_stream`` into ``sink``.

    Each chunk is written to ``sink`` only after its tag is verified, but a
    failure on a later chunk leaves the earlier ones written. Callers that
    write to a file should use ``decrypt_file``, which removes them.

    Args:
        kms: the agent client; ``Decrypt`` is called once.
        source, sink: binary streams; both are read or written in chunks.
        encryption_context: the context given when the file was encrypted.
        progress: called with the number of input bytes read so far.

    Raises:
        InvalidCiphertextError: the input cannot be decrypted, for any reason.
        InvalidParameterError: the context given is invalid.
        KmsError: the agent refused ``Decrypt`` for a reason that is not
            about the blob, such as a disabled key or a denied permission.
        OSError: reading or writing a stream failed.
    """
    context = canonical_context(encryption_context)
    header, chunk_size, salt, blob, stored_context = _read_header(source)
    if not hmac.compare_digest(stored_context, context):
        raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE)
    data_key = _decrypt_data_key(kms, blob, encryption_context)

    aead = _file_cipher(data_key, salt)
    if progress is not None:
        progress(len(header))
    _decrypt_chunks(aead, hashlib.sha256(header).digest(), source, sink,
                    chunk_size, len(header), progress)


def encrypt_file(kms: KmsCaller, key_id: str, in_path: str, out_path: str, *,
                 encryption_context: Mapping[str, str] | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Progress | None = None) -> None:
    """Encrypt the file ``in_path`` into ``out_path``; ``-`` means stdin/stdout.

    The output is written to a temporary file beside ``out_path`` and
    renamed over it only on success, so a failure never creates
    ``out_path``. Arguments and errors are those of ``encrypt_stream``.
    """
    with _open_input(in_path) as source, _atomic_output(out_path) as sink:
        encrypt_stream(kms, key_id, source, sink,
                       encryption_context=encryption_context,
                       chunk_size=chunk_size, progress=progress)


def decrypt_file(kms: KmsCaller, in_path: str, out_path: str, *,
                 encryption_context: Mapping[str, str] | None = None,
                 progress: Progress | None = None) -> None:
    """Decrypt the file ``in_path`` into ``out_path``; ``-`` means stdin/stdout.

    The output is renamed into place only once every chunk has verified.
    With ``-`` as ``out_path`` there is no temporary file, so chunks that
    verified stay written when a later one fails; only the error shows it.
    Arguments and errors are those of ``decrypt_stream``.
    """
    with _open_input(in_path) as source, _atomic_output(out_path) as sink:
        decrypt_stream(kms, source, sink, encryption_context=encryption_context,
                       progress=progress)


def input_size(path: str) -> int | None:
    """Return the size of a regular input file, or None for stdin and pipes."""
    if path == "-":
        return None
    with contextlib.suppress(OSError):
        status = os.stat(path)
        if stat.S_ISREG(status.st_mode):
            return status.st_size
    return None


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """Return the context as JSON with sorted keys and no spaces, in UTF-8.

    Raises:
        InvalidParameterError: the context is not a map of strings to
            strings, or its JSON exceeds 65,535 bytes.
    """
    context = context or {}
    valid = isinstance(context, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items())
    if not valid:
        raise InvalidParameterError(
            "The encryption context must be a JSON object of strings to strings.")
    encoded = json.dumps(dict(context), sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise InvalidParameterError("The encryption context exceeds 65,535 bytes.")
    return encoded


def _pack_header(chunk_size: int, salt: bytes, blob: bytes, context: bytes) -> bytes:
    if not isinstance(blob, (bytes, bytearray)) or not 0 < len(blob) <= 0xFFFF:
        raise InternalFailureError("The agent returned an invalid CiphertextBlob.")
    fixed = _FIXED_HEADER.pack(MAGIC, FORMAT_VERSION, chunk_size, salt,
                               len(blob), len(context))
    return fixed + bytes(blob) + context


def _read_header(source: BinaryIO) -> tuple[bytes, int, bytes, bytes, bytes]:
    """Read and check the header; return it with its parsed fields."""
    fixed = _read_exact(source, _FIXED_HEADER.size)
    magic, version, chunk_size, salt, blob_len, context_len = \
        _FIXED_HEADER.unpack(fixed)
    valid = (magic == MAGIC and version == FORMAT_VERSION
             and 1 <= chunk_size <= MAX_CHUNK_SIZE and blob_len > 0)
    if not valid:
        raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE)
    blob = _read_exact(source, blob_len)
    context = _read_exact(source, context_len)
    return fixed + blob + context, chunk_size, salt, blob, context


def _read_exact(source: BinaryIO, size: int) -> bytes:
    data = _read_full(source, size)
    if len(data) != size:
        raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE)
    return data


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at end of stream.

    A pipe may return short reads before its end, so one ``read`` is not
    enough to tell a full chunk from the last one.
    """
    first = source.read(size)
    if not first or len(first) == size:
        return first or b""
    parts = [first]
    remaining = size - len(first)
    while remaining:
        part = source.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _decrypt_data_key(kms: KmsCaller, blob: bytes,
                      encryption_context: Mapping[str, str] | None) -> bytearray:
    params: dict[str, Any] = {"CiphertextBlob": blob}
    if encryption_context:
        params["EncryptionContext"] = dict(encryption_context)
    try:
        reply = kms.call("Decrypt", **params)
    except KmsError as error:
        # Statuses 400 and 404 mean the blob or its context is wrong. Other
        # statuses (a disabled key, no permission, throttling, an unreachable
        # agent) are not about the file, and the caller can act on them.
        if error.http_status in (400, 404):
            raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE) from None
        raise
    data_key = _data_key_from(reply.pop("Plaintext", None))
    if data_key is None:
        raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE)
    return data_key


def _data_key_from(plaintext: Any) -> bytearray | None:
    """Return the 32-byte data key of a reply, or None if it has none.

    The cloud API encrypts the Base64 text of a data key, so an agent that
    follows it returns 44 bytes of Base64 from ``Decrypt``. Both forms are
    accepted.
    """
    if isinstance(plaintext, str):
        plaintext = plaintext.encode("ascii", "replace")
    if not isinstance(plaintext, (bytes, bytearray)):
        return None
    if len(plaintext) == DATA_KEY_BYTES:
        return bytearray(plaintext)
    if len(plaintext) == 44:
        with contextlib.suppress(binascii.Error, ValueError):
            decoded = base64.b64decode(plaintext, validate=True)
            if len(decoded) == DATA_KEY_BYTES:
                return bytearray(decoded)
    return None


def _file_cipher(data_key: bytearray, salt: bytes) -> AESGCM:
    """Derive the file key and return its cipher; zero both key buffers.

    The AESGCM object keeps its own copy of the file key, which Python
    cannot reach to zero; it is freed with the object. The immutable
    ``bytes`` the agent client returned are out of reach too.
    """
    file_key = bytearray(DATA_KEY_BYTES)
    try:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=DATA_KEY_BYTES, salt=salt,
                    info=HKDF_INFO)
        if hasattr(hkdf, "derive_into"):
            hkdf.derive_into(data_key, file_key)
        else:
            # NOTE: cryptography before 47 has no derive_into, so this copy
            # of the file key is immutable bytes that cannot be zeroed.
            file_key[:] = hkdf.derive(bytes(data_key))
        return AESGCM(file_key)
    finally:
        _zero(data_key)
        _zero(file_key)


def _zero(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))


def _chunk_aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return header_hash + _CHUNK_AAD_SUFFIX.pack(index, 1 if final else 0)


def _encrypt_chunks(aead: AESGCM, header_hash: bytes, source: BinaryIO,
                    sink: BinaryIO, chunk_size: int,
                    progress: Progress | None) -> None:
    done = 0
    for index, chunk, final in _chunks(source, chunk_size):
        sealed = aead.encrypt(_NONCE.pack(index), chunk,
                              _chunk_aad(header_hash, index, final))
        sink.write(sealed)
        done += len(chunk)
        if progress is not None:
            progress(done)


def _decrypt_chunks(aead: AESGCM, header_hash: bytes, source: BinaryIO,
                    sink: BinaryIO, chunk_size: int, done: int,
                    progress: Progress | None) -> None:
    for index, sealed, final in _chunks(source, chunk_size + TAG_BYTES):
        try:
            chunk = aead.decrypt(_NONCE.pack(index), sealed,
                                 _chunk_aad(header_hash, index, final))
        except InvalidTag:
            raise InvalidCiphertextError(DECRYPT_FAILED_MESSAGE) from None
        sink.write(chunk)
        done += len(sealed)
        if progress is not None:
            progress(done)


def _chunks(source: BinaryIO, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (index, data, is_last) for records of ``size`` bytes.

    A full record is the last one only when nothing follows it, so each
    record is yielded once the next one has been read. At least one record
    is yielded, an empty one for an empty stream.
    """
    current = _read_full(source, size)
    index = 0
    while True:
        following = _read_full(source, size) if len(current) == size else b""
        yield index, current, not following
        if not following:
            return
        current = following
        index += 1


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as source:
        yield source


@contextlib.contextmanager
def _atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a file that replaces ``path`` only if the block succeeds.

    The temporary file is created beside ``path`` with mode 0600, so the
    rename stays within one file system and the plaintext is never
    readable by others while it is written.
    """
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    fd, temp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
