"""Access control in the running daemon: build it and log it.

``build_access`` makes the ``AccessControl`` the server and the stage
share, with a loader that rereads the configuration file. The SIGHUP
reload hook and the ``ReloadPolicies`` operation both call
``AccessControl.reload``. A file that fails to load is refused whole and
the old configuration stays. No connection is dropped either way.
"""

from __future__ import annotations

import logging
import os

from agent.auth.client_keys import ClientKeyService
from agent.auth.control import AccessControl
from agent.auth.policy import AccessConfig
from agent.config import AgentConfig, ConfigError, reload_access
from agent.context import Clock
from agent.logs import log
from agent.store.access import AccessStore


def build_access(config: AgentConfig, store: AccessStore,
                 clock: Clock) -> AccessControl:
    """Return the access control of an agent started from ``config``."""
    loader = None
    if config.path is not None:
        path, keystores = config.path, set(config.keystores)

        def loader() -> AccessConfig:
            try:
                return reload_access(path, keystores)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None

    return AccessControl(config.access, ClientKeyService(store, clock), loader)


def log_access(access: AccessConfig, message: str = "access control in force") -> None:
    """Log a summary of an access configuration, warning about the risky ones."""
    if access.implicit:
        uids = sorted({os.getuid(), 0})
        log(logging.WARNING,
            "no [principals] configured: only the agent's own uid and root may "
            "connect, with every permission",
            detail="uids " + " and ".join(str(uid) for uid in uids))
        return
    log(logging.INFO, message, count=len(access.principals),
        detail=f"{len(access.grants)} policies")
    if not access.grants:
        log(logging.WARNING, "no [policies] configured: every request is refused")

