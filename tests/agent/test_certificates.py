"""Certificates Manager operations through the dispatcher.

These run the real schemas, handlers, service, SQLite store and
SoftwareKeystore (domain key in tmp_path) with a FakeClock. A local CA
(``certificate_authority``) issues the certificates, and every request,
signature and export is checked with cryptography or tongsuopy, never
with agent code. HSM keys are covered in tests/integration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import types

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from agent.certificates import ops as certificate_ops
from agent.certificates.service import CertificateService
from agent.context import FakeClock, Peer, RequestContext
from agent.keys.service import KeyService
from agent.keystore import KeystoreSettings, open_keystore
from agent.rpc.dispatch import Dispatcher
from agent.store.sqlite import SqliteStore
from client import errors
from tests.agent.certificate_authority import (
    DAY, Signer, TestAuthority, make_certificate, name, pem_of,
)

SUBJECT = "CN=app.example.com,OU=web,O=Example,C=CN"
SANS = ["app.example.com", "127.0.0.1"]
MESSAGE = b"a message signed with a certificate key"
PSS = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO)
OAEP_256 = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


class Agent:
    """A dispatcher over a fresh store and a software keystore."""

    def __init__(self, store: SqliteStore, keystore, clock: FakeClock):
        self.clock = clock
        self.store = store
        self.keystore = keystore
        keys = KeyService(store, {"default": keystore}, "default", clock, "local")
        self.certificates = CertificateService.from_keys(keys)
        # The handlers reach only these two services.
        services = types.SimpleNamespace(keys=keys, certificates=self.certificates)
        self.dispatcher = Dispatcher(certificate_ops.OPERATIONS, services)

    async def call(self, op, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        return await self.dispatcher.handle(ctx, params)

    async def create(self, spec: str = "EC_P256", **params) -> tuple[str, str]:
        """Create a certificate; return its id and PEM request."""
        reply = await self.call("CreateCertificate", KeySpec=spec, Subject=SUBJECT,
                                SubjectAlternativeNames=SANS, **params)
        return reply["CertificateId"], reply["Csr"]

    async def active(self, spec: str = "EC_P256",
                     authority: TestAuthority | None = None,
                     **params) -> tuple[str, x509.Certificate]:
        """Create a certificate and upload its CA-issued certificate and chain."""
        authority = authority or self.authority("ec" if spec != "EC_SM2" else "sm2")
        certificate_id, request = await self.create(spec, **params)
        leaf = authority.issue(request)
        await self.call("UploadCertificate", CertificateId=certificate_id,
                        Certificate=pem_of(leaf),
                        CertificateChain=authority.chain_pem())
        return certificate_id, leaf

    def authority(self, kind: str = "ec", **options) -> TestAuthority:
        return TestAuthority(self.clock.now(), kind, **options)

    async def snapshot(self, certificate_id: str):
        return await self.store.get_certificate(certificate_id)


@pytest.fixture
async def agent(tmp_path):
    keystore = await open_keystore(KeystoreSettings(
        name="default", type="software", domain_key_file=tmp_path / "domain.key"))
    store = SqliteStore(tmp_path / "data")
    yield Agent(store, keystore, FakeClock())
    await keystore.aclose()
    await store.aclose()


def load_csr(request: str) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(request.encode())


def sm2_public_key(certificate: x509.Certificate):
    der = certificate.public_bytes(serialization.Encoding.DER)
    spki = asn1_x509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"]
    return sm_serialization.load_der_public_key(spki.dump())


def spki_of(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


async def expect(error_type, call):
    with pytest.raises(error_type) as caught:
        await call
    return caught.value


# --- CreateCertificate and the request ---------------------------------------


@pytest.mark.parametrize("spec", ["RSA_2048", "EC_P256"])
async def test_csr_verifies_in_cryptography(agent, spec):
    """The request loads in cryptography, verifies and carries the pair's key."""
    certificate_id, request = await agent.create(spec)
    csr = load_csr(request)
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    public = serialization.load_pem_public_key(described["SubjectPublicKey"].encode())
    assert csr.is_signature_valid
    assert csr.public_key() == public


async def test_csr_signature_algorithms(agent):
    """RSA requests use sha256WithRSAEncryption and EC ones ecdsa-with-SHA256."""
    _, rsa_request = await agent.create("RSA_2048")
    _, ec_request = await agent.create("EC_P256")
    assert load_csr(rsa_request).signature_algorithm_oid.dotted_string == \
        "1.2.840.113549.1.1.11"
    assert load_csr(ec_request).signature_algorithm_oid.dotted_string == \
        "1.2.840.10045.4.3.2"


