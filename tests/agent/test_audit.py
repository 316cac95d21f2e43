"""The audit trail: the chain format, the file on disk and the stage.

Chain tests write real files with ``AuditFile`` and tamper with them.
Stage tests run the real dispatcher, services and SQLite store on a fake
keystore; durability and failure tests inject a writer that can block
or fail, and the fail-closed tests also use a real file on /dev/full.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
from pathlib import Path

import pytest
import trio

from agent.audit import AuditFile, AuditFileError, AuditStage, AuditTrail, open_trail
from agent.audit.stage import audit_fields
from agent.config import AuditConfig, ConfigError, parse_config
from agent.context import FakeClock, Peer, RequestContext
from agent.rpc.dispatch import Stage
from client import audit, cli, errors
from tests.agent.secret_harness import SecretAgent


def record(number: int) -> dict:
    return {"op": "Encrypt", "request_id": f"req-{number}", "code": "OK"}


def write_file(path: Path, batches: list[int]) -> AuditFile:
    """Write batches of records of the given sizes and close the file."""
    audit_file = AuditFile(path, lambda: "2026-01-01T00:00:00.000Z")
    audit_file.open_existing()
    number = 0
    for size in batches:
        audit_file.append([record(number + i) for i in range(size)])
        number += size
    audit_file.close()
    return audit_file


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rehash(line: bytes, **changes) -> bytes:
    """Return ``line`` changed and sealed again after the same prev."""
    fields = json.loads(line)
    prev = fields.pop("prev")
    fields.pop("hash")
    fields.update(changes)
    return audit.seal(fields, prev)[0]


# --- the chain ---------------------------------------------------------------------


def test_written_file_verifies(tmp_path):
    """A file written in batches verifies with its record count."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [1, 3, 2])
    summary = audit.verify_file(path)
    assert summary.records == 6
    assert summary.first_prev == audit.GENESIS
    assert len(lines_of(path)) == 7


def test_header_names_format_version(tmp_path):
    """The first line is a header with the format name and version."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [1])
    header = json.loads(lines_of(path)[0])
    assert header["type"] == "header"
    assert header["format"] == audit.FORMAT
    assert header["version"] == audit.FORMAT_VERSION
    assert header["prev"] == audit.GENESIS


def _edit(lines):
    lines[3] = lines[3].replace(b"req-2", b"req-9")


def _edit_rehashed(lines):
    lines[3] = rehash(lines[3], code="Forbidden.NoPermission")


def _remove(lines):
    del lines[3]


def _insert(lines):
    lines.insert(3, lines[5])


def _reorder(lines):
    lines[3], lines[4] = lines[4], lines[3]


def _truncate(lines):
    lines[-1] = lines[-1][:20]


def _edit_header(lines):
    lines[0] = rehash(lines[0], version=2)


def _drop_header(lines):
    del lines[0]


def _duplicate_key(lines):
    # The hash covers the last value, the one json.loads keeps by default.
    lines[3] = lines[3].replace(b'{"code":"OK"', b'{"code":"Fake","code":"OK"')


def _add_space(lines):
    lines[3] = lines[3].replace(b',"op":', b', "op":')


def _escape_letter(lines):
    lines[3] = lines[3].replace(b'"op":"Encrypt"', b'"op":"\\u0045ncrypt"')


TAMPERING = [
    (_edit, 4, "was modified"),
    (_edit_rehashed, 5, "does not follow line 4"),
    (_remove, 4, "does not follow line 3"),
    (_insert, 4, "does not follow line 3"),
    (_reorder, 4, "does not follow line 3"),
    (_truncate, 6, "is incomplete"),
    (_edit_header, 1, "format version 2"),
    (_drop_header, 1, "is not a kms-agent-audit header"),
    (_duplicate_key, 4, "has the key 'code' more than once"),
    (_add_space, 4, "is not in canonical form"),
    (_escape_letter, 4, "is not in canonical form"),
]


@pytest.mark.parametrize("tamper, line, reason", TAMPERING,
                         ids=[entry[0].__name__[1:] for entry in TAMPERING])
def test_tampering_names_first_bad_line(tmp_path, tamper, line, reason):
    """Each kind of tampering is reported at the first line it breaks."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [5])
    lines = lines_of(path)
    tamper(lines)
    path.write_bytes(b"".join(lines))
    with pytest.raises(audit.ChainError) as caught:
        audit.verify_file(path)
    assert caught.value.line == line
    assert reason in caught.value.reason


