"""Assemble and run one agent: keystores, store, services, server, jobs.

``run_agent`` is the whole life of the daemon: open every keystore and
the store, bind the socket, serve, purge due keys and rotate keys in the
background, and on SIGTERM or SIGINT drain in-flight requests and close
everything. It logs one line when it is ready and one when it stops.

A keystore that fails to open is logged and replaced by an
``UnavailableKeystore``, so the others are served and its resources get
ServiceUnavailableTemporary; the agent refuses to start only when none
opens. SIGHUP runs the hooks of ``agent.ops.reload``: the log level,
principals and policies, cache limits, a retry of the keystores that
failed and a reopen of the audit file (for log rotation).

``agent.ops.runtime`` adds what a service manager needs: systemd
notification and socket activation, health, metrics and backups. With
``[gateway] enabled``, ``agent.gateway`` serves the same dispatcher over
HTTP to the official Alibaba Cloud SDKs, and is drained with the socket.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from typing import Any, Callable

import trio

from agent import tagging
from agent.audit import AuditFileError, AuditStage, AuditTrail, open_trail
from agent.auth import ops as auth_ops
from agent.auth.control import AccessControl
from agent.auth.runtime import build_access, log_access
from agent.auth.stage import AccessStage
from agent.config import AgentConfig
from agent.cache import ops as cache_ops
from agent.cache.data_keys import DataKeyCache
from agent.certificates import ops as certificate_ops
from agent.certificates.service import CertificateService
from agent.context import Clock
from agent.gateway.identity import GatewayAccess
from agent.gateway.runtime import Gateway, open_gateway
from agent.keys import ops as key_ops
from agent.keys import asymmetric, byok, export, mac, random_ops, rotation, versions
from agent.keys.service import KeyService
from agent.keystore import Keystore, KeystoreUnavailable, open_keystore
from agent.keystore.unavailable import UnavailableKeystore
from agent.logs import log
from agent.ops import backup_ops, health, reload_hooks
from agent.ops.runtime import OpsRuntime
from agent.quotas import QuotaStage, QuotaTable, Rate
from agent.rpc.dispatch import Dispatcher, Operation, Stage
from agent.rpc.server import Server, SocketLock, StartupError
from agent.secrets import lifecycle
from agent.secrets import ops as secret_ops
from agent.secrets.service import SecretService
from agent.store.base import StoreError
from agent.store.limits import ResourceLimits
from agent.store.sqlite import SqliteStore


@dataclasses.dataclass
class Services:
    """The domain services handlers reach through their first argument."""

    keys: KeyService
    secrets: SecretService | None = None
    data_keys: DataKeyCache | None = None
    auth: AccessControl | None = None
    # Health, backups and metrics (agent.ops.runtime.OpsRuntime).
    ops: Any = None
    certificates: CertificateService | None = None


def all_operations() -> list[Operation]:
    """Return the operation table of every service."""
    return [*key_ops.OPERATIONS, *versions.OPERATIONS, *rotation.OPERATIONS,
            *random_ops.OPERATIONS, *secret_ops.OPERATIONS, *cache_ops.OPERATIONS,
            *auth_ops.OPERATIONS, *asymmetric.OPERATIONS, *mac.OPERATIONS,
            *byok.OPERATIONS, *export.OPERATIONS, *health.OPERATIONS,
            *backup_ops.OPERATIONS, *certificate_ops.OPERATIONS,
            *tagging.OPERATIONS]


async def open_keystores(config: AgentConfig) -> dict[str, Keystore]:
    """Open every configured keystore; stand in for those that fail.

    Raises:
        StartupError: no keystore opened; the message names each error.
    """
    opened: dict[str, Keystore] = {}
    try:
        for name, settings in config.keystores.items():
            opened[name] = await _open_or_stand_in(name, settings)
    except BaseException:
        for keystore in opened.values():
            await keystore.aclose()
        raise
    failed = [k for k in opened.values() if isinstance(k, UnavailableKeystore)]
    if len(failed) == len(opened):
        raise StartupError("; ".join(f"keystore {k.name}: {k.reason}" for k in failed))
    return opened


async def _open_or_stand_in(name: str, settings: Any) -> Keystore:
    try:
        return await open_keystore(settings)
    except (KeystoreUnavailable, OSError, ValueError) as exc:
        log(logging.ERROR, "keystore failed to open; its keys are unavailable",
            keystore=name, error=str(exc))
        return UnavailableKeystore(name, str(exc))


async def reopen_keystores(config: AgentConfig, keystores: dict[str, Keystore]) -> None:
    """Try again to open the keystores that failed, in place."""
    for name, keystore in list(keystores.items()):
        if isinstance(keystore, UnavailableKeystore):
            keystores[name] = await _open_or_stand_in(name, config.keystores[name])
            if not isinstance(keystores[name], UnavailableKeystore):
                log(logging.INFO, "keystore opened", keystore=name)


async def purge_loop(service: KeyService, interval: float) -> None:
    """Delete keys whose deletion window has ended, every ``interval`` s."""
    while True:
        try:
            for key_id in await service.purge_due_keys():
                log(logging.INFO, "key deleted after its pending window",
                    key_id=key_id)
        except Exception as exc:  # a failed run is retried on the next tick
            log(logging.ERROR, "key purge failed", error=repr(exc))
        await trio.sleep(interval)


# Called with "ok" or "failed" after each background rotation, for metrics.
RotationCounter = Callable[[str], None]


async def rotation_loop(service: KeyService, interval: float,
                        count: RotationCounter = lambda result: None) -> None:
    """Rotate keys whose automatic rotation is due, at start and every
    ``interval`` s, so a rotation that fell due while the agent was down
    happens as soon as it starts."""
    while True:
        try:
            due = await rotation.due_key_ids(service)
        except Exception as exc:  # a failed run is retried on the next tick
            log(logging.ERROR, "key rotation check failed", error=repr(exc))
            due = []
        for key_id in due:
            await _rotate_key(service, key_id, count)
        await trio.sleep(interval)


async def _rotate_key(service: KeyService, key_id: str,
                      count: RotationCounter) -> None:
    try:
        version = await rotation.rotate_if_due(service, key_id)
    except Exception as exc:  # the key stays due and is retried next tick
        log(logging.ERROR, "key rotation failed", key_id=key_id, error=repr(exc))
        count("failed")
        return
    if version is not None:
        count("ok")
        log(logging.INFO, "key rotated", key_id=key_id,
            key_version=version.version_id)


async def secret_purge_loop(service: SecretService, interval: float) -> None:
    """Delete secrets whose recovery window has ended, every ``interval`` s."""
    while True:
        try:
            for name in await lifecycle.purge_due_secrets(service):
                log(logging.INFO, "secret deleted after its recovery window",
                    secret_name=name)
        except Exception as exc:  # a failed run is retried on the next tick
            log(logging.ERROR, "secret purge failed", error=type(exc).__name__)
        await trio.sleep(interval)


async def secret_rotation_loop(service: SecretService, interval: float,
                               count: RotationCounter = lambda result: None) -> None:
    """Rotate secrets whose automatic rotation is due, every ``interval`` s.

    Only the exception type of an unexpected failure is logged, since its
    text could quote a value.
    """
    while True:
        try:
            results = await lifecycle.rotate_due_secrets(service)
        except Exception as exc:  # a failed run is retried on the next tick
            log(logging.ERROR, "secret rotation check failed",
                error=type(exc).__name__)
            results = []
        for name, version_id, error in results:
            count("ok" if error is None else "failed")
            if error is None:
                log(logging.INFO, "secret rotated", secret_name=name,
                    secret_version=version_id)
            else:
                log(logging.WARNING, "secret rotation failed", secret_name=name,
                    secret_version=version_id, code=error.code, error=error.message)
        await trio.sleep(interval)


async def _watch_signals(server: Server, config: AgentConfig,
                         cancel_scope: trio.CancelScope,
                         before_drain: Callable[[], None] = lambda: None,
                         gateway: Gateway | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log(logging.INFO, "stopping", signal=signal.Signals(signum).name)
            before_drain()
            async with trio.open_nursery() as stopping:
                stopping.start_soon(_stop_on_second_signal, signals,
                                    stopping.cancel_scope)
                async with trio.open_nursery() as drains:
                    drains.start_soon(server.drain, config.drain_timeout)
                    if gateway is not None:
                        drains.start_soon(gateway.drain, config.drain_timeout)
                stopping.cancel_scope.cancel()
            cancel_scope.cancel()
            return


async def _stop_on_second_signal(signals: Any, drain_scope: trio.CancelScope) -> None:
    # A second SIGTERM or SIGINT ends the drain at once. Left unread, it
    # would be delivered again when the receiver closes and kill the
    # process before the store and keystores are closed.
    async for signum in signals:
        log(logging.WARNING, "second stop signal; not waiting for in-flight requests",
            signal=signal.Signals(signum).name)
        drain_scope.cancel()
        return


async def run_agent(config: AgentConfig, clock: Clock | None = None,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run the agent until a stop signal; see the module docstring."""
    ops = OpsRuntime.from_environ(config)
    lock = SocketLock(config.socket)
    if not config.socket.parent.is_dir():
        raise StartupError(f"socket directory {config.socket.parent} does not exist")
    lock.acquire()
    try:
        ops.notifier.status("opening keystores")
        keystores = await open_keystores(config)
        try:
            await _serve(config, keystores, clock or Clock(), task_status, ops)
        finally:
            for keystore in keystores.values():
                await keystore.aclose()
    finally:
        # A socket passed by systemd stays: the socket unit owns the path.
        if not ops.socket_activated:
            config.socket.unlink(missing_ok=True)
        ops.close()
        lock.release()
    log(logging.INFO, "stopped")