async def test_csr_hashed_exactly_once(agent):
    """The ECDSA signature is over SHA-256 of the request info, DER-encoded."""
    _, request = await agent.create("EC_P256")
    csr = load_csr(request)
    csr.public_key().verify(csr.signature, csr.tbs_certrequest_bytes,
                            ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(csr.tbs_certrequest_bytes).digest()
    csr.public_key().verify(csr.signature, digest,
                            ec.ECDSA(utils.Prehashed(hashes.SHA256())))


async def test_csr_subject_and_names(agent):
    """The request has the parsed subject and the alternative names."""
    _, request = await agent.create("EC_P256")
    csr = load_csr(request)
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert csr.subject.rfc4514_string() == SUBJECT
    assert names.get_values_for_type(x509.DNSName) == ["app.example.com"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == \
        ["127.0.0.1"]


async def test_sm2_csr_verifies_with_tongsuopy(agent):
    """An EC_SM2 request is SM2-with-SM3 and verifies in the SM2 library."""
    certificate_id, request = await agent.create("EC_SM2")
    csr = load_csr(request)
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    public = sm_serialization.load_pem_public_key(
        described["SubjectPublicKey"].encode())
    assert csr.signature_algorithm_oid.dotted_string == "1.2.156.10197.1.501"
    public.verify(csr.signature, csr.tbs_certrequest_bytes,
                  sm_ec.ECDSA(sm_hashes.SM3()))


async def test_create_describes_pending(agent):
    """A new certificate is PENDING, exportable by default, with no validity yet."""
    certificate_id, _ = await agent.create("EC_P256", Tags=[
        {"TagKey": "team", "TagValue": "web"}])
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["Status"] == "PENDING"
    assert described["ExportablePrivateKey"] is True
    assert described["KeySpec"] == "EC_P256"
    assert described["SignatureAlgorithm"] == "ECDSA-SHA256"
    assert described["Arn"] == f"acs:kms:local:default:certificate/{certificate_id}"
    assert described["SubjectAlternativeNames"] == SANS
    assert described["Tags"] == {"Tag": [{"TagKey": "team", "TagValue": "web"}]}
    assert "ValidityStatus" not in described


@pytest.mark.parametrize("subject,part", [
    ("CN=a,O=b,C=CN", "OU"),
    ("CN=a,OU=w,O=b", "C"),
    ("OU=w,O=b,C=CN", "CN"),
])
async def test_subject_missing_part(agent, subject, part):
    """A subject without CN, C, O or OU is InvalidParameter naming the part."""
    error = await expect(errors.InvalidParameterError, agent.call(
        "CreateCertificate", KeySpec="EC_P256", Subject=subject))
    assert part in error.message
    assert (await agent.call("ListCertificates"))["TotalCount"] == 0


@pytest.mark.parametrize("subject", [
    "not a dn", "CN=a,OU=w,O=b,C=CHN", "CN=a,OU=w,O=b,C=CN,DC=example",
    "CN=a,CN=b,OU=w,O=b,C=CN", "CN=a+OU=w,O=b,C=CN",
])
async def test_subject_malformed(agent, subject):
    """Malformed subjects and unknown or repeated attributes are refused."""
    await expect(errors.InvalidParameterError, agent.call(
        "CreateCertificate", KeySpec="EC_P256", Subject=subject))
    assert (await agent.call("ListCertificates"))["TotalCount"] == 0


async def test_more_than_ten_names(agent):
    """Eleven subject alternative names are InvalidParameter; nothing is stored."""
    names = [f"n{index}.example.com" for index in range(11)]
    await expect(errors.InvalidParameterError, agent.call(
        "CreateCertificate", KeySpec="EC_P256", Subject=SUBJECT,
        SubjectAlternativeNames=names))
    assert (await agent.call("ListCertificates"))["TotalCount"] == 0


@pytest.mark.parametrize("names", [["bad name"], ["a.example.com", "a.example.com"],
                                   ["-x.example.com"], [7]])
async def test_bad_alternative_names(agent, names):
    """Entries that are no DNS name or IP address, or repeat, are refused."""
    await expect(errors.InvalidParameterError, agent.call(
        "CreateCertificate", KeySpec="EC_P256", Subject=SUBJECT,
        SubjectAlternativeNames=names))


# --- UploadCertificate --------------------------------------------------------


async def test_upload_chain_any_order(agent):
    """Issuers in any order, with duplicates and strangers, are stored in order."""
    authority = agent.authority()
    stranger = agent.authority(label="Other")
    certificate_id, request = await agent.create()
    leaf = authority.issue(request)
    shuffled = pem_of(authority.root, stranger.intermediate, authority.intermediate,
                      authority.root, stranger.root)
    await agent.call("UploadCertificate", CertificateId=certificate_id,
                     Certificate=pem_of(leaf), CertificateChain=shuffled)
    got = await agent.call("GetCertificate", CertificateId=certificate_id)
    assert got["Certificate"] == pem_of(leaf)
    assert got["CertificateChain"] == pem_of(authority.intermediate, authority.root)
    assert got["Csr"] == request
    stored = await agent.snapshot(certificate_id)
    assert stored.status == "ACTIVE"
    assert stored.chain == pem_of(leaf, authority.intermediate, authority.root)


async def test_upload_describes_certificate(agent):
    """After upload, Describe shows the certificate's issuer, serial and validity."""
    certificate_id, leaf = await agent.active()
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["Status"] == "ACTIVE"
    assert described["Issuer"] == leaf.issuer.rfc4514_string()
    assert described["Serial"] == format(leaf.serial_number, "x")
    assert described["NotAfter"] == leaf.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert described["ValidityStatus"] == "VALID"


async def test_upload_without_chain(agent):
    """A certificate uploaded alone is stored alone."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    await agent.call("UploadCertificate", CertificateId=certificate_id,
                     Certificate=pem_of(authority.issue(request)))
    got = await agent.call("GetCertificate", CertificateId=certificate_id)
    assert got["CertificateChain"] == ""


async def test_upload_foreign_key(agent):
    """A certificate for another key is KeyMismatch and changes nothing."""
    authority = agent.authority()
    certificate_id, _ = await agent.create()
    _, other_request = await agent.create()
    before = await agent.snapshot(certificate_id)
    await expect(errors.CertificateKeyMismatchError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(other_request)),
        CertificateChain=authority.chain_pem()))
    assert await agent.snapshot(certificate_id) == before


@pytest.mark.parametrize("text", [
    "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
async def test_upload_malformed_pem(agent, text):
    """Text that is not a PEM certificate is Certificate.Malformed."""
    certificate_id, _ = await agent.create()
    before = await agent.snapshot(certificate_id)
    await expect(errors.CertificateMalformedError, agent.call(
        "UploadCertificate", CertificateId=certificate_id, Certificate=text))
    assert await agent.snapshot(certificate_id) == before


async def test_upload_malformed_chain(agent):
    """A CertificateChain that is not PEM is Certificate.Malformed."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    await expect(errors.CertificateMalformedError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(request)), CertificateChain="garbage"))


async def test_upload_duplicate_extension(agent):
    """A certificate with an extension twice is Certificate.Malformed."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    issued = asn1_x509.Certificate.load(authority.issue(request).public_bytes(
        serialization.Encoding.DER))
    tbs = issued["tbs_certificate"].copy()
    tbs["extensions"] = [*tbs["extensions"], tbs["extensions"][0]]
    broken = asn1_x509.Certificate({
        "tbs_certificate": tbs, "signature_algorithm": issued["signature_algorithm"],
        "signature_value": authority.signer.sign(tbs.dump())})
    text = x509.load_der_x509_certificate(broken.dump()).public_bytes(
        serialization.Encoding.PEM).decode()
    before = await agent.snapshot(certificate_id)
    await expect(errors.CertificateMalformedError, agent.call(
        "UploadCertificate", CertificateId=certificate_id, Certificate=text))
    assert await agent.snapshot(certificate_id) == before


async def test_upload_two_certificates(agent):
    """Certificate must hold exactly one certificate."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    error = await expect(errors.CertificateMalformedError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(request), authority.intermediate)))
    assert "CertificateChain" in error.message


async def test_upload_missing_link(agent):
    """A chain without the intermediate names the issuer it lacks."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    before = await agent.snapshot(certificate_id)
    error = await expect(errors.CertificateChainIncompleteError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(request)),
        CertificateChain=pem_of(authority.root)))
    assert "CN=Test Intermediate" in error.message
    assert await agent.snapshot(certificate_id) == before


async def test_upload_chain_without_root(agent):
    """A chain that stops below a self-signed root is incomplete."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    error = await expect(errors.CertificateChainIncompleteError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(request)),
        CertificateChain=pem_of(authority.intermediate)))
    assert "CN=Test Root" in error.message