def test_empty_file_fails_verify(tmp_path):
    """An empty file is not a valid audit file."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    with pytest.raises(audit.ChainError, match="empty"):
        audit.verify_file(path)


def test_kmsctl_verify_reports_count(tmp_path):
    """kmsctl audit verify prints the record count and exits 0."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [4])
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(["audit", "verify", str(path)], stdout=out, stderr=err)
    assert status == 0
    assert "4 records, chain intact" in out.getvalue()
    assert err.getvalue() == ""


def test_kmsctl_verify_names_bad_line(tmp_path):
    """A tampered file exits 1 with FILE:LINE of the first bad line."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [4])
    lines = lines_of(path)
    _remove(lines)
    path.write_bytes(b"".join(lines))
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(["audit", "verify", str(path)], stdout=out, stderr=err)
    assert status == 1
    assert err.getvalue().startswith(f"{path}:4: ")
    assert out.getvalue() == ""


def test_kmsctl_verify_duplicate_key(tmp_path):
    """A line with a repeated key exits 1 naming that line."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [4])
    lines = lines_of(path)
    _duplicate_key(lines)
    path.write_bytes(b"".join(lines))
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(["audit", "verify", str(path)], stdout=out, stderr=err)
    assert status == 1
    assert err.getvalue().startswith(f"{path}:4: ")
    assert "more than once" in err.getvalue()
    assert out.getvalue() == ""


def test_kmsctl_verify_missing_file(tmp_path):
    """A file that cannot be read exits 1 with the cause."""
    out, err = io.StringIO(), io.StringIO()
    status = audit.run(["verify", str(tmp_path / "absent")], out, err)
    assert status == 1
    assert "cannot read the file" in err.getvalue()


@pytest.mark.parametrize("argv", [[], ["verify"], ["check", "x"], ["verify", "-x"]])
def test_kmsctl_audit_usage_error(argv):
    """A malformed audit command line prints the usage and exits 1."""
    out, err = io.StringIO(), io.StringIO()
    assert audit.run(argv, out, err) == 1
    assert err.getvalue().startswith("usage: kmsctl audit verify")


def test_rotated_files_verify_in_order(tmp_path):
    """A file reopened after rotation continues the chain of the old one."""
    path = tmp_path / "audit.jsonl"
    audit_file = write_file(path, [2])
    os.rename(path, tmp_path / "audit.jsonl.1")
    audit_file.append([record(10)])
    out, err = io.StringIO(), io.StringIO()
    assert audit.run(["verify", str(tmp_path / "audit.jsonl.1"), str(path)],
                     out, err) == 0
    assert "continues the chain" in out.getvalue()


def test_rotated_files_out_of_order(tmp_path):
    """Rotated files given in the wrong order fail at line 1."""
    path = tmp_path / "audit.jsonl"
    audit_file = write_file(path, [2])
    os.rename(path, tmp_path / "audit.jsonl.1")
    audit_file.append([record(10)])
    out, err = io.StringIO(), io.StringIO()
    status = audit.run(["verify", str(path), str(tmp_path / "audit.jsonl.1")],
                       out, err)
    assert status == 1
    assert "audit.jsonl.1:1: line 1 does not continue" in err.getvalue()


# --- the file on disk -------------------------------------------------------------


def test_restart_continues_chain(tmp_path):
    """A second writer on an existing file continues its chain."""
    path = tmp_path / "audit.jsonl"
    first = write_file(path, [2])
    second = AuditFile(path, lambda: "later")
    assert second.open_existing() is None
    assert second.last_hash == first.last_hash
    second.append([record(5)])
    assert audit.verify_file(path).records == 3


def test_damaged_tail_refuses_start(tmp_path):
    """A file cut mid-line stops the start with a message naming the tool."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [2])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AuditFileError, match="kmsctl audit verify"):
        AuditFile(path, lambda: "later").open_existing()


def test_damaged_tail_set_aside(tmp_path):
    """With set_aside, a damaged file is renamed and a new chain starts."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [2])
    damaged = path.read_bytes()[:-10]
    path.write_bytes(damaged)
    aside = AuditFile(path, lambda: "2026-01-02T03:04:05.000Z").open_existing(
        "set_aside")
    assert aside == tmp_path / "audit.jsonl.broken-2026-01-02T030405.000Z"
    assert aside.read_bytes() == damaged
    assert audit.verify_file(path).first_prev == audit.GENESIS


