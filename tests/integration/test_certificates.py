"""The Certificates Manager on the real daemon and SoftHSM2 token.

One agent serves the module. A local CA (``certificate_authority``,
built with cryptography, asn1crypto and tongsuopy) issues the
certificates. Requests, signatures, exports and a TLS handshake are
checked with cryptography, tongsuopy and Python's ssl module. Calls go
through ``KmsClient`` and through kmsctl as a subprocess.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import pkcs12
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from client import KmsClient, errors
from tests.agent.certificate_authority import TestAuthority, pem_of
from tests.integration.conftest import REPO, launch

pytestmark = pytest.mark.hsm
KMSCTL = [str(Path(sys.executable).with_name("kmsctl"))]
SUBJECT = "CN=localhost,OU=integration,O=Example,C=CN"
MESSAGE = b"signed on the real daemon"
PASSPHRASE = "a passphrase for the exported key"


@pytest.fixture(scope="module")
def client(shared_agent):
    with KmsClient(shared_agent.socket) as instance:
        yield instance


@pytest.fixture(scope="module")
def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def ec_authority(now) -> TestAuthority:
    return TestAuthority(now, "ec")


def kmsctl(agent, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*KMSCTL, "--socket", str(agent.socket), *args],
                          capture_output=True, cwd=REPO, timeout=120, text=True)


def create(client, spec: str = "EC_P256", **options) -> tuple[str, str]:
    reply = client.create_certificate(
        spec, SUBJECT, subject_alternative_names=["localhost", "127.0.0.1"], **options)
    return reply["CertificateId"], reply["Csr"]


def active(client, authority: TestAuthority, spec: str = "EC_P256",
           **options) -> tuple[str, x509.Certificate]:
    certificate_id, request = create(client, spec, **options)
    leaf = authority.issue(request)
    client.upload_certificate(certificate_id, pem_of(leaf),
                              [pem_of(authority.root), pem_of(authority.intermediate)])
    return certificate_id, leaf


def verify_signature(leaf: x509.Certificate, algorithm: str, signature: bytes) -> None:
    public = leaf.public_key()
    if algorithm == "RSA_PKCS1_SHA_256":
        public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    elif algorithm == "RSA_PSS_SHA_256":
        public.verify(signature, MESSAGE, padding.PSS(
            padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256())
    else:
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


# --- the whole flow per key spec ---------------------------------------------


@pytest.mark.parametrize("spec,kind,algorithm", [
    ("RSA_2048", "rsa", "RSA_PKCS1_SHA_256"),
    ("EC_P256", "ec", "ECDSA_SHA_256"),
])
def test_hsm_certificate_flow(shared_agent, client, now, tmp_path, spec, kind,
                              algorithm):
    """HSM key, CSR from kmsctl, CA-issued chain uploaded by kmsctl, signature."""
    authority = TestAuthority(now, kind)
    certificate_id, _ = create(client, spec)
    described = client.describe_certificate(certificate_id)
    assert described["ProtectionLevel"] == "HSM"
    written = kmsctl(shared_agent, "write-csr", certificate_id,
                     str(tmp_path / "req.pem"))
    assert written.returncode == 0, written.stderr
    request = x509.load_pem_x509_csr((tmp_path / "req.pem").read_bytes())
    assert request.is_signature_valid
    assert request.public_key() == serialization.load_pem_public_key(
        described["SubjectPublicKey"].encode())
    leaf = authority.issue((tmp_path / "req.pem").read_text())
    (tmp_path / "leaf.pem").write_text(pem_of(leaf))
    (tmp_path / "root.pem").write_text(pem_of(authority.root))
    (tmp_path / "ca.pem").write_text(pem_of(authority.intermediate))
    uploaded = kmsctl(shared_agent, "upload-certificate", certificate_id,
                      str(tmp_path / "leaf.pem"), str(tmp_path / "root.pem"),
                      str(tmp_path / "ca.pem"))
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["Status"] == "ACTIVE"
    got = client.get_certificate(certificate_id)
    assert got["CertificateChain"] == authority.chain_pem()
    certificate = x509.load_pem_x509_certificate(got["Certificate"].encode())
    signature = client.certificate_private_key_sign(
        certificate_id, algorithm, MESSAGE)["SignatureValue"]
    verify_signature(certificate, algorithm, signature)


def test_kmsctl_sign_and_verify(shared_agent, client, ec_authority):
    """kmsctl signs with Base64 input, and the signature verifies."""
    certificate_id, leaf = active(client, ec_authority)
    encoded = base64.b64encode(MESSAGE).decode()
    signed = kmsctl(shared_agent, "CertificatePrivateKeySign", "--CertificateId",
                    certificate_id, "--Algorithm", "ECDSA_SHA_256", "--Message",
                    encoded)
    assert signed.returncode == 0, signed.stderr
    signature = base64.b64decode(json.loads(signed.stdout)["SignatureValue"])
    verify_signature(leaf, "ECDSA_SHA_256", signature)
    verified = client.certificate_public_key_verify(certificate_id, "ECDSA_SHA_256",
                                                    MESSAGE, signature)
    assert verified["SignatureValid"] is True


def test_sm2_certificate_flow(client, now):
    """An EC_SM2 certificate under an SM2 CA signs; tongsuopy verifies."""
    authority = TestAuthority(now, "sm2")
    certificate_id, request = create(client, "EC_SM2")
    assert client.describe_certificate(certificate_id)["ProtectionLevel"] == "SOFTWARE"
    csr = x509.load_pem_x509_csr(request.encode())
    described = client.describe_certificate(certificate_id)
    public = sm_serialization.load_pem_public_key(
        described["SubjectPublicKey"].encode())
    public.verify(csr.signature, csr.tbs_certrequest_bytes,
                  sm_ec.ECDSA(sm_hashes.SM3()))
    client.upload_certificate(certificate_id, pem_of(authority.issue(request)),
                              authority.chain_pem())
    signature = client.certificate_private_key_sign(
        certificate_id, "SM2DSA", MESSAGE)["SignatureValue"]
    public.verify(signature, MESSAGE, sm_ec.ECDSA(sm_hashes.SM3()))


# --- a TLS server with the exported bundle --------------------------------------


def serve_once(context: ssl.SSLContext, listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with context.wrap_socket(connection, server_side=True) as tls:
        tls.sendall(tls.recv(64).upper())


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_tls_server_with_bundle(shared_agent, client, ec_authority, tmp_path,
                                passphrase):
    """kmsctl export-tls-bundle files serve TLS; the client verifies the chain."""
    certificate_id, _ = active(client, ec_authority)
    cert_file, key_file = tmp_path / "fullchain.pem", tmp_path / "key.pem"
    options = [] if passphrase is None else ["--Passphrase", passphrase]
    exported = kmsctl(shared_agent, "export-tls-bundle", certificate_id,
                      str(cert_file), str(key_file), *options)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "root.pem").write_text(pem_of(ec_authority.root))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file, password=passphrase)
    verifier = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=serve_once, args=(server, listener))
        thread.start()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with verifier.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hello")
                echoed = tls.recv(64)
                peer = tls.getpeercert()
        thread.join(30)
    assert echoed == b"HELLO"
    assert dict(item[0] for item in peer["subject"])["commonName"] == "localhost"


# --- export and import -------------------------------------------------------------


def test_pkcs12_export_import(client, ec_authority):
    """An HSM key exports as PKCS#12 and imports back as an HSM certificate."""
    certificate_id, leaf = active(client, ec_authority)
    blob = client.export_certificate(certificate_id, "PKCS12",
                                     PASSPHRASE)["PKCS12Blob"]
    key, certificate, others = pkcs12.load_key_and_certificates(blob,
                                                                PASSPHRASE.encode())
    assert certificate == leaf
    assert key.public_key() == leaf.public_key()
    assert others == [ec_authority.intermediate, ec_authority.root]
    imported = client.import_certificate(blob, PASSPHRASE)["CertificateId"]
    described = client.describe_certificate(imported)
    assert described["ProtectionLevel"] == "HSM"
    assert described["Status"] == "ACTIVE"
    signature = client.certificate_private_key_sign(
        imported, "ECDSA_SHA_256", MESSAGE)["SignatureValue"]
    verify_signature(leaf, "ECDSA_SHA_256", signature)