async def test_upload_impostor_issuer(agent):
    """An issuer with the right name but another key is ChainInvalid."""
    authority = agent.authority()
    impostor = agent.authority()
    certificate_id, request = await agent.create()
    await expect(errors.CertificateChainInvalidError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.issue(request)),
        CertificateChain=impostor.chain_pem()))
    assert (await agent.snapshot(certificate_id)).status == "PENDING"


async def test_upload_issuer_not_ca(agent):
    """An issuer without the CA flag is ChainInvalid."""
    now = agent.clock.now()
    root_signer = Signer("ec")
    root = make_certificate(name("Root"), root_signer.spki(), name("Root"),
                            root_signer, now - DAY, now + 30 * DAY, ca=True)
    middle_signer = Signer("ec")
    middle = make_certificate(name("Not a CA"), middle_signer.spki(), name("Root"),
                              root_signer, now - DAY, now + 30 * DAY, ca=False)
    certificate_id, request = await agent.create()
    csr = load_csr(request)
    leaf = make_certificate(csr.subject, spki_of(csr.public_key()), name("Not a CA"),
                            middle_signer, now - DAY, now + 30 * DAY)
    error = await expect(errors.CertificateChainInvalidError, agent.call(
        "UploadCertificate", CertificateId=certificate_id, Certificate=pem_of(leaf),
        CertificateChain=pem_of(middle, root)))
    assert "Not a CA" in error.message


