"""The encrypt-file figure and its file floor, on one large file.

The input is a sparse file of zeros, so making it writes nothing to disk
and reading it costs no disk I/O; AES-GCM runs at the same speed on any
data. The output is a real file in the run's temporary directory, removed
after each measurement.

``encrypt_file`` runs ``kmsctl encrypt-file`` as a child process, as a
user would, so the figure includes starting Python and connecting.
``seal_file`` is its floor: the same read, AES-GCM seal, write and fsync
of the output (``kmsctl`` syncs its output before renaming it), in this
process, with no agent and no file format.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.envelope import DEFAULT_CHUNK_SIZE

# A 1 GiB file took about 3 s on the machine of bench/README.md.
TIMEOUT_S = 300.0


class FileCommandError(RuntimeError):
    """``kmsctl encrypt-file`` failed."""


def make_sparse_file(path: Path, size: int) -> Path:
    """Create a sparse file of ``size`` zero bytes at ``path``; return the path."""
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def encrypt_file(socket_path: Path, key_id: str, source: Path) -> dict[str, float]:
    """Run ``kmsctl encrypt-file`` on ``source`` and return its throughput.

    The figure is ``bytes_per_s`` of plaintext, from the command's wall
    time. The output is deleted afterwards.

    Raises:
        FileCommandError: the command failed or timed out.
    """
    target = source.with_name(source.name + ".kmse")
    command = [sys.executable, "-c", "from client.cli import main; main()",
               "--socket", str(socket_path), "encrypt-file", "--KeyId", key_id,
               str(source), str(target)]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                                   cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        raise FileCommandError(f"encrypt-file timed out after {TIMEOUT_S:.0f} s") \
            from None
    elapsed = time.perf_counter() - started
    try:
        if completed.returncode != 0:
            raise FileCommandError(f"encrypt-file exited with status "
                                   f"{completed.returncode}: {completed.stderr[-500:]}")
        if target.stat().st_size <= source.stat().st_size:
            raise FileCommandError("encrypt-file wrote less than its input")
    finally:
        target.unlink(missing_ok=True)
    return {"bytes_per_s": source.stat().st_size / elapsed, "seconds": elapsed}


def seal_file(source: Path) -> dict[str, float]:
    """Seal ``source`` chunk by chunk into a synced file; return the throughput.

    Each 64 KiB chunk gets its own counter nonce and 41 bytes of AAD, as
    in ``client.envelope``. The figure is ``bytes_per_s`` of plaintext.
    """
    aead = AESGCM(AESGCM.generate_key(256))
    aad = bytes(41)
    target = source.with_name(source.name + ".floor")
    started = time.perf_counter()
    try:
        with open(source, "rb") as reader, open(target, "wb") as writer:
            for index, chunk in enumerate(iter(
                    lambda: reader.read(DEFAULT_CHUNK_SIZE), b"")):
                writer.write(aead.encrypt(index.to_bytes(12, "big"), chunk, aad))
            os.fsync(writer.fileno())
        elapsed = time.perf_counter() - started
    finally:
        target.unlink(missing_ok=True)
    return {"bytes_per_s": source.stat().st_size / elapsed, "seconds": elapsed}