def test_deleted_file_restarts_with_link(tmp_path):
    """A deleted file is recreated with a header linking to the old chain."""
    path = tmp_path / "audit.jsonl"
    audit_file = AuditFile(path, lambda: "now")
    audit_file.open_existing()
    audit_file.append([record(1)])
    before = audit_file.last_hash
    path.unlink()
    audit_file.append([record(2)])
    assert audit_file.reopened is True
    summary = audit.verify_file(path, expect_prev=before)
    assert summary.records == 1


def test_replaced_file_is_rejected(tmp_path):
    """A foreign file put in place of the audit file is not appended to."""
    path = tmp_path / "audit.jsonl"
    audit_file = AuditFile(path, lambda: "now")
    audit_file.open_existing()
    audit_file.append([record(1)])
    write_file(tmp_path / "other.jsonl", [3])
    os.replace(tmp_path / "other.jsonl", path)
    with pytest.raises(AuditFileError, match="does not end with the agent's"):
        audit_file.append([record(2)])
    assert audit.verify_file(path).records == 3


def test_own_partial_line_is_cut(tmp_path):
    """A partial line after the agent's last record is cut on reopen."""
    path = tmp_path / "audit.jsonl"
    audit_file = AuditFile(path, lambda: "now")
    audit_file.open_existing()
    audit_file.append([record(1)])
    with open(path, "ab") as stream:
        stream.write(b'{"op": "Enc')
    audit_file.reopen()
    audit_file.append([record(2)])
    assert audit.verify_file(path).records == 2


def test_full_disk_fails_then_recovers(tmp_path):
    """A write that fails leaves the chain as it was, and a later one works."""
    path = tmp_path / "audit.jsonl"
    audit_file = AuditFile(path, lambda: "now")
    audit_file.open_existing()
    audit_file.append([record(1)])
    kept = audit_file.last_hash
    os.rename(path, tmp_path / "audit.jsonl.1")
    path.symlink_to("/dev/full")
    with pytest.raises(OSError):
        audit_file.append([record(2)])
    assert audit_file.last_hash == kept
    path.unlink()
    audit_file.append([record(3)])
    assert audit.verify_file(path, expect_prev=kept).records == 1


def test_missing_directory_fails_open(tmp_path):
    """A file in a directory that does not exist cannot be opened."""
    audit_file = AuditFile(tmp_path / "gone" / "audit.jsonl", lambda: "now")
    with pytest.raises(OSError):
        audit_file.open_existing()