async def test_name_constraints_enforced(agent):
    """A leaf name outside the intermediate's permitted subtree is refused."""
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.com"),
                            x509.IPAddress(ipaddress.ip_network("127.0.0.0/8"))],
        excluded_subtrees=None)
    authority = agent.authority(constraints=constraints)
    certificate_id, request = await agent.create()
    inside = authority.issue(request)
    outside = authority.issue(request, sans=[x509.DNSName("app.evil.test")])
    error = await expect(errors.CertificateChainInvalidError, agent.call(
        "UploadCertificate", CertificateId=certificate_id, Certificate=pem_of(outside),
        CertificateChain=authority.chain_pem()))
    assert "app.evil.test" in error.message
    await agent.call("UploadCertificate", CertificateId=certificate_id,
                     Certificate=pem_of(inside), CertificateChain=authority.chain_pem())
    assert (await agent.snapshot(certificate_id)).status == "ACTIVE"


async def test_upload_replaces_active(agent):
    """Uploading to an ACTIVE certificate replaces the certificate (renewal)."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    first = authority.issue(request)
    second = authority.issue(request, days=365)
    for leaf in (first, second):
        await agent.call("UploadCertificate", CertificateId=certificate_id,
                         Certificate=pem_of(leaf),
                         CertificateChain=authority.chain_pem())
    got = await agent.call("GetCertificate", CertificateId=certificate_id)
    assert got["Certificate"] == pem_of(second)


async def test_upload_takes_issued_subject(agent):
    """The subject and names the CA issued replace the requested ones."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    issued = authority.issue(request, subject=name("renamed.example.com", "Example"),
                             sans=[x509.DNSName("renamed.example.com")])
    await agent.call("UploadCertificate", CertificateId=certificate_id,
                     Certificate=pem_of(issued), CertificateChain=authority.chain_pem())
    listed = (await agent.call("ListCertificates"))["Certificates"]["Certificate"]
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert listed[0]["Subject"] == "CN=renamed.example.com,O=Example,C=CN"
    assert described["SubjectAlternativeNames"] == ["renamed.example.com"]


async def test_unknown_certificate(agent):
    """Every operation on an unknown id is Certificate.NotFound."""
    for op, params in [("DescribeCertificate", {}), ("GetCertificate", {}),
                       ("DeleteCertificate", {}),
                       ("UpdateCertificateStatus", {"Status": "ACTIVE"}),
                       ("UploadCertificate", {"Certificate": "x"})]:
        error = await expect(errors.CertificateNotFoundError,
                             agent.call(op, CertificateId="missing", **params))
        assert error.http_status == 404


# --- signing and verification ------------------------------------------------


@pytest.mark.parametrize("spec,algorithm", [
    ("RSA_2048", "RSA_PKCS1_SHA_256"), ("RSA_2048", "RSA_PSS_SHA_256"),
    ("EC_P256", "ECDSA_SHA_256"),
])
async def test_sign_verifies_with_certificate(agent, spec, algorithm):
    """A RAW signature verifies with the uploaded certificate's public key."""
    authority = agent.authority("rsa" if spec == "RSA_2048" else "ec")
    certificate_id, leaf = await agent.active(spec, authority)
    reply = await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                             Algorithm=algorithm, Message=MESSAGE, MessageType="RAW")
    public = leaf.public_key()
    if algorithm == "RSA_PKCS1_SHA_256":
        public.verify(reply["SignatureValue"], MESSAGE, padding.PKCS1v15(),
                      hashes.SHA256())
    elif algorithm == "RSA_PSS_SHA_256":
        public.verify(reply["SignatureValue"], MESSAGE, PSS, hashes.SHA256())
    else:
        public.verify(reply["SignatureValue"], MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert reply["CertificateId"] == certificate_id


async def test_sm2_chain_and_signature(agent):
    """An SM2 CA's chain uploads, and SM2DSA signatures verify in tongsuopy."""
    certificate_id, leaf = await agent.active("EC_SM2", agent.authority("sm2"))
    reply = await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                             Algorithm="SM2DSA", Message=MESSAGE)
    sm2_public_key(leaf).verify(reply["SignatureValue"], MESSAGE,
                                sm_ec.ECDSA(sm_hashes.SM3()))


