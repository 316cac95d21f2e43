"""Records and store interface of access control: client keys and policies.

A client key is a public key the agent issued to one principal; only
its public half is stored. Revocation changes its state and keeps the
row, so a revoked key id is never reused and its history stays readable.
A resource policy is the JSON document attached to one key or secret,
under the policy name ``default``.
"""

from __future__ import annotations

import abc
import dataclasses

CLIENT_KEY_ENABLED = "Enabled"
CLIENT_KEY_REVOKED = "Revoked"


@dataclasses.dataclass(frozen=True)
class ClientKeyRecord:
    """A client key: its id, principal, public key and validity window."""

    client_key_id: str
    principal: str
    algorithm: str
    public_key: bytes
    not_before: str
    not_after: str
    state: str
    creation_date: str
    revocation_date: str | None = None


@dataclasses.dataclass(frozen=True)
class ResourcePolicyRecord:
    """The policy document attached to one key or secret."""

    resource_type: str
    resource_id: str
    policy_name: str
    document: str
    update_date: str


class AccessStore(abc.ABC):
    """Client keys and resource policies."""

    @abc.abstractmethod
    async def insert_client_key(self, record: ClientKeyRecord) -> None:
        """Insert a new client key."""

    @abc.abstractmethod
    async def get_client_key(self, client_key_id: str) -> ClientKeyRecord | None:
        """Return a client key or None."""

    @abc.abstractmethod
    async def list_client_keys(self, principal: str | None, offset: int,
                               limit: int) -> tuple[list[ClientKeyRecord], int]:
        """Return one page of client keys (of one principal, or all), oldest
        first, and the total count."""

    @abc.abstractmethod
    async def revoke_client_key(self, client_key_id: str, now: str) -> bool:
        """Mark a client key revoked; return False if it does not exist."""

    @abc.abstractmethod
    async def get_resource_policy(self, resource_type: str, resource_id: str,
                                  policy_name: str) -> ResourcePolicyRecord | None:
        """Return the policy attached to a resource, or None."""

    @abc.abstractmethod
    async def put_resource_policy(self, record: ResourcePolicyRecord) -> None:
        """Attach a policy to a resource, replacing the one it had."""
