"""Envelope format: round trips, layout, tampering and context binding."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from client import envelope
from client.errors import InvalidCiphertextError, KeyDisabledError

CHUNK = 64


def encrypt_bytes(kms, data: bytes, context=None, chunk_size: int = CHUNK) -> bytes:
    sink = io.BytesIO()
    envelope.encrypt_stream(kms, "alias/app", io.BytesIO(data), sink,
                            encryption_context=context, chunk_size=chunk_size)
    return sink.getvalue()


def decrypt_bytes(kms, sealed: bytes, context=None) -> bytes:
    sink = io.BytesIO()
    envelope.decrypt_stream(kms, io.BytesIO(sealed), sink, encryption_context=context)
    return sink.getvalue()


def header_length(sealed: bytes) -> int:
    fixed = envelope._FIXED_HEADER
    *_, blob_len, context_len = fixed.unpack(sealed[:fixed.size])
    return fixed.size + blob_len + context_len


def split_chunks(sealed: bytes, chunk_size: int = CHUNK) -> tuple[bytes, list[bytes]]:
    start = header_length(sealed)
    record = chunk_size + envelope.TAG_BYTES
    body = sealed[start:]
    return sealed[:start], [body[i:i + record] for i in range(0, len(body), record)]


def assert_decrypt_fails(kms, sealed: bytes, context=None) -> None:
    with pytest.raises(InvalidCiphertextError) as caught:
        decrypt_bytes(kms, sealed, context)
    assert caught.value.message == envelope.DECRYPT_FAILED_MESSAGE


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK,
                                  3 * CHUNK + 5])
def test_round_trip_small_sizes(fake_kms, size):
    """Data of any length, including 0 and chunk multiples, decrypts intact."""
    data = os.urandom(size)
    assert decrypt_bytes(fake_kms, encrypt_bytes(fake_kms, data)) == data


def test_round_trip_default_chunk_size(fake_kms):
    """The default 64 KiB chunking round-trips several chunks and a tail."""
    data = os.urandom(3 * envelope.DEFAULT_CHUNK_SIZE + 1000)
    sealed = encrypt_bytes(fake_kms, data, chunk_size=envelope.DEFAULT_CHUNK_SIZE)
    assert decrypt_bytes(fake_kms, sealed) == data


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_exact_multiple_adds_no_chunk(fake_kms, chunks):
    """A chunk-size multiple is sealed as exactly that many chunks."""
    sealed = encrypt_bytes(fake_kms, os.urandom(chunks * CHUNK))
    overhead = chunks * envelope.TAG_BYTES
    assert len(sealed) == header_length(sealed) + chunks * CHUNK + overhead


def test_empty_input_one_chunk(fake_kms):
    """An empty input is sealed as one empty final chunk: a bare tag."""
    sealed = encrypt_bytes(fake_kms, b"")
    assert len(sealed) == header_length(sealed) + envelope.TAG_BYTES


def test_header_fields_written(fake_kms):
    """The header carries magic, version, chunk size, blob and context."""
    sealed = encrypt_bytes(fake_kms, b"data", context={"b": "2", "a": "1"})
    fixed = envelope._FIXED_HEADER
    magic, version, chunk_size, _salt, blob_len, context_len = \
        fixed.unpack(sealed[:fixed.size])
    context = sealed[fixed.size + blob_len:fixed.size + blob_len + context_len]
    assert magic == b"KMSE"
    assert version == 1
    assert chunk_size == CHUNK
    assert blob_len == 36 + 12 + 32 + 16
    assert context == b'{"a":"1","b":"2"}'


def test_data_key_request_parameters(fake_kms):
    """GenerateDataKey is asked for 32 bytes under the key and context."""
    encrypt_bytes(fake_kms, b"x", context={"app": "x"})
    operation, params = fake_kms.calls[0]
    assert operation == "GenerateDataKey"
    assert params == {"KeyId": "alias/app", "NumberOfBytes": 32,
                      "EncryptionContext": {"app": "x"}}


def test_decrypt_sends_blob_and_context(fake_kms):
    """Decrypt sends the stored blob and the caller's context to the agent."""
    sealed = encrypt_bytes(fake_kms, b"x", context={"app": "x"})
    decrypt_bytes(fake_kms, sealed, context={"app": "x"})
    operation, params = fake_kms.calls[1]
    assert operation == "Decrypt"
    assert params["EncryptionContext"] == {"app": "x"}
    assert params["CiphertextBlob"].startswith(b"00000000-")