def _open_audit(config: AgentConfig, clock: Clock) -> AuditTrail | None:
    if not config.audit.enabled:
        log(logging.WARNING, "the audit trail is off ([audit] enabled = false)")
        return None
    try:
        return open_trail(config.audit, config.data_dir, clock)
    except AuditFileError as exc:
        raise StartupError(f"audit: {exc}") from None


def _stages(config: AgentConfig, services: Services,
            trail: AuditTrail | None) -> list[Stage]:
    # Audit comes first: its before() sees the parameters of requests that
    # the later stages refuse, and its after() runs last, so it records the
    # code actually sent. Quotas come after access control, which names
    # the caller they count and resolves the keys they classify.
    # Gateway callers are identified by the principal of their credential.
    control = GatewayAccess(services.auth) if config.gateway.enabled else services.auth
    stages: list[Stage] = [AccessStage(control, services)]
    if config.quotas.enabled:
        rates = {name: Rate(*rate) for name, rate in config.quotas.rates.items()}
        table = QuotaTable(rates, trio.current_time, config.quotas.max_callers)
        stages.append(QuotaStage(table, services.keys))
    if trail is not None:
        stages.insert(0, AuditStage(trail, services.keys.clock))
    return stages


async def _after_reload(config: AgentConfig, keystores: dict[str, Keystore],
                        trail: AuditTrail | None) -> None:
    await reopen_keystores(config, keystores)
    if trail is not None:
        # Log rotation renames the file and sends SIGHUP.
        await trail.reopen()