def test_new_file_has_private_mode(tmp_path):
    """The agent creates the audit file readable by its owner only."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [1])
    assert path.stat().st_mode & 0o777 == 0o600


# --- the stage --------------------------------------------------------------------


class FakeWriter:
    """A writer that stores records in memory, and can block or fail."""

    def __init__(self):
        self.records: list[dict] = []
        self.reopened = False
        self.fail = False
        self.reopens = 0
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def append(self, records):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail:
            raise OSError(28, "No space left on device")
        self.records.extend(records)

    def reopen(self):
        self.reopens += 1
        if self.fail:
            raise OSError(28, "No space left on device")

    def close(self):
        pass


class RefuseStage(Stage):
    """Refuse requests for one key reference, as access control would."""

    async def before(self, ctx, operation, values):
        if values.get("KeyId") == "alias/refused":
            raise errors.NoPermissionError("not for you")


class AuditedAgent(SecretAgent):
    """A SecretAgent whose dispatcher starts with the audit stage."""

    def __init__(self, tmp_path, writer, fail_closed=True):
        super().__init__(tmp_path)
        self.writer = writer
        self.trail = AuditTrail(writer, "audit.jsonl", fail_closed)
        self.dispatcher.stages = [AuditStage(self.trail, self.clock), RefuseStage()]

    async def call_as(self, op, principal=None, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        ctx.principal = principal
        return await self.dispatcher.handle(ctx, params)

    async def key_count(self):
        return (await self.call("ListKeys"))["TotalCount"]


@pytest.fixture
async def agent(tmp_path, nursery):
    instance = AuditedAgent(tmp_path, FakeWriter())
    await nursery.start(instance.trail.run)
    yield instance
    await instance.store.aclose()


@pytest.fixture
async def file_agent(tmp_path, nursery):
    audit_file = AuditFile(tmp_path / "audit.jsonl", lambda: "now")
    audit_file.open_existing()
    instance = AuditedAgent(tmp_path, audit_file)
    await nursery.start(instance.trail.run)
    yield instance
    await instance.store.aclose()


async def settled(agent):
    await agent.trail.flush()
    return agent.writer.records


async def test_record_per_request(agent):
    """Each request leaves one record naming caller, operation and result."""
    created = await agent.call("CreateKey")
    key_id = created["KeyMetadata"]["KeyId"]
    with pytest.raises(errors.KeyNotFoundError):
        await agent.call("DescribeKey", KeyId="key-missing")
    records = await settled(agent)
    assert [r["op"] for r in records] == ["CreateKey", "DescribeKey"]
    assert records[0]["request_id"] == created["RequestId"]
    assert records[0]["resource"] == key_id
    assert records[0]["version"] == created["KeyMetadata"]["PrimaryKeyVersion"]
    assert records[0]["code"] == "OK"
    assert records[0]["uid"] == 1000
    assert records[0]["pid"] == 42
    assert records[0]["time"] == "2026-01-01T00:00:00.000Z"
    assert records[1]["resource"] == "key-missing"
    assert records[1]["code"] == "Forbidden.KeyNotFound"


async def test_record_names_principal(agent):
    """The principal that access control named is recorded."""
    await agent.call_as("ListKeys", principal="billing")
    records = await settled(agent)
    assert records[0]["principal"] == "billing"


async def test_refused_request_keeps_resource(agent):
    """A request a later stage refuses is recorded with its resource."""
    with pytest.raises(errors.NoPermissionError):
        await agent.call("Encrypt", KeyId="alias/refused", Plaintext=b"x")
    records = await settled(agent)
    assert records[0]["resource"] == "alias/refused"
    assert records[0]["code"] == "Forbidden.NoPermission"


async def test_invalid_request_is_recorded(agent):
    """A request that fails validation is still recorded, without resource."""
    with pytest.raises(errors.MissingParameterError):
        await agent.call("DescribeKey")
    records = await settled(agent)
    assert records[0]["code"] == "MissingParameter"
    assert records[0]["resource"] is None


async def test_secret_request_names_secret(agent):
    """Secret requests record the secret name and version id."""
    await agent.create(name="app/db", version="v1")
    records = await settled(agent)
    assert records[-1]["resource"] == "app/db"
    assert records[-1]["version"] == "v1"


async def test_records_hold_no_secrets(file_agent, tmp_path):
    """No plaintext, data key or secret value reaches the audit file."""
    agent = file_agent
    key_id = (await agent.call("CreateKey"))["KeyMetadata"]["KeyId"]
    plaintext = b"plaintext-marker-4f1c"
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=plaintext,
                             EncryptionContext={"ctx": "v"}))["CiphertextBlob"]
    await agent.call("Decrypt", CiphertextBlob=blob, EncryptionContext={"ctx": "v"})
    data_key = (await agent.call("GenerateDataKey", KeyId=key_id))["Plaintext"]
    await agent.create(name="app/db", data="secret-marker-9b2e", version="v1")
    await agent.put("app/db", "v2", "secret-marker-second")
    value = (await agent.call("GetSecretValue", SecretName="app/db"))["SecretData"]
    await agent.trail.flush()
    text = (tmp_path / "audit.jsonl").read_bytes()
    assert value == "secret-marker-second"
    for secret in (plaintext, b"secret-marker", base64.b64encode(plaintext),
                   blob, base64.b64encode(blob), data_key,
                   base64.b64encode(data_key)):
        assert secret not in text
    assert audit.verify_file(tmp_path / "audit.jsonl").records == 7


async def test_change_reply_waits_for_fsync(agent):
    """A state-changing reply is not sent before its record is written."""
    agent.writer.gate = threading.Event()
    replies = []

    async def create():
        replies.append(await agent.call("CreateKey"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)
        await trio.to_thread.run_sync(agent.writer.entered.wait, 10)
        assert replies == []
        agent.writer.gate.set()
    assert len(replies) == 1
    assert agent.writer.records[0]["op"] == "CreateKey"


async def test_read_reply_does_not_wait(agent):
    """A read-only reply goes out while its record is still being written."""
    agent.writer.gate = threading.Event()
    await agent.call("ListKeys")
    await trio.to_thread.run_sync(agent.writer.entered.wait, 10)
    reply = await agent.call("ListKeys")
    assert reply["TotalCount"] == 0
    assert agent.writer.records == []
    agent.writer.gate.set()
    records = await settled(agent)
    assert len(records) == 2


async def test_batch_covers_queued_records(agent):
    """Records queued while a batch is written go out in one next batch."""
    agent.writer.gate = threading.Event()
    sizes = []
    original = agent.writer.append

    def counting(records):
        sizes.append(len(records))
        original(records)

    agent.writer.append = counting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.trail.write, record(1))
        await trio.to_thread.run_sync(agent.writer.entered.wait, 10)
        for number in range(2, 5):
            nursery.start_soon(agent.trail.write, record(number))
        await trio.testing.wait_all_tasks_blocked()
        agent.writer.gate.set()
    assert sizes == [1, 3]


async def test_fail_closed_refuses_changes(agent):
    """With the trail failing, changes get AuditUnavailable and reads go on."""
    agent.writer.fail = True
    with pytest.raises(errors.AuditUnavailableError) as caught:
        await agent.call("CreateKey")
    assert caught.value.http_status == 503
    assert await agent.key_count() == 1
    with pytest.raises(errors.AuditUnavailableError):
        await agent.call("CreateKey")
    assert await agent.key_count() == 1
    assert agent.trail.healthy is False


async def test_recovers_when_writes_work(agent):
    """Once the writer works again, changes are served and recorded."""
    agent.writer.fail = True
    with pytest.raises(errors.AuditUnavailableError):
        await agent.call("CreateKey")
    agent.writer.fail = False
    created = await agent.call("CreateKey")
    assert agent.trail.healthy is True
    assert agent.writer.records[-1]["request_id"] == created["RequestId"]


async def test_refused_change_keeps_its_error(agent):
    """A change that failed anyway keeps its own error when audit fails."""
    agent.writer.fail = True
    with pytest.raises(errors.AuditUnavailableError):
        await agent.call("CreateKey")
    with pytest.raises(errors.MissingParameterError):
        await agent.call("EnableKey")


async def test_fail_open_serves_changes(tmp_path, nursery):
    """With fail_closed off, changes are served while the trail fails."""
    instance = AuditedAgent(tmp_path, FakeWriter(), fail_closed=False)
    await nursery.start(instance.trail.run)
    instance.writer.fail = True
    await instance.call("CreateKey")
    assert await instance.key_count() == 1
    await instance.store.aclose()


async def test_failure_logged_once(agent, caplog):
    """The log says when the trail fails and when it works again."""
    caplog.set_level(logging.INFO, logger="kms_agent")
    agent.writer.fail = True
    for _ in range(3):
        with pytest.raises(errors.AuditUnavailableError):
            await agent.call("CreateKey")
    agent.writer.fail = False
    await agent.call("CreateKey")
    messages = [r.getMessage() for r in caplog.records]
    failing = [m for m in messages if m.startswith("audit trail cannot be written")]
    assert len(failing) == 1
    assert "audit trail can be written again" in messages


async def test_real_file_fails_closed(file_agent, tmp_path):
    """A file that cannot grow refuses changes until it can."""
    agent = file_agent
    path = tmp_path / "audit.jsonl"
    await agent.call("CreateKey")
    os.rename(path, tmp_path / "audit.jsonl.1")
    path.symlink_to("/dev/full")
    with pytest.raises(errors.AuditUnavailableError):
        await agent.call("CreateKey")
    path.unlink()
    await agent.call("CreateKey")
    out, err = io.StringIO(), io.StringIO()
    assert audit.run(["verify", str(tmp_path / "audit.jsonl.1"), str(path)],
                     out, err) == 0


async def test_reopen_after_rotation(file_agent, tmp_path):
    """Reopening after the file was renamed starts a linked new file."""
    agent = file_agent
    path = tmp_path / "audit.jsonl"
    await agent.call("CreateKey")
    os.rename(path, tmp_path / "audit.jsonl.1")
    await agent.trail.reopen()
    await agent.call("CreateKey")
    assert audit.verify_file(path).records == 1
    assert audit.verify_file(tmp_path / "audit.jsonl.1").records == 1


async def test_stop_writes_queued_records(tmp_path):
    """Records still queued when the trail stops are written."""
    writer = FakeWriter()
    trail = AuditTrail(writer)
    async with trio.open_nursery() as nursery:
        await nursery.start(trail.run)
        trail.submit(record(1))
        trail.submit(record(2))
        nursery.cancel_scope.cancel()
    assert len(writer.records) == 2


# --- configuration and start ----------------------------------------------------------


def config_with(**sections):
    raw = {"agent": {"socket": "s", "data_dir": "d"},
           "keystores": {"default": {"type": "software", "domain_key_file": "k"}},
           **sections}
    return parse_config(raw, Path("/etc/kms-agent"))


def test_audit_config_defaults():
    """The trail is on, fails closed and refuses a damaged file by default."""
    settings = config_with().audit
    assert settings.enabled is True
    assert settings.path is None
    assert settings.fail_closed is True
    assert settings.broken_tail == "refuse"


def test_audit_path_relative_to_config():
    """A relative audit path is resolved against the configuration's directory."""
    settings = config_with(audit={"path": "logs/audit.jsonl"}).audit
    assert settings.path == Path("/etc/kms-agent/logs/audit.jsonl")