def test_base64_data_key_accepted(make_fake_kms):
    """An agent that returns the data key as Base64 text still works."""
    kms = make_fake_kms(base64_plaintext=True)
    data = os.urandom(200)
    assert decrypt_bytes(kms, encrypt_bytes(kms, data)) == data


def test_same_data_key_differs_per_file(make_fake_kms):
    """Two files under one reused data key get different GCM keys."""
    kms = make_fake_kms(fixed_data_key=bytes(range(32)))
    data = b"\x00" * CHUNK
    first = split_chunks(encrypt_bytes(kms, data))[1][0]
    second = split_chunks(encrypt_bytes(kms, data))[1][0]
    assert first != second


def test_file_cipher_zeroes_data_key():
    """Deriving the file key zeroes the data key buffer afterwards."""
    data_key = bytearray(os.urandom(32))
    envelope._file_cipher(data_key, os.urandom(32))
    assert data_key == bytearray(32)


def test_header_byte_flip_fails(fake_kms):
    """Flipping any single header byte makes decryption fail."""
    sealed = encrypt_bytes(fake_kms, os.urandom(2 * CHUNK + 3),
                           context={"app": "x"})
    for position in range(header_length(sealed)):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        assert_decrypt_fails(fake_kms, bytes(damaged), context={"app": "x"})


@pytest.mark.parametrize("chunk_index", [0, 1, 2])
def test_chunk_byte_flip_fails(fake_kms, chunk_index):
    """Flipping a byte inside any chunk makes decryption fail."""
    sealed = encrypt_bytes(fake_kms, os.urandom(2 * CHUNK + 3))
    header, chunks = split_chunks(sealed)
    damaged = bytearray(chunks[chunk_index])
    damaged[len(damaged) // 2] ^= 0x80
    chunks[chunk_index] = bytes(damaged)
    assert_decrypt_fails(fake_kms, header + b"".join(chunks))


def test_swapped_chunks_fail(fake_kms):
    """Swapping two chunks makes decryption fail."""
    header, chunks = split_chunks(encrypt_bytes(fake_kms, os.urandom(3 * CHUNK)))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    assert_decrypt_fails(fake_kms, header + b"".join(chunks))


@pytest.mark.parametrize("size", [3 * CHUNK, 3 * CHUNK + 7])
def test_dropped_last_chunk_fails(fake_kms, size):
    """Dropping the last chunk, full or partial, makes decryption fail."""
    header, chunks = split_chunks(encrypt_bytes(fake_kms, os.urandom(size)))
    assert_decrypt_fails(fake_kms, header + b"".join(chunks[:-1]))


def test_dropped_middle_chunk_fails(fake_kms):
    """Dropping a chunk in the middle makes decryption fail."""
    header, chunks = split_chunks(encrypt_bytes(fake_kms, os.urandom(3 * CHUNK)))
    assert_decrypt_fails(fake_kms, header + chunks[0] + chunks[2])


@pytest.mark.parametrize("cut", [1, envelope.TAG_BYTES, CHUNK + envelope.TAG_BYTES])
def test_truncated_stream_fails(fake_kms, cut):
    """Cutting bytes off the end makes decryption fail."""
    sealed = encrypt_bytes(fake_kms, os.urandom(2 * CHUNK + 9))
    assert_decrypt_fails(fake_kms, sealed[:-cut])


def test_header_only_fails(fake_kms):
    """A header with no chunk at all fails to decrypt."""
    sealed = encrypt_bytes(fake_kms, b"")
    assert_decrypt_fails(fake_kms, sealed[:header_length(sealed)])


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(CHUNK + envelope.TAG_BYTES)])
def test_appended_bytes_fail(fake_kms, extra):
    """Bytes appended after the last chunk make decryption fail."""
    sealed = encrypt_bytes(fake_kms, os.urandom(2 * CHUNK))
    assert_decrypt_fails(fake_kms, sealed + extra)


def test_appended_copied_chunk_fails(fake_kms):
    """Repeating the last chunk at the end makes decryption fail."""
    sealed = encrypt_bytes(fake_kms, os.urandom(2 * CHUNK))
    _header, chunks = split_chunks(sealed)
    assert_decrypt_fails(fake_kms, sealed + chunks[-1])