def test_exported_key_not_logged(shared_agent, client, ec_authority):
    """Neither the exported key nor its passphrase reaches the agent's log."""
    certificate_id, _ = active(client, ec_authority)
    exported = client.export_certificate(certificate_id, "PEM")["PrivateKey"]
    body = "".join(exported.splitlines()[1:-1])
    client.export_certificate(certificate_id, "PEM", PASSPHRASE)
    log = shared_agent.log_text()
    assert "ExportCertificate" in log
    assert body[:40] not in log
    assert PASSPHRASE not in log


# --- bad input: a typed error and no change -----------------------------------------


def described(client, certificate_id: str) -> dict:
    reply = client.describe_certificate(certificate_id)
    del reply["RequestId"]
    return reply


def expect_unchanged(client, certificate_id: str, error_type, call) -> errors.KmsError:
    before = described(client, certificate_id)
    with pytest.raises(error_type) as caught:
        call()
    assert described(client, certificate_id) == before
    return caught.value


def test_upload_errors_change_nothing(client, ec_authority):
    """Foreign key, malformed PEM and a missing link are typed and harmless."""
    certificate_id, request = create(client)
    _, other_request = create(client)
    expect_unchanged(client, certificate_id, errors.CertificateKeyMismatchError,
                     lambda: client.upload_certificate(
                         certificate_id, pem_of(ec_authority.issue(other_request)),
                         ec_authority.chain_pem()))
    expect_unchanged(client, certificate_id, errors.CertificateMalformedError,
                     lambda: client.upload_certificate(certificate_id, "not PEM"))
    error = expect_unchanged(
        client, certificate_id, errors.CertificateChainIncompleteError,
        lambda: client.upload_certificate(
            certificate_id, pem_of(ec_authority.issue(request)),
            pem_of(ec_authority.root)))
    assert "CN=Test Intermediate" in error.message