@pytest.mark.parametrize("section, message", [
    ({"broken_tail": "truncate"}, "audit.broken_tail"),
    ({"fail_closed": "yes"}, "audit.fail_closed: expected bool"),
    ({"file": "x"}, "audit.file: unknown key"),
])
def test_audit_config_rejects_bad_values(section, message):
    """Invalid [audit] settings name the key."""
    with pytest.raises(ConfigError, match=message):
        config_with(audit=section)


def test_open_trail_default_path(tmp_path):
    """Without a path the file is audit.jsonl in the data directory."""
    trail = open_trail(AuditConfig(), tmp_path, FakeClock())
    trail.writer.close()
    assert audit.verify_file(tmp_path / "audit.jsonl").records == 0


def test_open_trail_sets_aside_damaged(tmp_path, caplog):
    """With broken_tail = set_aside, a damaged file is moved and logged."""
    caplog.set_level(logging.WARNING, logger="kms_agent")
    path = tmp_path / "audit.jsonl"
    write_file(path, [2])
    path.write_bytes(path.read_bytes()[:-3])
    trail = open_trail(AuditConfig(broken_tail="set_aside"), tmp_path, FakeClock())
    trail.writer.close()
    assert len(list(tmp_path.glob("audit.jsonl.broken-*"))) == 1
    assert caplog.records[0].getMessage().startswith("audit file was damaged")


