"""Who a gateway caller is, for access control, quotas and audit.

A gateway request is authenticated by an AccessKey signature or a client
key signature, and each credential names a principal of the
``[principals]`` configuration. ``GatewayPeer`` carries that principal
(and the credential id) in the request context, in place of the kernel
credentials a socket caller has; on the gateway's Unix socket it also
keeps the peer's uid and groups.

``GatewayAccess`` wraps the agent's ``AccessControl`` for the access
stage: socket callers are identified as before, and a gateway caller is
its credential's principal, under the rule access control applies to
client keys. The principal must exist and set ``client_key = true``,
and if it also names uids or groups, the peer must match one of them.
Over TCP the peer is unknown, so such a principal is refused there. The
principal is looked up at every request, so a configuration reload
applies at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.auth.principals import Principal
from agent.context import Peer
from client.errors import UnknownCallerError


@dataclasses.dataclass(frozen=True)
class GatewayPeer(Peer):
    """A gateway caller: its socket credentials, if any, and its principal.

    ``credential_id`` is the AccessKey id or client key id that signed.
    """

    principal: str = ""
    credential_id: str = ""


class GatewayAccess:
    """An ``AccessControl`` that also identifies gateway callers.

    Every attribute but ``principal_for`` is the wrapped object's.
    """

    def __init__(self, control: Any):
        self._control = control

    def __getattr__(self, name: str) -> Any:
        return getattr(self._control, name)

    async def principal_for(self, peer: Peer, client_key_id: str | None) -> Principal:
        """Identify the caller of one request.

        Raises:
            UnknownCallerError: a gateway caller's principal is not
                configured, does not take client keys, or does not admit
                the peer.
        """
        if not isinstance(peer, GatewayPeer):
            return await self._control.principal_for(peer, client_key_id)
        principal = self._control.config.principals.get(peer.principal)
        if principal is None or not principal.client_key:
            raise UnknownCallerError(
                f"The principal {peer.principal} of gateway credential "
                f"{peer.credential_id} is not configured with client_key = true.")
        if principal.has_unix_match and not principal.match(peer):
            raise UnknownCallerError(
                f"The principal {principal.name} does not admit this gateway "
                f"caller (uid {peer.uid}), even with credential {peer.credential_id}.")
        return principal