def test_create_errors_store_nothing(client):
    """A subject without OU and eleven names are InvalidParameter."""
    total = client.list_certificates()["TotalCount"]
    with pytest.raises(errors.InvalidParameterError):
        client.create_certificate("EC_P256", "CN=a,O=b,C=CN")
    with pytest.raises(errors.InvalidParameterError):
        client.create_certificate("EC_P256", SUBJECT, subject_alternative_names=[
            f"n{index}.example.com" for index in range(11)])
    assert client.list_certificates()["TotalCount"] == total


def test_status_errors_change_nothing(client, ec_authority):
    """Oversized messages, INACTIVE and REVOKED certificates are refused."""
    certificate_id, _ = active(client, ec_authority)
    expect_unchanged(client, certificate_id, errors.InvalidParameterError,
                     lambda: client.certificate_private_key_sign(
                         certificate_id, "ECDSA_SHA_256", b"x" * 4097))
    client.update_certificate_status(certificate_id, "INACTIVE")
    expect_unchanged(client, certificate_id, errors.CertificateStatusError,
                     lambda: client.certificate_private_key_sign(
                         certificate_id, "ECDSA_SHA_256", MESSAGE))
    client.update_certificate_status(certificate_id, "REVOKED")
    expect_unchanged(client, certificate_id, errors.CertificateStatusError,
                     lambda: client.certificate_private_key_sign(
                         certificate_id, "ECDSA_SHA_256", MESSAGE))
    expect_unchanged(client, certificate_id, errors.CertificateStatusError,
                     lambda: client.update_certificate_status(certificate_id,
                                                              "ACTIVE"))


def test_kmsctl_non_exportable(shared_agent, client, ec_authority):
    """kmsctl CreateCertificate with ExportablePrivateKey=false; export exits 1."""
    created = kmsctl(shared_agent, "CreateCertificate", "--KeySpec", "EC_P256",
                     "--Subject", SUBJECT, "--SubjectAlternativeNames",
                     '["localhost"]', "--ExportablePrivateKey", "false")
    assert created.returncode == 0, created.stderr
    reply = json.loads(created.stdout)
    certificate_id = reply["CertificateId"]
    client.upload_certificate(certificate_id, pem_of(ec_authority.issue(reply["Csr"])),
                              ec_authority.chain_pem())
    refused = kmsctl(shared_agent, "ExportCertificate", "--CertificateId",
                     certificate_id, "--ExportFormat", "PEM")
    assert refused.returncode == 1
    assert json.loads(refused.stderr)["Code"] == "Certificate.NotExportable"


def test_delete_then_not_found(client, ec_authority):
    """A deleted certificate is Certificate.NotFound for every call."""
    certificate_id, _ = active(client, ec_authority)
    client.delete_certificate(certificate_id)
    with pytest.raises(errors.CertificateNotFoundError):
        client.describe_certificate(certificate_id)
    with pytest.raises(errors.CertificateNotFoundError):
        client.certificate_private_key_sign(certificate_id, "ECDSA_SHA_256", MESSAGE)


def test_certificate_survives_restart(running_agent, now):
    """After a restart, the certificate's HSM key still signs for its certificate."""
    authority = TestAuthority(now, "ec")
    with KmsClient(running_agent.socket) as first:
        certificate_id, leaf = active(first, authority)
    running_agent.stop()
    restarted = launch(running_agent.config, running_agent.config.parent)
    try:
        with KmsClient(restarted.socket) as second:
            signature = second.certificate_private_key_sign(
                certificate_id, "ECDSA_SHA_256", MESSAGE)["SignatureValue"]
            status = second.describe_certificate(certificate_id)["Status"]
    finally:
        restarted.stop()
    verify_signature(leaf, "ECDSA_SHA_256", signature)
    assert status == "ACTIVE"
