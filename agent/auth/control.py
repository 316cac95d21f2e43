"""The access configuration in force, and who a connection is.

``AccessControl`` keeps the current ``AccessConfig`` and swaps it whole
on ``reload``; a configuration that fails to load leaves the old one in
force. Requests already running keep the configuration they started
with, and every later request, on old connections too, uses the new one.

A connection is identified at handshake (``identify`` or, with a client
key, ``authenticate``) and again at each request (``principal_for``), so
a reload or a revocation also applies to connections already open.
"""

from __future__ import annotations

from typing import Callable

from agent.auth.client_keys import ClientKeyService
from agent.auth.policy import AccessConfig
from agent.auth.principals import Principal, find_principal
from agent.context import Peer
from agent.store.access import ClientKeyRecord
from client.errors import InvalidConfigurationError, UnknownCallerError

# Returns a freshly loaded configuration or raises ValueError naming the
# problem.
Loader = Callable[[], AccessConfig]


class AccessControl:
    """The current access configuration and the client keys behind it."""

    def __init__(self, config: AccessConfig, client_keys: ClientKeyService,
                 loader: Loader | None = None):
        self.config = config
        self.client_keys = client_keys
        self._loader = loader

    def reload(self) -> AccessConfig:
        """Load the configuration again and put it in force.

        Raises:
            InvalidConfigurationError: the loader failed; the message
                names the problem and the old configuration stays.
        """
        if self._loader is None:
            raise InvalidConfigurationError(
                "This agent was started without a configuration file to reload.")
        try:
            config = self._loader()
        except ValueError as exc:
            raise InvalidConfigurationError(
                f"The configuration was not reloaded: {exc}") from None
        self.config = config
        return config

    def identify(self, peer: Peer) -> Principal:
        """Return the principal of a peer that presents no client key.

        Raises:
            UnknownCallerError: no principal matches the peer.
        """
        principal = find_principal(self.config.principals, peer)
        if principal is None:
            raise UnknownCallerError(
                f"No principal of the agent's access configuration matches "
                f"uid {peer.uid}.")
        return principal

    async def authenticate(self, peer: Peer, client_key_id: str, nonce: bytes,
                           signature: bytes) -> Principal:
        """Verify a client key proof and return the key's principal.

        Raises:
            ClientKeyInvalidError, ClientKeyRevokedError,
            ClientKeyExpiredError: from the key check.
            UnknownCallerError: the key's principal no longer takes client
                keys or does not admit the peer's uid and groups.
        """
        record = await self.client_keys.verify(client_key_id, nonce, signature)
        return self._key_principal(peer, record)

    async def principal_for(self, peer: Peer, client_key_id: str | None) -> Principal:
        """Identify the caller of one request on an identified connection."""
        if client_key_id is None:
            return self.identify(peer)
        record = await self.client_keys.check(client_key_id)
        return self._key_principal(peer, record)

    def _key_principal(self, peer: Peer, record: ClientKeyRecord) -> Principal:
        principal = self.config.principals.get(record.principal)
        if principal is None or not principal.client_key:
            raise UnknownCallerError(
                f"The principal {record.principal} of client key "
                f"{record.client_key_id} no longer takes client keys.")
        if principal.has_unix_match and not principal.match(peer):
            raise UnknownCallerError(
                f"The principal {principal.name} does not admit uid {peer.uid}, "
                "even with its client key.")
        return principal
