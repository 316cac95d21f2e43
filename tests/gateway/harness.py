"""A gateway over a fake-keystore agent, for unit tests.

``GatewayAgent`` runs the real dispatcher, operation table, access stage
(through ``GatewayAccess``), services and SQLite store over a
FakeKeystore and a FakeClock, and the gateway's protocol modules on
top. ``sign_acs3``, ``sign_rpc`` and ``sign_dkms`` build signed
requests the way the official SDKs do, so tests can then break one part.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import hashlib
import hmac
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.auth.client_keys import ClientKeyService
from agent.auth.control import AccessControl
from agent.auth.policy import parse_access
from agent.auth.stage import AccessStage
from agent.config import SecretsConfig
from agent.context import FakeClock, Peer
from agent.daemon import Services, all_operations
from agent.gateway.credentials import CredentialsFile
from agent.gateway.http import GatewayServices, HttpRequest
from agent.gateway.identity import GatewayAccess
from agent.gateway.replay import NonceCache
from agent.keys.service import KeyService
from agent.rpc.dispatch import Dispatcher
from agent.secrets.service import SecretService
from agent.store.sqlite import SqliteStore
from tests.fakes import FakeKeystore

ACCESS_KEY_ID = "LTAIapp0000000000001"
ACCESS_KEY_SECRET = "app-secret-0123456789abcdef"
READER_KEY_ID = "LTAIreader0000000001"
READER_SECRET = "reader-secret-0123456789ab"
GHOST_KEY_ID = "LTAIghost00000000001"
GHOST_SECRET = "ghost-secret-0123456789abc"
UNIX_KEY_ID = "LTAIunix000000000001"
UNIX_SECRET = "unix-secret-0123456789abcd"
CLIENT_KEY_ID = "KAAP.00000000-0000-4000-8000-000000000001"
EXPIRED_CLIENT_KEY_ID = "KAAP.00000000-0000-4000-8000-000000000002"

PRINCIPALS = {
    "app": {"client_key": True, "keystores": ["*"]},
    "reader": {"client_key": True, "keystores": ["*"]},
    "owner": {"uids": [os.getuid()], "keystores": ["*"]},
    # Needs its AccessKey and a peer of this uid: the gateway's Unix socket.
    "local-app": {"client_key": True, "uids": [os.getuid()], "keystores": ["*"]},
}
POLICIES = {
    "app-all": {"principals": ["app", "owner", "local-app"],
                "permissions": ["administrator", "key-user", "secret-user"],
                "resources": ["key/*", "secret/*", "agent"]},
    "reader-secrets": {"principals": ["reader"], "permissions": ["secret-user"],
                       "resources": ["secret/*"]},
}


@functools.lru_cache(maxsize=None)
def client_private_key(name: str = "app") -> rsa.RSAPrivateKey:
    """Return an RSA key per name, made once per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    """Return the SubjectPublicKeyInfo PEM of a private key."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def write_credentials(path: Path) -> None:
    """Write the credentials file the tests use, with mode 0600."""
    text = f"""
[access_keys.{ACCESS_KEY_ID}]
principal = "app"
secret = "{ACCESS_KEY_SECRET}"

[access_keys.{READER_KEY_ID}]
principal = "reader"
secret = "{READER_SECRET}"

[access_keys.{GHOST_KEY_ID}]
principal = "ghost"
secret = "{GHOST_SECRET}"

[access_keys.{UNIX_KEY_ID}]
principal = "local-app"
secret = "{UNIX_SECRET}"

[client_keys."{CLIENT_KEY_ID}"]
principal = "app"
public_key = '''{public_pem(client_private_key())}'''

[client_keys."{EXPIRED_CLIENT_KEY_ID}"]
principal = "app"
public_key = '''{public_pem(client_private_key())}'''
not_after = "2020-01-01T00:00:00Z"
"""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)


class GatewayAgent:
    """The dispatcher with access control, and the gateway's services."""

    def __init__(self, tmp_path: Path):
        self.clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
        self.store = SqliteStore(tmp_path / "data")
        self.keys = KeyService(self.store, {"default": FakeKeystore()}, "default",
                               self.clock, "local")
        self.secrets = SecretService(self.store, self.keys, self.clock,
                                     SecretsConfig(),
                                     timer=lambda: self.clock.now().timestamp())
        access = parse_access(PRINCIPALS, POLICIES, {"default"})
        self.control = AccessControl(access, ClientKeyService(self.store, self.clock))
        self.services = Services(keys=self.keys, secrets=self.secrets,
                                 auth=self.control)
        stage = AccessStage(GatewayAccess(self.control), self.services)
        self.dispatcher = Dispatcher(all_operations(), self.services, stages=[stage])
        self.credentials_path = tmp_path / "gateway-credentials.toml"
        write_credentials(self.credentials_path)
        self.monotonic = 1000.0
        self.gateway = GatewayServices(
            self.dispatcher, CredentialsFile(self.credentials_path),
            NonceCache(lambda: self.monotonic), self.clock)

    def now_text(self) -> str:
        """Return the clock as the OpenAPI SDKs format it."""
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


