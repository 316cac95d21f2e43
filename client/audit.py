"""The audit trail format: hash-chained JSON lines, and ``kmsctl audit``.

An audit file is UTF-8 text with one JSON object per line. Line 1 is a
header (``"type": "header"``, the format name and ``version``); each
later line records one request. Every line carries ``prev``, the
``hash`` of the line before it, and ``hash``, the SHA-256 of the line's
canonical JSON (sorted keys, no spaces) without ``hash``. The agent
writes that canonical JSON with ``hash`` appended as the last member, and
the verifier accepts only lines that are exactly those bytes. The header
of a new chain has ``prev`` equal to ``GENESIS``. The header of a file
that continues a rotated one has the last hash of that file.

Editing, removing, inserting or reordering a line, or cutting the last
one short, breaks the chain at the first changed line. The chain has no
secret, so whoever can rewrite the whole file from the changed line on
can forge it, and dropping whole lines from the end is not detected.
The agent writes these files (``agent.audit``); this module only reads
and checks them, so ``kmsctl`` never imports the agent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

FORMAT = "kms-agent-audit"
FORMAT_VERSION = 1
GENESIS = "0" * 64
HEADER = "header"

_HASH = re.compile(r"[0-9a-f]{64}")

USAGE = """\
usage: kmsctl audit verify FILE [FILE ...]

Checks the hash chain of agent audit files. Give rotated files oldest
first: each file must continue the chain where the one before it ended.
Prints the record count of each file and exits 0 when every chain is
intact; prints the first bad line and exits 1 otherwise.
"""


class ChainError(Exception):
    """A line breaks the chain; ``line`` is its 1-based number."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ChainSummary:
    """The summary of an intact audit file.

    ``records`` counts request records, not the header. ``first_prev``
    is the header's ``prev``: ``GENESIS`` or the last hash of the file
    this one continues. ``last_hash`` is the hash the next line must name.
    """

    records: int
    first_prev: str
    last_hash: str


def canonical(record: dict[str, Any]) -> bytes:
    """Return the bytes that are hashed and written for ``record``."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def seal(fields: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """Chain ``fields`` after the line whose hash is ``prev``.

    Returns:
        The line to append (with its newline) and its hash.
    """
    text = canonical({**fields, "prev": prev})
    digest = hashlib.sha256(text).hexdigest()
    return _with_hash(text, digest) + b"\n", digest


def _with_hash(text: bytes, digest: str) -> bytes:
    # The record always has members, so its text ends with "}" after one.
    return text[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}'


def header_fields(time: str) -> dict[str, Any]:
    """Return the fields of a header line written at ``time``."""
    return {"type": HEADER, "format": FORMAT, "version": FORMAT_VERSION,
            "time": time}


def parse_line(data: bytes, number: int) -> dict[str, Any]:
    """Parse one line (without its newline) and check its own hash.

    Raises:
        ChainError: the line is not a JSON object, has a duplicate key,
            lacks ``prev`` or ``hash``, was changed after it was written,
            or is not byte for byte the text the agent writes.
    """
    try:
        record = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise ChainError(number, f"has the key {duplicate.key!r} more than "
                                 "once") from None
    except (UnicodeDecodeError, ValueError):
        raise ChainError(number, "is not a JSON record") from None
    if not isinstance(record, dict):
        raise ChainError(number, "is not a JSON object")
    digest, prev = record.pop("hash", None), record.get("prev")
    if not (isinstance(digest, str) and _HASH.fullmatch(digest)
            and isinstance(prev, str) and _HASH.fullmatch(prev)):
        raise ChainError(number, "lacks a valid hash or prev field")
    try:
        text = canonical(record)
    except UnicodeEncodeError:
        raise ChainError(number, "is not a JSON record") from None
    if hashlib.sha256(text).hexdigest() != digest:
        raise ChainError(number, "was modified: its hash does not match its content")
    # Parsing drops spacing, member order and escapes, so the line must
    # be the very bytes the agent would write for the parsed record.
    if _with_hash(text, digest) != data:
        raise ChainError(number, "is not in canonical form: it differs from the "
                                 "text the agent writes for the same record")
    record["hash"] = digest
    return record


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def _check_header(record: dict[str, Any], number: int) -> None:
    if record.get("type") != HEADER or record.get("format") != FORMAT:
        raise ChainError(number, f"is not a {FORMAT} header")
    if record.get("version") != FORMAT_VERSION:
        raise ChainError(number, f"has format version {record.get('version')!r}; "
                                 f"this tool reads version {FORMAT_VERSION}")


def verify_lines(lines: Iterable[bytes], expect_prev: str | None = None
                 ) -> ChainSummary:
    """Check a whole file given as its lines, newlines included.

    ``expect_prev`` is the hash the header must continue from, when the
    file before it is known.

    Raises:
        ChainError: naming the first line that breaks the chain.
    """
    number, records, first_prev, last_hash = 0, 0, GENESIS, GENESIS
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            raise ChainError(number, "is incomplete: the file was cut short")
        record = parse_line(line[:-1], number)
        if number == 1:
            _check_header(record, number)
            first_prev = record["prev"]
            if expect_prev is not None and first_prev != expect_prev:
                raise ChainError(number, "does not continue the previous file")
        elif record.get("type") == HEADER:
            raise ChainError(number, "is a header in the middle of a file")
        elif record["prev"] != last_hash:
            raise ChainError(number, f"does not follow line {number - 1}: a record "
                                     "was removed, inserted or reordered here")
        else:
            records += 1
        last_hash = record["hash"]
    if number == 0:
        raise ChainError(1, "is missing: the file is empty")
    return ChainSummary(records, first_prev, last_hash)


def verify_file(path: str | Path, expect_prev: str | None = None) -> ChainSummary:
    """Check the audit file at ``path``; see ``verify_lines``.

    Raises:
        ChainError: naming the first bad line.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as stream:
        return verify_lines(stream, expect_prev)