def test_open_trail_refuses_damaged(tmp_path):
    """By default a damaged file stops the start."""
    path = tmp_path / "audit.jsonl"
    write_file(path, [2])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(AuditFileError, match="is damaged"):
        open_trail(AuditConfig(), tmp_path, FakeClock())


def test_certificate_resource_recorded():
    """A certificate operation records its CertificateId as the resource."""
    from agent.audit.stage import _resource
    from agent.context import Peer, RequestContext
    ctx = RequestContext.new("DescribeCertificate", Peer(0, 0, 1))
    assert _resource(ctx, {"CertificateId": "cert-1"}, None) == "cert-1"
    created = RequestContext.new("CreateCertificate", Peer(0, 0, 1))
    assert _resource(created, {}, {"CertificateId": "cert-2"}) == "cert-2"


def test_record_names_refused_batch_items():
    """A batch request's record lists the items access control refused."""
    ctx = RequestContext.new("BatchGetSecretValue", Peer(1000, 1000, 42))
    ctx.refused_items = {"b/one": errors.NoPermissionError()}
    values = {"SecretsList": [{"SecretName": "a/one"}, {"SecretName": "b/one"}]}
    fields = audit_fields(ctx, values, {"SecretValues": []}, None, FakeClock().now())
    assert fields["resource"] == ["a/one", "b/one"]
    assert fields["refused"] == ["b/one"]
    assert fields["code"] == "OK"
    plain = RequestContext.new("GetSecretValue", Peer(1000, 1000, 42))
    assert "refused" not in audit_fields(plain, {"SecretName": "a/one"}, {}, None,
                                         FakeClock().now())