# --- OpenAPI signing, as alibabacloud-tea-openapi does it --------------------


def _encode(text: str) -> str:
    return quote(text, safe="~")


def _form(pairs: dict[str, str]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs.items())


def sign_acs3(agent: GatewayAgent, action: str, query: dict[str, str],
              form: dict[str, str] | None = None, key_id: str = ACCESS_KEY_ID,
              secret: str = ACCESS_KEY_SECRET, nonce: str | None = None,
              date: str | None = None, extra_headers: dict[str, str] | None = None,
              peer: Peer | None = None) -> HttpRequest:
    """Return an ACS3-HMAC-SHA256 signed request, as the SDK builds it."""
    body = _form(form).encode("ascii") if form else b""
    headers = {
        "host": "127.0.0.1:18600", "x-acs-version": "2016-01-20",
        "x-acs-action": action, "user-agent": "test",
        "x-acs-date": date or agent.now_text(),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "accept": "application/json",
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        **(extra_headers or {}),
    }
    if form:
        headers["content-type"] = "application/x-www-form-urlencoded"
    names = sorted(headers)
    canonical_query = "&".join(f"{k}={_encode(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join([
        "POST", "/", canonical_query,
        "".join(f"{n}:{headers[n].strip()}\n" for n in names), ";".join(names),
        headers["x-acs-content-sha256"]])
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={key_id},"
        f"SignedHeaders={';'.join(names)},Signature={signature}")
    target = "/?" + _form(query) if query else "/"
    return HttpRequest("POST", target, tuple(headers.items()), body,
                       peer or Peer(None, None, None))


def sign_rpc(agent: GatewayAgent, action: str, query: dict[str, str],
             key_id: str = ACCESS_KEY_ID, secret: str = ACCESS_KEY_SECRET,
             nonce: str | None = None, timestamp: str | None = None) -> HttpRequest:
    """Return an HMAC-SHA1 (signature version 1.0) signed request."""
    params = {"Action": action, "Format": "json", "Version": "2016-01-20",
              "Timestamp": timestamp or agent.now_text(),
              "SignatureNonce": nonce or uuid.uuid4().hex, **query,
              "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
              "AccessKeyId": key_id}
    canonical = "&".join(f"{_encode(k)}={_encode(v)}"
                         for k, v in sorted(params.items()))
    to_sign = f"POST&%2F&{_encode(canonical)}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    params["Signature"] = base64.b64encode(mac).decode()
    headers = (("host", "127.0.0.1:18600"), ("x-acs-action", action),
               ("x-acs-version", "2016-01-20"))
    return HttpRequest("POST", "/?" + _form(params), headers, b"",
                       Peer(None, None, None))


# --- dedicated-instance signing, as alibabacloud-dkms-gcs does it ------------


def sign_dkms(api: str, body: bytes, key_id: str = CLIENT_KEY_ID,
              private_key: rsa.RSAPrivateKey | None = None,
              date: str | None = None, extra: tuple[tuple[str, str], ...] = ()
              ) -> HttpRequest:
    """Return a client key signed dedicated-instance request."""
    headers = {
        "accept": "application/x-protobuf", "host": "127.0.0.1:18600",
        "date": date or email.utils.formatdate(time.time(), usegmt=True),
        "x-kms-apiversion": "dkms-gcs-0.2", "x-kms-apiname": api,
        "x-kms-signaturemethod": "RSA_PKCS1_SHA_256",
        "x-kms-acccesskeyid": key_id, "content-type": "application/x-protobuf",
        "content-length": str(len(body)),
        "content-sha256": hashlib.sha256(body).hexdigest().upper(),
    }
    signed = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items())
                     if k.startswith("x-kms-"))
    to_sign = (f"POST\n{headers['content-sha256']}\n{headers['content-type']}\n"
               f"{headers['date']}\n{signed}/")
    key = private_key or client_private_key()
    signature = key.sign(to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    headers["authorization"] = "Bearer " + base64.b64encode(signature).decode()
    return HttpRequest("POST", "/", (*headers.items(), *extra), body,
                       Peer(None, None, None))