def check_tail(data: bytes, whole_file: bool) -> str:
    """Check the last lines of a file and return the hash of the last one.

    ``data`` is the end of the file; unless ``whole_file``, its first
    line may be cut and is skipped. The complete lines left must be
    intact and chained to each other. Line numbers in errors count from
    the start of ``data``.

    Raises:
        ChainError: the tail is cut short, modified or out of order.
    """
    lines = data.split(b"\n")
    if lines[-1]:
        raise ChainError(len(lines), "is incomplete: the file was cut short")
    lines.pop()
    first = 0 if whole_file else 1
    last_hash = None
    for number in range(first, len(lines)):
        record = parse_line(lines[number], number + 1)
        if last_hash is not None and record["prev"] != last_hash:
            raise ChainError(number + 1, f"does not follow line {number}")
        if number == 0 and whole_file:
            _check_header(record, 1)
        last_hash = record["hash"]
    if last_hash is None:
        raise ChainError(1, "is missing: no complete record at the end of the file")
    return last_hash


def run(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    """Run ``kmsctl audit ARGS`` and return its exit status."""
    if argv[:1] in (["-h"], ["--help"]):
        stdout.write(USAGE)
        return 0
    if len(argv) < 2 or argv[0] != "verify" or any(a.startswith("-") for a in argv[1:]):
        stderr.write(USAGE)
        return 1
    expect_prev = None
    for path in argv[1:]:
        try:
            summary = verify_file(path, expect_prev)
        except ChainError as error:
            stderr.write(f"{path}:{error.line}: line {error.line} {error.reason}\n")
            return 1
        except OSError as error:
            stderr.write(f"{path}: cannot read the file: {error.strerror}\n")
            return 1
        start = ("starts a new chain" if summary.first_prev == GENESIS
                 else f"continues the chain ending {summary.first_prev[:16]}")
        stdout.write(f"{path}: {summary.records} records, chain intact; the file "
                     f"{start}; last hash {summary.last_hash}\n")
        expect_prev = summary.last_hash
    return 0
