"""Client keys: issue, list, revoke and verify Ed25519 keys of principals.

``CreateClientKey`` makes a key pair for a principal whose configuration
sets ``client_key = true``, stores only the public key and returns the
private key once, as a PKCS#8 PEM. At handshake the client signs
``client.wire.client_key_proof_message(id, nonce)`` with it. ``verify``
checks the signature before the key's state and validity window, so a
caller without the private key learns nothing about a key id. Pure
domain logic: the store and the clock are passed in.
"""

from __future__ import annotations

import datetime
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey, Ed25519PublicKey,
)

from agent.auth.principals import Principal
from agent.context import Clock
from agent.store.access import (
    CLIENT_KEY_ENABLED, CLIENT_KEY_REVOKED, AccessStore, ClientKeyRecord,
)
from agent.store.records import format_time, parse_time
from client.errors import (
    ClientKeyExpiredError, ClientKeyInvalidError, ClientKeyRevokedError,
    InvalidParameterError, ResourceNotFoundError,
)
from client.wire import client_key_proof_message

ALGORITHM = "Ed25519"
CLIENT_KEY_PREFIX = "KAAP."
# One year by default, shorter than the cloud's five: a leaked key file
# should not outlive the deployment it was made for.
DEFAULT_VALIDITY = datetime.timedelta(days=365)
MAX_VALIDITY = datetime.timedelta(days=3650)
# Verified against when the key id is unknown, so that an unknown id
# costs the same work as a forged signature.
_DECOY_KEY = Ed25519PrivateKey.generate().public_key()


def _parse_time(name: str, text: str) -> datetime.datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise InvalidParameterError(
            f"{name} {text!r} is not a UTC time such as 2027-01-31T00:00:00Z."
        ) from None


class ClientKeyService:
    """Client keys over one store and clock."""

    def __init__(self, store: AccessStore, clock: Clock):
        self.store = store
        self.clock = clock

    async def create(self, principal: Principal, not_before: str | None,
                     not_after: str | None) -> tuple[ClientKeyRecord, str]:
        """Issue a key for ``principal``; return its record and private PEM.

        Raises:
            InvalidParameterError: the principal takes no client keys, or
                the window is malformed, empty or longer than ten years.
        """
        if not principal.client_key:
            raise InvalidParameterError(
                f"Principal {principal.name} does not take client keys; set "
                "client_key = true in its [principals] table.")
        now = self.clock.now()
        start = _parse_time("NotBefore", not_before) if not_before else now
        end = _parse_time("NotAfter", not_after) if not_after else start + \
            DEFAULT_VALIDITY
        if not start < end or end <= now or end - start > MAX_VALIDITY:
            raise InvalidParameterError(
                "NotAfter must be later than NotBefore and now, and at most "
                f"{MAX_VALIDITY.days} days after NotBefore.")
        private = Ed25519PrivateKey.generate()
        record = ClientKeyRecord(
            client_key_id=CLIENT_KEY_PREFIX + str(uuid.uuid4()),
            principal=principal.name, algorithm=ALGORITHM,
            public_key=private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            not_before=format_time(start), not_after=format_time(end),
            state=CLIENT_KEY_ENABLED, creation_date=format_time(now))
        await self.store.insert_client_key(record)
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return record, pem.decode("ascii")

    async def revoke(self, client_key_id: str) -> None:
        """Revoke a key; its later handshakes and requests are refused.

        Raises:
            ResourceNotFoundError: no such key.
        """
        if not await self.store.revoke_client_key(client_key_id,
                                                  format_time(self.clock.now())):
            raise ResourceNotFoundError(
                f"The client key {client_key_id!r} is not found.")

    async def verify(self, client_key_id: str, nonce: bytes,
                     signature: bytes) -> ClientKeyRecord:
        """Check a handshake proof and return the key's record.

        Raises:
            ClientKeyInvalidError: the key is unknown or the signature
                does not verify.
            ClientKeyRevokedError, ClientKeyExpiredError: from ``check``.
        """
        record = await self.store.get_client_key(client_key_id)
        public = _DECOY_KEY
        if record is not None:
            public = Ed25519PublicKey.from_public_bytes(record.public_key)
        try:
            public.verify(signature, client_key_proof_message(client_key_id, nonce))
        except InvalidSignature:
            record = None
        if record is None:
            raise ClientKeyInvalidError()
        return self.check_record(record)

    async def check(self, client_key_id: str) -> ClientKeyRecord:
        """Re-check, for a later request, a key verified at handshake."""
        record = await self.store.get_client_key(client_key_id)
        if record is None:
            raise ClientKeyInvalidError()
        return self.check_record(record)

    def check_record(self, record: ClientKeyRecord) -> ClientKeyRecord:
        """Return ``record`` if it is enabled and inside its window.

        Raises:
            ClientKeyRevokedError: the key was revoked.
            ClientKeyExpiredError: now is outside NotBefore..NotAfter.
        """
        if record.state == CLIENT_KEY_REVOKED:
            raise ClientKeyRevokedError(
                f"The client key {record.client_key_id} was revoked at "
                f"{record.revocation_date}.")
        now = format_time(self.clock.now())
        if not record.not_before <= now < record.not_after:
            raise ClientKeyExpiredError(
                f"The client key {record.client_key_id} is valid from "
                f"{record.not_before} to {record.not_after}.")
        return record


def describe_client_key(record: ClientKeyRecord) -> dict[str, str]:
    """Return the API map of a client key, without key material."""
    described = {
        "ClientKeyId": record.client_key_id, "Principal": record.principal,
        "KeyAlgorithm": record.algorithm, "NotBefore": record.not_before,
        "NotAfter": record.not_after, "State": record.state,
        "CreationDate": record.creation_date,
    }
    if record.revocation_date:
        described["RevocationDate"] = record.revocation_date
    return described
