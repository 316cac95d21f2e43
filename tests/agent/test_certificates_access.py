"""Access control of certificate operations: certificate/<id> resources.

The real dispatcher, access stage, certificate service and SQLite store
run over two software keystores, ``tenant-a`` (the default) and
``tenant-b``. Callers are named by uid, as in tests/auth.
"""

from __future__ import annotations

import copy
import types

import pytest

from agent.auth.client_keys import ClientKeyService
from agent.auth.control import AccessControl
from agent.auth.policy import AccessConfigError, Pattern, parse_access, parse_pattern
from agent.auth.stage import AccessStage
from agent.certificates import ops as certificate_ops
from agent.certificates.service import CertificateService
from agent.context import FakeClock, Peer, RequestContext
from agent.keys.service import KeyService
from agent.keystore import KeystoreSettings, open_keystore
from agent.rpc.dispatch import Dispatcher
from agent.store.sqlite import SqliteStore
from client import errors
from tests.agent.certificate_authority import TestAuthority, pem_of

ADMIN, ALICE, BOB, CAROL = 0, 1001, 1002, 1004
SUBJECT = "CN=app,OU=web,O=Example,C=CN"
PRINCIPALS = {
    "admin": {"uids": [ADMIN], "keystores": ["*"]},
    "alice": {"uids": [ALICE], "keystores": ["tenant-a"]},
    "bob": {"uids": [BOB], "keystores": ["tenant-b"]},
    "carol": {"uids": [CAROL], "keystores": ["*"]},
}
POLICIES = {
    "admin-all": {"principals": ["admin"], "permissions": ["administrator", "key-user"],
                  "resources": ["certificate/*"]},
    "alice-use": {"principals": ["alice"], "permissions": ["key-user"],
                  "resources": ["certificate/*"]},
    "bob-all": {"principals": ["bob"], "permissions": ["administrator", "key-user"],
                "resources": ["certificate/*"]},
    "carol-keys": {"principals": ["carol"],
                   "permissions": ["administrator", "key-user"],
                   "resources": ["key/*"]},
}


class Agent:
    """A dispatcher with the access stage over two software keystores.

    ``policies`` is read again by ``reload``, as a SIGHUP would.
    """

    def __init__(self, store, keystores, policies):
        clock = FakeClock()
        self.clock = clock
        self.policies = policies
        keys = KeyService(store, keystores, "tenant-a", clock, "local")
        self.control = AccessControl(self.load(keystores),
                                     ClientKeyService(store, clock),
                                     lambda: self.load(keystores))
        services = types.SimpleNamespace(
            keys=keys, certificates=CertificateService.from_keys(keys),
            auth=self.control)
        self.dispatcher = Dispatcher(certificate_ops.OPERATIONS, services,
                                     stages=[AccessStage(self.control, services)])

    def load(self, keystores):
        return parse_access(PRINCIPALS, self.policies, set(keystores))

    async def call(self, uid, op, **params):
        ctx = RequestContext.new(op, Peer(uid, uid, 4000 + uid))
        return await self.dispatcher.handle(ctx, params)

    async def active(self, uid=ADMIN, keystore="tenant-a") -> str:
        created = await self.call(uid, "CreateCertificate", KeySpec="EC_P256",
                                  Subject=SUBJECT, DKMSInstanceId=keystore)
        authority = TestAuthority(self.clock.now())
        await self.call(uid, "UploadCertificate",
                        CertificateId=created["CertificateId"],
                        Certificate=pem_of(authority.issue(created["Csr"])),
                        CertificateChain=authority.chain_pem())
        return created["CertificateId"]


async def make_agent(tmp_path, policies=None) -> tuple[Agent, list]:
    keystores = {}
    for name in ("tenant-a", "tenant-b"):
        keystores[name] = await open_keystore(KeystoreSettings(
            name=name, type="software", domain_key_file=tmp_path / f"{name}.key"))
    store = SqliteStore(tmp_path / "data")
    return (Agent(store, keystores, copy.deepcopy(policies or POLICIES)),
            [store, *keystores.values()])