async def test_sm2_leaf_under_ecdsa_ca(agent):
    """An ECDSA CA may certify an SM2 key; the chain still verifies."""
    certificate_id, _ = await agent.active("EC_SM2", agent.authority("ec"))
    assert (await agent.snapshot(certificate_id)).status == "ACTIVE"


async def test_digest_message(agent):
    """A DIGEST message is signed as given and verifies as the RAW message."""
    certificate_id, leaf = await agent.active()
    digest = hashlib.sha256(MESSAGE).digest()
    reply = await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                             Algorithm="ECDSA_SHA_256", Message=digest,
                             MessageType="DIGEST")
    verified = await agent.call(
        "CertificatePublicKeyVerify", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE, MessageType="RAW",
        SignatureValue=reply["SignatureValue"])
    assert verified["SignatureValid"] is True


async def test_verify_rejects_tampering(agent):
    """A signature over another message verifies as false."""
    certificate_id, _ = await agent.active()
    reply = await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                             Algorithm="ECDSA_SHA_256", Message=MESSAGE)
    verified = await agent.call(
        "CertificatePublicKeyVerify", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE + b"!",
        SignatureValue=reply["SignatureValue"])
    assert verified["SignatureValid"] is False


async def test_raw_message_limit(agent):
    """RAW messages of 4 KiB are signed; one byte more is InvalidParameter."""
    certificate_id, _ = await agent.active()
    await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                     Algorithm="ECDSA_SHA_256", Message=b"x" * 4096)
    await expect(errors.InvalidParameterError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=b"x" * 4097))


async def test_digest_wrong_length(agent):
    """A DIGEST message that is not 32 bytes is InvalidParameter."""
    certificate_id, _ = await agent.active()
    await expect(errors.InvalidParameterError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=b"x" * 31, MessageType="DIGEST"))


async def test_algorithm_of_other_spec(agent):
    """An RSA algorithm on an EC certificate is InvalidParameter."""
    certificate_id, _ = await agent.active()
    await expect(errors.InvalidParameterError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="RSA_PSS_SHA_256", Message=MESSAGE))


# --- statuses ------------------------------------------------------------------


async def test_pending_cannot_sign(agent):
    """A PENDING certificate neither signs nor changes status."""
    certificate_id, _ = await agent.create()
    await expect(errors.CertificateStatusError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE))
    await expect(errors.CertificateStatusError, agent.call(
        "UpdateCertificateStatus", CertificateId=certificate_id, Status="ACTIVE"))


async def test_inactive_refuses_everything(agent):
    """An INACTIVE certificate refuses sign, verify, encrypt, decrypt and export."""
    certificate_id, _ = await agent.active("RSA_2048", agent.authority("rsa"))
    await agent.call("UpdateCertificateStatus", CertificateId=certificate_id,
                     Status="INACTIVE")
    calls = [
        ("CertificatePrivateKeySign", {"Algorithm": "RSA_PSS_SHA_256",
                                       "Message": MESSAGE}),
        ("CertificatePublicKeyVerify", {"Algorithm": "RSA_PSS_SHA_256",
                                        "Message": MESSAGE,
                                        "SignatureValue": b"\0" * 256}),
        ("CertificatePublicKeyEncrypt", {"Algorithm": "RSAES_OAEP_SHA_256",
                                         "Plaintext": b"x"}),
        ("CertificatePrivateKeyDecrypt", {"Algorithm": "RSAES_OAEP_SHA_256",
                                          "CiphertextBlob": b"\0" * 256}),
        ("ExportCertificate", {"ExportFormat": "PEM"}),
    ]
    for op, params in calls:
        error = await expect(errors.CertificateStatusError,
                             agent.call(op, CertificateId=certificate_id, **params))
        assert error.http_status == 409
    await agent.call("UpdateCertificateStatus", CertificateId=certificate_id,
                     Status="ACTIVE")
    await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                     Algorithm="RSA_PSS_SHA_256", Message=MESSAGE)


