"""Envelope memory use: a 200 MB stream runs in a few chunks of memory."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc

from client import envelope

STREAM_BYTES = 200 * 1000 * 1000
PEAK_LIMIT = 4 * 1024 * 1024


class GeneratedSource:
    """A readable stream of ``size`` bytes made from one repeated block."""

    def __init__(self, size: int):
        self._block = memoryview(os.urandom(1 << 20) * 2)
        self._remaining = size
        self._offset = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = min(size, self._remaining, 1 << 20)
        data = bytes(self._block[self._offset:self._offset + size])
        self._offset = (self._offset + size) % (1 << 20)
        self._remaining -= size
        self.digest.update(data)
        return data


class HashingSink:
    """A writable stream that keeps only a SHA-256 and a byte count."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return len(data)


def test_memory_flat_on_200mb_pipe(fake_kms):
    """Encrypting into a pipe and decrypting from it keeps a small peak."""
    source = GeneratedSource(STREAM_BYTES)
    sink = HashingSink()
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def encrypt() -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe_in:
                envelope.encrypt_stream(fake_kms, "k", source, pipe_in)
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    tracemalloc.start()
    try:
        writer = threading.Thread(target=encrypt)
        writer.start()
        with os.fdopen(read_fd, "rb") as pipe_out:
            envelope.decrypt_stream(fake_kms, pipe_out, sink)
        writer.join()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors == []
    assert sink.count == STREAM_BYTES
    assert sink.digest.digest() == source.digest.digest()
    assert peak < PEAK_LIMIT
