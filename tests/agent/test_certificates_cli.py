"""kmsctl's certificate commands and the client wrappers, with a fake client.

The real daemon runs these commands in tests/integration; here the
argument parsing, the files written and the requests sent are checked.
"""

from __future__ import annotations

import io
import json
import stat

import pytest

from client import cli, errors
from client.certificate_cli import find_command, parse_certificate_command
from client.certificates import join_pem
from client.sync import KmsOperations

LEAF = "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n"
ISSUER = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"


class FakeClient(KmsOperations[dict]):
    """Records calls and returns replies from a table."""

    def __init__(self, replies: dict[str, dict]):
        self.replies = replies
        self.calls: list[tuple[str, dict]] = []

    def call(self, operation: str, **params) -> dict:
        self.calls.append((operation, params))
        return self.replies.get(operation, {})

    def close(self) -> None:
        pass


def run(argv: list[str], client: FakeClient) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = cli.run(argv, client_factory=lambda socket, timeout: client,
                     stdout=stdout, stderr=stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def test_find_command_skips_globals():
    """Global options before the command do not hide it."""
    assert find_command(["--socket", "/s", "write-csr", "c", "-"]) == "write-csr"
    assert find_command(["--timeout=3", "export-tls-bundle"]) == "export-tls-bundle"
    assert find_command(["CreateCertificate"]) is None


def test_parse_rejects_wrong_arity():
    """Each command takes its number of arguments."""
    with pytest.raises(errors.InvalidParameterError):
        parse_certificate_command(["write-csr", "only-id"])
    with pytest.raises(errors.InvalidParameterError):
        parse_certificate_command(["export-tls-bundle", "id", "cert.pem"])
    with pytest.raises(errors.InvalidParameterError):
        parse_certificate_command(["upload-certificate", "id"])


def test_parse_passphrase_only_for_export():
    """--Passphrase belongs to export-tls-bundle alone."""
    parsed = parse_certificate_command(
        ["--Passphrase", "pw", "export-tls-bundle", "id", "c", "k"])
    assert parsed.passphrase == "pw"
    with pytest.raises(errors.InvalidParameterError):
        parse_certificate_command(["write-csr", "id", "out", "--Passphrase", "pw"])


def test_passphrase_from_file(tmp_path):
    """--Passphrase file://PATH reads the file and drops one newline."""
    secret = tmp_path / "pass"
    secret.write_text("from a file\n")
    parsed = parse_certificate_command(
        ["export-tls-bundle", "id", "c", "k", f"--Passphrase=file://{secret}"])
    assert parsed.passphrase == "from a file"


def test_write_csr_to_stdout():
    """write-csr with - prints the request alone."""
    client = FakeClient({"GetCertificate": {"Csr": "REQUEST\n"}})
    status, out, _ = run(["write-csr", "c-1", "-"], client)
    assert status == 0
    assert out == "REQUEST\n"
    assert client.calls == [("GetCertificate", {"CertificateId": "c-1"})]


def test_write_csr_imported_fails():
    """A certificate without a request is a caller error, exit status 1."""
    client = FakeClient({"GetCertificate": {"Csr": ""}})
    status, _, err = run(["write-csr", "c-1", "-"], client)
    assert status == 1
    assert json.loads(err)["Code"] == "InvalidParameter"


def test_upload_joins_chain_files(tmp_path):
    """upload-certificate sends the certificate file and every chain file."""
    (tmp_path / "leaf.pem").write_text(LEAF)
    (tmp_path / "a.pem").write_text(ISSUER)
    (tmp_path / "b.pem").write_text(ISSUER)
    client = FakeClient({"DescribeCertificate": {"Status": "ACTIVE"}})
    status, out, _ = run(["upload-certificate", "c-1", str(tmp_path / "leaf.pem"),
                          str(tmp_path / "a.pem"), str(tmp_path / "b.pem")], client)
    assert status == 0
    assert client.calls[0] == ("UploadCertificate", {
        "CertificateId": "c-1", "Certificate": LEAF,
        "CertificateChain": ISSUER + ISSUER})
    assert json.loads(out)["Status"] == "ACTIVE"


def test_upload_missing_file(tmp_path):
    """A certificate file that cannot be read is a caller error."""
    status, _, err = run(["upload-certificate", "c-1", str(tmp_path / "none.pem")],
                         FakeClient({}))
    assert status == 1
    assert "none.pem" in json.loads(err)["Message"]


def test_export_bundle_files(tmp_path):
    """export-tls-bundle writes the full chain and a 0600 key file."""
    client = FakeClient({"ExportCertificate": {
        "Certificate": LEAF, "CertificateChain": ISSUER, "PrivateKey": "KEY\n"}})
    cert_out, key_out = tmp_path / "fullchain.pem", tmp_path / "key.pem"
    status, out, _ = run(["export-tls-bundle", "c-1", str(cert_out), str(key_out)],
                         client)
    assert status == 0
    assert cert_out.read_text() == LEAF + ISSUER
    assert key_out.read_text() == "KEY\n"
    assert stat.S_IMODE(key_out.stat().st_mode) == 0o600
    assert client.calls == [("ExportCertificate",
                             {"CertificateId": "c-1", "ExportFormat": "PEM"})]
    assert json.loads(out)["Encrypted"] is False


def test_export_bundle_refused_keeps_files(tmp_path):
    """A refused export leaves existing files as they were."""
    class Refusing(FakeClient):
        def call(self, operation, **params):
            raise errors.CertificateNotExportableError("no")

    key_out = tmp_path / "key.pem"
    key_out.write_text("old")
    status, _, err = run(["export-tls-bundle", "c-1", str(tmp_path / "c.pem"),
                          str(key_out)], Refusing({}))
    assert status == 1
    assert json.loads(err)["Code"] == "Certificate.NotExportable"
    assert key_out.read_text() == "old"


def test_join_pem_adds_newlines():
    """A list of PEM texts joins with a newline after each."""
    assert join_pem(["A", "B\n"]) == "A\nB\n"
    assert join_pem("A") == "A"
    assert join_pem(None) is None


def test_wrappers_send_api_names():
    """The wrappers send PascalCase parameters and leave out None."""
    client = FakeClient({})
    client.create_certificate("EC_P256", "CN=a,OU=b,O=c,C=CN",
                              subject_alternative_names=("a.example.com",),
                              tags={"team": "web"})
    client.certificate_private_key_sign("c-1", "ECDSA_SHA_256", b"m",
                                        allow_outside_validity=True)
    client.upload_certificate("c-1", LEAF, [ISSUER, ISSUER])
    assert client.calls == [
        ("CreateCertificate", {
            "KeySpec": "EC_P256", "Subject": "CN=a,OU=b,O=c,C=CN",
            "SubjectAlternativeNames": ["a.example.com"],
            "Tags": [{"TagKey": "team", "TagValue": "web"}]}),
        ("CertificatePrivateKeySign", {
            "CertificateId": "c-1", "Algorithm": "ECDSA_SHA_256", "Message": b"m",
            "AllowOutsideValidity": True}),
        ("UploadCertificate", {"CertificateId": "c-1", "Certificate": LEAF,
                               "CertificateChain": ISSUER + ISSUER}),
    ]