async def test_revoked_only_verifies(agent):
    """A REVOKED certificate verifies signatures and nothing else, for good."""
    authority = agent.authority()
    certificate_id, _ = await agent.active(authority=authority)
    signed = await agent.call("CertificatePrivateKeySign",
                              CertificateId=certificate_id, Algorithm="ECDSA_SHA_256",
                              Message=MESSAGE)
    await agent.call("UpdateCertificateStatus", CertificateId=certificate_id,
                     Status="REVOKED")
    verified = await agent.call(
        "CertificatePublicKeyVerify", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE,
        SignatureValue=signed["SignatureValue"])
    assert verified["SignatureValid"] is True
    before = await agent.snapshot(certificate_id)
    await expect(errors.CertificateStatusError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE))
    await expect(errors.CertificateStatusError, agent.call(
        "UpdateCertificateStatus", CertificateId=certificate_id, Status="ACTIVE"))
    await expect(errors.CertificateStatusError, agent.call(
        "UploadCertificate", CertificateId=certificate_id,
        Certificate=pem_of(authority.root)))
    await expect(errors.CertificateStatusError, agent.call(
        "ExportCertificate", CertificateId=certificate_id, ExportFormat="PEM"))
    assert await agent.snapshot(certificate_id) == before


# --- validity --------------------------------------------------------------------


async def test_expired_refuses_signing(agent):
    """After NotAfter, Describe reports EXPIRED and signing is rejected."""
    certificate_id, _ = await agent.active()
    agent.clock.advance(days=120)
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["ValidityStatus"] == "EXPIRED"
    assert "CN=app.example.com" in described["ValidityMessage"]
    error = await expect(errors.CertificateOutsideValidityError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE))
    assert "AllowOutsideValidity" in error.message


async def test_expired_signs_when_allowed(agent):
    """AllowOutsideValidity=true signs with an expired certificate."""
    certificate_id, leaf = await agent.active()
    agent.clock.advance(days=120)
    reply = await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                             Algorithm="ECDSA_SHA_256", Message=MESSAGE,
                             AllowOutsideValidity=True)
    leaf.public_key().verify(reply["SignatureValue"], MESSAGE,
                             ec.ECDSA(hashes.SHA256()))


async def test_not_yet_valid(agent):
    """A certificate whose period starts later is NOT_YET_VALID until then."""
    authority = agent.authority()
    certificate_id, request = await agent.create()
    await agent.call("UploadCertificate", CertificateId=certificate_id,
                     Certificate=pem_of(authority.issue(request, starts=5)),
                     CertificateChain=authority.chain_pem())
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["ValidityStatus"] == "NOT_YET_VALID"
    await expect(errors.CertificateOutsideValidityError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE))
    agent.clock.advance(days=6)
    await agent.call("CertificatePrivateKeySign", CertificateId=certificate_id,
                     Algorithm="ECDSA_SHA_256", Message=MESSAGE)


async def test_expired_intermediate_counts(agent):
    """An issuer that expired makes the certificate EXPIRED, even if the leaf is not."""
    now = agent.clock.now()
    authority = agent.authority()
    authority.intermediate = make_certificate(
        authority.intermediate_name, authority.signer.spki(), authority.root_name,
        authority.root_signer, now - DAY, now + 10 * DAY, ca=True, path_length=0)
    certificate_id, _ = await agent.active(authority=authority)
    agent.clock.advance(days=20)
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["ValidityStatus"] == "EXPIRED"
    assert "Test Intermediate" in described["ValidityMessage"]


# --- encryption ------------------------------------------------------------------


async def test_rsa_encrypt_decrypt(agent):
    """OAEP ciphertext from cryptography decrypts, and the agent's round-trips."""
    certificate_id, leaf = await agent.active("RSA_2048", agent.authority("rsa"))
    foreign = leaf.public_key().encrypt(b"from outside", OAEP_256)
    opened = await agent.call("CertificatePrivateKeyDecrypt",
                              CertificateId=certificate_id,
                              Algorithm="RSAES_OAEP_SHA_256", CiphertextBlob=foreign)
    assert opened["Plaintext"] == b"from outside"
    sealed = await agent.call("CertificatePublicKeyEncrypt",
                              CertificateId=certificate_id,
                              Algorithm="RSAES_OAEP_SHA_1", Plaintext=b"x" * 214)
    opened = await agent.call("CertificatePrivateKeyDecrypt",
                              CertificateId=certificate_id,
                              Algorithm="RSAES_OAEP_SHA_1",
                              CiphertextBlob=sealed["CiphertextBlob"])
    assert opened["Plaintext"] == b"x" * 214


async def test_rsa_plaintext_limit(agent):
    """RSAES_OAEP_SHA_256 encrypts at most 190 bytes with RSA_2048."""
    certificate_id, _ = await agent.active("RSA_2048", agent.authority("rsa"))
    await expect(errors.InvalidParameterError, agent.call(
        "CertificatePublicKeyEncrypt", CertificateId=certificate_id,
        Algorithm="RSAES_OAEP_SHA_256", Plaintext=b"x" * 191))