def test_chunk_from_other_file_fails(fake_kms):
    """A chunk spliced in from another file makes decryption fail."""
    header, chunks = split_chunks(encrypt_bytes(fake_kms, os.urandom(2 * CHUNK)))
    _other_header, other = split_chunks(encrypt_bytes(fake_kms, os.urandom(2 * CHUNK)))
    assert_decrypt_fails(fake_kms, header + chunks[0] + other[1])


@pytest.mark.parametrize("data", [b"", b"KMSE", b"not an envelope at all" * 4])
def test_foreign_input_fails(fake_kms, data):
    """Input that is not an envelope fails with the same error."""
    assert_decrypt_fails(fake_kms, data)


def test_wrong_context_fails(fake_kms):
    """A context that differs from the one used to encrypt fails."""
    sealed = encrypt_bytes(fake_kms, b"secret", context={"app": "x"})
    assert_decrypt_fails(fake_kms, sealed, context={"app": "y"})


def test_missing_context_fails(fake_kms):
    """Omitting the context that was used to encrypt fails."""
    sealed = encrypt_bytes(fake_kms, b"secret", context={"app": "x"})
    assert_decrypt_fails(fake_kms, sealed)


def test_unexpected_context_fails(fake_kms):
    """Giving a context when none was used to encrypt fails."""
    sealed = encrypt_bytes(fake_kms, b"secret")
    assert_decrypt_fails(fake_kms, sealed, context={"app": "x"})


def test_context_key_order_ignored(fake_kms):
    """The context matches whatever the order of its keys."""
    sealed = encrypt_bytes(fake_kms, b"secret", context={"a": "1", "b": "2"})
    assert decrypt_bytes(fake_kms, sealed, context={"b": "2", "a": "1"}) == b"secret"


def test_forged_header_context_fails(fake_kms):
    """Rewriting the stored context to the caller's one still fails."""
    sealed = encrypt_bytes(fake_kms, b"secret", context={"app": "x"})
    forged = sealed.replace(b'{"app":"x"}', b'{"app":"y"}')
    assert_decrypt_fails(fake_kms, forged, context={"app": "y"})


def test_agent_state_error_propagates(make_fake_kms, fake_kms):
    """A disabled key is reported as such, not as a damaged file."""
    sealed = encrypt_bytes(fake_kms, b"secret")
    disabled = make_fake_kms(fail_with=KeyDisabledError())
    with pytest.raises(KeyDisabledError):
        decrypt_bytes(disabled, sealed)


@pytest.mark.parametrize("context", [{"a": 1}, ["a"], {"a": None}])
def test_invalid_context_rejected(fake_kms, context):
    """A context that is not a map of strings is rejected before any call."""
    with pytest.raises(envelope.InvalidParameterError):
        encrypt_bytes(fake_kms, b"x", context=context)
    assert fake_kms.calls == []


@pytest.mark.parametrize("chunk_size", [0, envelope.MAX_CHUNK_SIZE + 1])
def test_invalid_chunk_size_rejected(fake_kms, chunk_size):
    """Chunk sizes outside 1 to MAX_CHUNK_SIZE are rejected."""
    with pytest.raises(envelope.InvalidParameterError):
        encrypt_bytes(fake_kms, b"x", chunk_size=chunk_size)


def test_huge_chunk_size_header_fails(fake_kms):
    """A header claiming chunks over MAX_CHUNK_SIZE fails before allocating."""
    sealed = bytearray(encrypt_bytes(fake_kms, b"x"))
    struct.pack_into(">I", sealed, 5, envelope.MAX_CHUNK_SIZE + 1)
    assert_decrypt_fails(fake_kms, bytes(sealed))


def test_short_reads_handled(fake_kms):
    """A source that returns short reads, like a pipe, still round-trips."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes):
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(size, 7) if size > 0 else 7)

    data = os.urandom(5 * CHUNK)
    sealed = io.BytesIO()
    envelope.encrypt_stream(fake_kms, "k", Trickle(data), sealed, chunk_size=CHUNK)
    plain = io.BytesIO()
    envelope.decrypt_stream(fake_kms, Trickle(sealed.getvalue()), plain)
    assert hashlib.sha256(plain.getvalue()).digest() == hashlib.sha256(data).digest()
