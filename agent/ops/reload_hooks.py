"""The reload hooks of the agent's own settings.

Each factory returns a hook for ``reload.ReloadHooks``. The hooks put in
force the log level and request lines, the access configuration, and the cache limits
that can change in place (ages, uses and byte budgets). One more hook
names every changed setting that only a restart applies, such as the
socket, the data directory, the keystores or a cache's entry bound.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from agent.logs import LOGGER_NAME
from agent.ops.reload import Hook, ReloadRejected

# Settings read once at start, so a reload that changes them is rejected
# with their names. A setting that gains a reload hook leaves this list.
RESTART_SETTINGS = ("socket", "socket_mode", "socket_group", "data_dir",
                    "max_frame_bytes", "drain_timeout", "region", "log_format",
                    "keystores", "default_keystore", "purge_interval",
                    "rotation_check_interval", "metrics", "audit", "quotas",
                    "limits", "gateway", "connection_limits")
RESTART_CACHE_SETTINGS = (("secrets", "cache_max_entries"),
                          ("secrets", "cache_max_bytes"),
                          ("secrets", "rotation"),
                          ("data_key_cache", "max_entries"))


def log_hook(dispatcher: Any) -> Hook:
    """Put ``[log] level`` and ``requests`` in force."""
    async def hook(config: Any) -> str:
        logging.getLogger(LOGGER_NAME).setLevel(config.log_level.upper())
        dispatcher.log_successes = config.log_requests == "all"
        return f"level {config.log_level}, requests {config.log_requests}"

    return hook


def cache_limits_hook(secrets: Any, data_keys: Any) -> Hook:
    """Put the secret cache ages and the data key cache limits in force."""
    async def hook(config: Any) -> str:
        if secrets is not None:
            secrets.cache.ttl = config.secrets.cache_ttl
            secrets.cache.stale_max_age = config.secrets.stale_max_age
        if data_keys is not None:
            limits = config.data_key_cache
            data_keys.max_age = limits.max_age
            data_keys.max_uses = limits.max_uses
            data_keys.max_bytes = limits.max_bytes
        return (f"secret cache_ttl {config.secrets.cache_ttl:g} s, data key max_age "
                f"{config.data_key_cache.max_age:g} s")

    return hook


def access_hook(control: Any, describe: Callable[[Any], None]) -> Hook:
    """Reload principals and policies through ``control.reload()``.

    ``describe`` logs a summary of the new access configuration.
    """
    async def hook(config: Any) -> str:
        try:
            access = control.reload()
        except Exception as exc:
            raise ReloadRejected(getattr(exc, "message", str(exc))) from None
        describe(access)
        return f"{len(access.principals)} principals, {len(access.grants)} policies"

    return hook


def call_hook(action: Callable[[], Awaitable[None]]) -> Hook:
    """Run ``action()`` on every reload, whatever the configuration contains."""
    async def hook(config: Any) -> None:
        await action()

    return hook


def restart_check_hook(running: Any) -> Hook:
    """Name the settings that differ from ``running`` but need a restart."""
    async def hook(config: Any) -> str | None:
        changed = [name for name in RESTART_SETTINGS
                   if getattr(config, name, None) != getattr(running, name, None)]
        for section, name in RESTART_CACHE_SETTINGS:
            new = getattr(getattr(config, section, None), name, None)
            if new != getattr(getattr(running, section, None), name, None):
                changed.append(f"{section}.{name}")
        if changed:
            raise ReloadRejected(
                f"{', '.join(changed)} changed; these take effect only after a restart")
        return None

    return hook