async def test_ec_cannot_encrypt(agent):
    """EC_P256 certificates have no encryption: UnsupportedOperation."""
    certificate_id, _ = await agent.active()
    await expect(errors.UnsupportedOperationError, agent.call(
        "CertificatePublicKeyEncrypt", CertificateId=certificate_id,
        Algorithm="RSAES_OAEP_SHA_256", Plaintext=b"x"))


async def test_bad_ciphertext_opaque(agent):
    """A corrupted ciphertext is the one opaque InvalidCiphertext."""
    certificate_id, _ = await agent.active("RSA_2048", agent.authority("rsa"))
    await expect(errors.InvalidCiphertextError, agent.call(
        "CertificatePrivateKeyDecrypt", CertificateId=certificate_id,
        Algorithm="RSAES_OAEP_SHA_256", CiphertextBlob=b"\1" * 256))


async def test_sm2_encrypt_round_trip(agent):
    """SM2PKE encrypts to an EC_SM2 certificate and decrypts in the keystore."""
    certificate_id, _ = await agent.active("EC_SM2")
    sealed = await agent.call("CertificatePublicKeyEncrypt",
                              CertificateId=certificate_id, Algorithm="SM2PKE",
                              Plaintext=b"sm2 secret")
    opened = await agent.call("CertificatePrivateKeyDecrypt",
                              CertificateId=certificate_id, Algorithm="SM2PKE",
                              CiphertextBlob=sealed["CiphertextBlob"])
    assert opened["Plaintext"] == b"sm2 secret"


# --- export and import -------------------------------------------------------------


async def test_export_pem_with_passphrase(agent):
    """PEM export encrypts the key with the passphrase; it matches the certificate."""
    authority = agent.authority()
    certificate_id, leaf = await agent.active(authority=authority)
    exported = await agent.call("ExportCertificate", CertificateId=certificate_id,
                                ExportFormat="PEM", Passphrase="correct horse")
    assert "ENCRYPTED PRIVATE KEY" in exported["PrivateKey"]
    key = serialization.load_pem_private_key(exported["PrivateKey"].encode(),
                                             b"correct horse")
    assert key.public_key() == leaf.public_key()
    assert exported["Certificate"] == pem_of(leaf)
    assert exported["CertificateChain"] == authority.chain_pem()


async def test_export_pkcs12(agent):
    """PKCS12 export opens with the passphrase and contains key, leaf and chain."""
    authority = agent.authority("rsa")
    certificate_id, leaf = await agent.active("RSA_2048", authority)
    exported = await agent.call("ExportCertificate", CertificateId=certificate_id,
                                ExportFormat="PKCS12", Passphrase="pass phrase")
    key, certificate, others = pkcs12.load_key_and_certificates(
        exported["PKCS12Blob"], b"pass phrase")
    assert certificate == leaf
    assert key.public_key() == leaf.public_key()
    assert others == [authority.intermediate, authority.root]


async def test_export_not_exportable(agent):
    """A key created with ExportablePrivateKey=false never exports."""
    certificate_id, _ = await agent.active(ExportablePrivateKey=False)
    for export_format in ("PEM", "PKCS12"):
        error = await expect(errors.CertificateNotExportableError, agent.call(
            "ExportCertificate", CertificateId=certificate_id,
            ExportFormat=export_format, Passphrase="pass phrase"))
        assert error.http_status == 403


async def test_export_pkcs12_needs_passphrase(agent):
    """PKCS12 export without a Passphrase is MissingParameter."""
    certificate_id, _ = await agent.active()
    await expect(errors.MissingParameterError, agent.call(
        "ExportCertificate", CertificateId=certificate_id, ExportFormat="PKCS12"))


async def test_export_sm2(agent):
    """EC_SM2 exports as PEM, which tongsuopy opens, and refuses PKCS12."""
    certificate_id, leaf = await agent.active("EC_SM2")
    exported = await agent.call("ExportCertificate", CertificateId=certificate_id,
                                ExportFormat="PEM", Passphrase="sm2 pass")
    key = sm_serialization.load_pem_private_key(exported["PrivateKey"].encode(),
                                                b"sm2 pass")
    signature = key.sign(MESSAGE, sm_ec.ECDSA(sm_hashes.SM3()))
    sm2_public_key(leaf).verify(signature, MESSAGE, sm_ec.ECDSA(sm_hashes.SM3()))
    await expect(errors.UnsupportedOperationError, agent.call(
        "ExportCertificate", CertificateId=certificate_id, ExportFormat="PKCS12",
        Passphrase="sm2 pass"))


