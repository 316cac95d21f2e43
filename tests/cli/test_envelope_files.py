"""Envelope files: atomic output, stdin and stdout, and progress reports."""

from __future__ import annotations

import io
import os
import stat
import sys

import pytest

from client import envelope
from client.errors import InvalidCiphertextError, ThrottlingError


class StdStream:
    """A stand-in for sys.stdin or sys.stdout with a binary ``buffer``."""

    def __init__(self, data: bytes = b""):
        self.buffer = io.BytesIO(data)


def seal_file(kms, tmp_path, data: bytes, context=None):
    source = tmp_path / "plain.bin"
    source.write_bytes(data)
    sealed = tmp_path / "sealed.kmse"
    envelope.encrypt_file(kms, "alias/app", str(source), str(sealed),
                          encryption_context=context, chunk_size=100)
    return sealed


def test_file_round_trip(fake_kms, tmp_path):
    """A file encrypted to disk decrypts back to the same bytes."""
    data = os.urandom(1234)
    sealed = seal_file(fake_kms, tmp_path, data, context={"app": "x"})
    output = tmp_path / "out.bin"
    envelope.decrypt_file(fake_kms, str(sealed), str(output),
                          encryption_context={"app": "x"})
    assert output.read_bytes() == data


def test_output_files_private(fake_kms, tmp_path):
    """Sealed and decrypted files are created readable by the owner only."""
    sealed = seal_file(fake_kms, tmp_path, b"secret")
    output = tmp_path / "out.bin"
    envelope.decrypt_file(fake_kms, str(sealed), str(output))
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_failed_decrypt_leaves_no_output(fake_kms, tmp_path):
    """A tampered last chunk leaves neither OUT nor a temporary file."""
    sealed = seal_file(fake_kms, tmp_path, os.urandom(950))
    damaged = bytearray(sealed.read_bytes())
    damaged[-1] ^= 1
    sealed.write_bytes(bytes(damaged))
    output = tmp_path / "out.bin"
    with pytest.raises(InvalidCiphertextError):
        envelope.decrypt_file(fake_kms, str(sealed), str(output))
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin", "sealed.kmse"]


def test_failed_decrypt_keeps_old_output(fake_kms, tmp_path):
    """A failed decrypt leaves an existing OUT untouched."""
    sealed = seal_file(fake_kms, tmp_path, b"secret")
    output = tmp_path / "out.bin"
    output.write_bytes(b"previous")
    with pytest.raises(InvalidCiphertextError):
        envelope.decrypt_file(fake_kms, str(sealed), str(output),
                              encryption_context={"app": "wrong"})
    assert output.read_bytes() == b"previous"


def test_failed_encrypt_leaves_no_output(make_fake_kms, tmp_path):
    """An agent error during encryption leaves no OUT and no temporary file."""
    kms = make_fake_kms(fail_with=ThrottlingError())
    source = tmp_path / "plain.bin"
    source.write_bytes(b"data")
    output = tmp_path / "sealed.kmse"
    with pytest.raises(ThrottlingError):
        envelope.encrypt_file(kms, "alias/app", str(source), str(output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin"]


def test_missing_input_leaves_no_output(fake_kms, tmp_path):
    """A missing input raises the OS error and creates no OUT."""
    output = tmp_path / "sealed.kmse"
    with pytest.raises(FileNotFoundError):
        envelope.encrypt_file(fake_kms, "k", str(tmp_path / "absent"), str(output))
    assert not output.exists()


def test_in_place_encryption(fake_kms, tmp_path):
    """IN and OUT may be the same file, since OUT is replaced at the end."""
    path = tmp_path / "data.bin"
    data = os.urandom(500)
    path.write_bytes(data)
    envelope.encrypt_file(fake_kms, "k", str(path), str(path))
    envelope.decrypt_file(fake_kms, str(path), str(path))
    assert path.read_bytes() == data


def test_stdin_to_stdout(fake_kms, monkeypatch):
    """With - for IN and OUT, data flows from stdin to stdout."""
    data = os.urandom(300)
    monkeypatch.setattr(sys, "stdin", StdStream(data))
    monkeypatch.setattr(sys, "stdout", StdStream())
    envelope.encrypt_file(fake_kms, "k", "-", "-")
    sealed = sys.stdout.buffer.getvalue()
    monkeypatch.setattr(sys, "stdin", StdStream(sealed))
    monkeypatch.setattr(sys, "stdout", StdStream())
    envelope.decrypt_file(fake_kms, "-", "-")
    assert sys.stdout.buffer.getvalue() == data


def test_progress_reports_bytes_read(fake_kms, tmp_path):
    """Progress ends at the plaintext size on encrypt, file size on decrypt."""
    encrypted, decrypted = [], []
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(250))
    sealed = tmp_path / "sealed.kmse"
    envelope.encrypt_file(fake_kms, "k", str(source), str(sealed), chunk_size=100,
                          progress=encrypted.append)
    envelope.decrypt_file(fake_kms, str(sealed), str(tmp_path / "out"),
                          progress=decrypted.append)
    assert encrypted == [100, 200, 250]
    assert decrypted[-1] == sealed.stat().st_size


def test_input_size_of_files(tmp_path):
    """input_size gives a regular file's size and None for stdin."""
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert envelope.input_size(str(path)) == 5
    assert envelope.input_size("-") is None