def _register_reloads(ops: OpsRuntime, config: AgentConfig, services: Services,
                      keystores: dict[str, Keystore], trail: AuditTrail | None,
                      dispatcher: Dispatcher) -> None:
    hooks = ops.reloads
    hooks.register("restart-only settings", reload_hooks.restart_check_hook(config))
    hooks.register("log settings", reload_hooks.log_hook(dispatcher))
    hooks.register("access control", reload_hooks.access_hook(
        services.auth, lambda access: log_access(access, "access control reloaded")))
    hooks.register("cache limits", reload_hooks.cache_limits_hook(
        services.secrets, services.data_keys))
    # Runs even with a broken file: log rotation needs the audit file
    # reopened whatever the configuration says.
    hooks.register("keystores and audit file", reload_hooks.call_hook(
        lambda: _after_reload(config, keystores, trail)), always=True)


def _before_drain(ops: OpsRuntime, secrets: SecretService) -> None:
    ops.stopping()
    # Long polls return now instead of holding the drain open.
    secrets.notifier.close()


async def _serve(config: AgentConfig, keystores: dict[str, Keystore], clock: Clock,
                 task_status: Any, ops: OpsRuntime) -> None:
    try:
        store = SqliteStore(config.data_dir, ResourceLimits(
            **dataclasses.asdict(config.limits)))
    except StoreError as exc:
        raise StartupError(f"store: {exc}") from None
    try:
        keys = KeyService(store, keystores, config.default_keystore, clock,
                          config.region)
        unreadable = await keys.unreadable_keystores()
        if unreadable:
            raise StartupError(
                f"keystore {unreadable[0]}: its domain key cannot unseal the key "
                "material in the store; check domain_key_label and the token of "
                "that keystore")
        secrets = SecretService(store, keys, clock, config.secrets)
        data_keys = DataKeyCache(
            config.data_key_cache.max_age, config.data_key_cache.max_uses,
            config.data_key_cache.max_bytes, config.data_key_cache.max_entries,
            time.monotonic)
        access = build_access(config, store, clock)
        services = Services(keys=keys, secrets=secrets, data_keys=data_keys,
                            auth=access, ops=ops,
                            certificates=CertificateService.from_keys(keys))
        ops.attach(keystores, store, services)
        trail = _open_audit(config, clock)
        # The metrics stage is first, so its after() sees the final code.
        dispatcher = Dispatcher(all_operations(), services,
                                stages=[ops.stage, *_stages(config, services, trail)],
                                log_successes=config.log_requests == "all")
        server = Server(ops.listen(), dispatcher, config.max_frame_bytes, access,
                        config.connection_limits)
        gateway = None
        if config.gateway.enabled:
            gateway = await open_gateway(config.gateway, dispatcher, config.data_dir,
                                         clock)
        await ops.serving(server)
        _register_reloads(ops, config, services, keystores, trail, dispatcher)
        log_access(access.config)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, server, config, nursery.cancel_scope,
                               lambda: _before_drain(ops, secrets), gateway)
            await ops.start(nursery)
            if trail is not None:
                await nursery.start(trail.run)
            await nursery.start(server.serve)
            if gateway is not None:
                await nursery.start(gateway.serve)
                log(logging.INFO, "gateway listening",
                    socket=",".join(gateway.addresses))
            nursery.start_soon(purge_loop, keys, config.purge_interval)
            nursery.start_soon(byok.expiry_loop, keys, config.purge_interval)
            nursery.start_soon(secret_purge_loop, secrets, config.purge_interval)
            nursery.start_soon(secret_rotation_loop, secrets,
                               config.secrets.rotation_check_interval,
                               ops.rotation_counter("secret"))
            nursery.start_soon(rotation_loop, keys, config.rotation_check_interval,
                               ops.rotation_counter("key"))
            log(logging.INFO, "ready", socket=str(config.socket),
                keystore=",".join(keystores), store=str(store.path))
            ops.ready()
            task_status.started(server)
    finally:
        await store.aclose()