def pkcs12_file(authority: TestAuthority, key, passphrase: bytes, chain=True) -> bytes:
    public = spki_of(key.public_key())
    leaf = make_certificate(name("imported.example.com", "Example"), public,
                            authority.intermediate_name, authority.signer,
                            authority.now - DAY, authority.now + 30 * DAY,
                            sans=[x509.DNSName("imported.example.com")])
    others = [authority.root, authority.intermediate] if chain else None
    return pkcs12.serialize_key_and_certificates(
        b"imported", key, leaf, others,
        serialization.BestAvailableEncryption(passphrase))


async def test_import_pkcs12(agent):
    """ImportCertificate takes key and chain; the key then signs for the leaf."""
    authority = agent.authority()
    key = ec.generate_private_key(ec.SECP256R1())
    reply = await agent.call("ImportCertificate",
                             PKCS12Blob=pkcs12_file(authority, key, b"secret"),
                             Passphrase="secret")
    certificate_id = reply["CertificateId"]
    described = await agent.call("DescribeCertificate", CertificateId=certificate_id)
    assert described["Status"] == "ACTIVE"
    assert described["Subject"] == "CN=imported.example.com,O=Example,C=CN"
    assert described["SubjectAlternativeNames"] == ["imported.example.com"]
    signed = await agent.call("CertificatePrivateKeySign",
                              CertificateId=certificate_id, Algorithm="ECDSA_SHA_256",
                              Message=MESSAGE)
    key.public_key().verify(signed["SignatureValue"], MESSAGE,
                            ec.ECDSA(hashes.SHA256()))
    got = await agent.call("GetCertificate", CertificateId=certificate_id)
    assert got["CertificateChain"] == authority.chain_pem()
    assert got["Csr"] == ""


async def test_import_wrong_passphrase(agent):
    """A wrong passphrase is Certificate.Malformed, and nothing is stored."""
    authority = agent.authority()
    blob = pkcs12_file(authority, ec.generate_private_key(ec.SECP256R1()), b"right")
    await expect(errors.CertificateMalformedError, agent.call(
        "ImportCertificate", PKCS12Blob=blob, Passphrase="wrong"))
    await expect(errors.CertificateMalformedError, agent.call(
        "ImportCertificate", PKCS12Blob=b"not pkcs12", Passphrase="right"))
    assert (await agent.call("ListCertificates"))["TotalCount"] == 0


async def test_import_unsupported_key(agent):
    """A P-384 key in the PKCS#12 file is UnsupportedOperation."""
    authority = agent.authority()
    blob = pkcs12_file(authority, ec.generate_private_key(ec.SECP384R1()), b"p")
    await expect(errors.UnsupportedOperationError, agent.call(
        "ImportCertificate", PKCS12Blob=blob, Passphrase="p"))
    assert (await agent.call("ListCertificates"))["TotalCount"] == 0


async def test_import_not_exportable(agent):
    """An import with ExportablePrivateKey=false refuses export."""
    authority = agent.authority()
    blob = pkcs12_file(authority, rsa.generate_private_key(65537, 2048), b"p")
    reply = await agent.call("ImportCertificate", PKCS12Blob=blob, Passphrase="p",
                             ExportablePrivateKey=False)
    await expect(errors.CertificateNotExportableError, agent.call(
        "ExportCertificate", CertificateId=reply["CertificateId"], ExportFormat="PEM"))


# --- listing and deletion -------------------------------------------------------


async def test_list_pages(agent):
    """ListCertificates pages oldest first with the API's wrappers."""
    created = [(await agent.create())[0] for _ in range(3)]
    page = await agent.call("ListCertificates", PageNumber=2, PageSize=2)
    entries = page["Certificates"]["Certificate"]
    assert [entry["CertificateId"] for entry in entries] == created[2:]
    assert entries[0]["Status"] == "PENDING"
    assert page["TotalCount"] == 3


async def test_delete_certificate(agent):
    """DeleteCertificate removes the certificate, its key pair and tags."""
    certificate_id, _ = await agent.active(Tags=[{"TagKey": "a", "TagValue": "b"}])
    await agent.call("DeleteCertificate", CertificateId=certificate_id)
    assert await agent.snapshot(certificate_id) is None
    assert await agent.store.get_tags("certificate", certificate_id) == {}
    await expect(errors.CertificateNotFoundError, agent.call(
        "CertificatePrivateKeySign", CertificateId=certificate_id,
        Algorithm="ECDSA_SHA_256", Message=MESSAGE))


async def test_status_change_races(agent):
    """A status change retries after a concurrent writer bumped the revision."""
    certificate_id, _ = await agent.active()
    stored = await agent.snapshot(certificate_id)
    await agent.store.update_certificate(dataclasses.replace(stored))
    await agent.call("UpdateCertificateStatus", CertificateId=certificate_id,
                     Status="INACTIVE")
    assert (await agent.snapshot(certificate_id)).status == "INACTIVE"