@pytest.fixture
async def agent(tmp_path):
    instance, closables = await make_agent(tmp_path)
    yield instance
    for closable in closables:
        await closable.aclose()


async def refusal(agent, uid, op, **params) -> errors.KmsError:
    with pytest.raises(errors.KmsError) as caught:
        await agent.call(uid, op, **params)
    return caught.value


def test_certificate_patterns_parse():
    """Policies accept certificate/<id> and certificate/*, not an empty name."""
    assert parse_pattern("p", "certificate/*") == Pattern("certificate")
    assert parse_pattern("p", "certificate/abc") == Pattern("certificate", "abc")
    with pytest.raises(AccessConfigError):
        parse_pattern("p", "certificate/")


async def test_key_user_signs_not_exports(agent):
    """A key user describes and signs, but may not export or create."""
    certificate_id = await agent.active()
    await agent.call(ALICE, "DescribeCertificate", CertificateId=certificate_id)
    await agent.call(ALICE, "CertificatePrivateKeySign", CertificateId=certificate_id,
                     Algorithm="ECDSA_SHA_256", Message=b"m")
    for op, params in [("ExportCertificate", {"CertificateId": certificate_id,
                                              "ExportFormat": "PEM"}),
                       ("CreateCertificate", {"KeySpec": "EC_P256",
                                              "Subject": SUBJECT}),
                       ("DeleteCertificate", {"CertificateId": certificate_id})]:
        error = await refusal(agent, ALICE, op, **params)
        assert isinstance(error, errors.NoPermissionError)


async def test_other_keystore_hidden(agent):
    """A principal of another keystore gets NoPermission, for real and missing ids."""
    certificate_id = await agent.active()
    existing = await refusal(agent, BOB, "DescribeCertificate",
                             CertificateId=certificate_id)
    missing = await refusal(agent, BOB, "DescribeCertificate", CertificateId="nope")
    assert isinstance(existing, errors.NoPermissionError)
    assert isinstance(missing, errors.NoPermissionError)
    admin_missing = await refusal(agent, ADMIN, "DescribeCertificate",
                                  CertificateId="nope")
    assert isinstance(admin_missing, errors.CertificateNotFoundError)


async def test_list_shows_own_keystore(agent):
    """ListCertificates shows a keystore-bound principal its keystore only."""
    await agent.active()
    own = await agent.active(uid=BOB, keystore="tenant-b")
    listed = await agent.call(BOB, "ListCertificates")
    assert [c["CertificateId"] for c in listed["Certificates"]["Certificate"]] == [own]
    assert (await agent.call(ADMIN, "ListCertificates"))["TotalCount"] == 2


async def test_create_in_foreign_keystore(agent):
    """Creating in a keystore the principal is not bound to is refused."""
    error = await refusal(agent, BOB, "CreateCertificate", KeySpec="EC_P256",
                          Subject=SUBJECT, DKMSInstanceId="tenant-a")
    assert isinstance(error, errors.NoPermissionError)


async def test_key_grants_do_not_cover(agent):
    """Grants on key/* give no access to certificates."""
    certificate_id = await agent.active()
    error = await refusal(agent, CAROL, "CertificatePrivateKeySign",
                          CertificateId=certificate_id, Algorithm="ECDSA_SHA_256",
                          Message=b"m")
    assert isinstance(error, errors.NoPermissionError)


async def test_grant_one_certificate(agent):
    """A grant on certificate/<id> covers that certificate and no other."""
    first = await agent.active()
    second = await agent.active()
    agent.policies["carol-one"] = {
        "principals": ["carol"], "permissions": ["key-user"],
        "resources": [f"certificate/{first}"]}
    agent.control.reload()
    await agent.call(CAROL, "DescribeCertificate", CertificateId=first)
    error = await refusal(agent, CAROL, "DescribeCertificate", CertificateId=second)
    assert isinstance(error, errors.NoPermissionError)
