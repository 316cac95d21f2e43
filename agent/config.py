"""Load and validate the agent's TOML configuration.

Every key is checked at start: an unknown key, a wrong type or a value
out of range raises ``ConfigError`` naming the key, so a typo never
passes silently. Relative paths are resolved against the directory of
the configuration file. Secrets such as the token PIN never appear in
this file; it only names where to read them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path
from typing import Any

from agent.auth.policy import AccessConfig, implicit_access, parse_access
from agent.auth.principals import AccessConfigError
from agent.keystore import KeystoreSettings
from agent.rpc.limits import ConnectionLimits
from agent.ops.settings import METRICS_KEYS, MetricsConfig, metrics_config
from agent.gateway.settings import GATEWAY_KEYS, GatewayConfig, gateway_config
from agent.store.base import exposed_data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MAX_FRAME_BYTES = 262144
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")
# Choices of the requests that get an operator log line; the audit trail
# records every request either way.
LOG_REQUESTS = ("all", "failures")
KEYSTORE_TYPES = ("pkcs11", "software")


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The validated configuration of one agent process."""

    socket: Path
    socket_mode: int
    socket_group: str | None
    data_dir: Path
    max_frame_bytes: int
    drain_timeout: float
    region: str
    log_level: str
    log_format: str
    keystores: dict[str, KeystoreSettings]
    default_keystore: str
    purge_interval: float = 60.0
    # "all" or "failures": which requests get an operator log line.
    log_requests: str = "failures"
    # Seconds between checks for keys whose automatic rotation is due.
    rotation_check_interval: float = 60.0
    secrets: "SecretsConfig" = dataclasses.field(
        default_factory=lambda: SecretsConfig())
    data_key_cache: "DataKeyCacheConfig" = dataclasses.field(
        default_factory=lambda: DataKeyCacheConfig())
    audit: "AuditConfig" = dataclasses.field(default_factory=lambda: AuditConfig())
    quotas: "QuotaConfig" = dataclasses.field(default_factory=lambda: QuotaConfig())
    limits: "LimitsConfig" = dataclasses.field(default_factory=lambda: LimitsConfig())
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    gateway: GatewayConfig = dataclasses.field(default_factory=GatewayConfig)
    # Principals and policies, from this file or from agent.policy_file.
    access: AccessConfig = dataclasses.field(default_factory=implicit_access)
    # The file this configuration was loaded from, for reloading.
    path: Path | None = None
    connection_limits: ConnectionLimits = dataclasses.field(
        default_factory=ConnectionLimits)


@dataclasses.dataclass(frozen=True)
class RotationRule:
    """How to make the next value of secrets whose name matches ``pattern``.

    ``pattern`` is a shell-style pattern (``db/*``). Exactly one of
    ``command`` (an argv list, run without a shell) and ``entry_point``
    (``module:function``) is set.
    """

    pattern: str
    command: tuple[str, ...] | None = None
    entry_point: str | None = None


@dataclasses.dataclass(frozen=True)
class SecretsConfig:
    """The ``[secrets]`` section; times are in seconds, sizes in bytes.

    An empty ``default_key`` makes the agent create and use its own key
    under the alias ``alias/acs/secrets-manager``.
    """

    default_key: str = ""
    cache_ttl: float = 300.0
    cache_max_entries: int = 1000
    cache_max_bytes: int = 16 * 2**20
    stale_max_age: float = 3600.0
    rotation_timeout: float = 30.0
    rotation_check_interval: float = 60.0
    rotation_retry_delay: float = 300.0
    rotation: tuple[RotationRule, ...] = ()


@dataclasses.dataclass(frozen=True)
class DataKeyCacheConfig:
    """The ``[data_key_cache]`` section: limits of one cached data key.

    ``max_bytes`` bounds the plaintext bytes callers declare they encrypt
    with one data key; ``max_entries`` bounds the cached data keys.
    """

    max_age: float = 60.0
    max_uses: int = 100
    max_bytes: int = 2**30
    max_entries: int = 100


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """The ``[audit]`` section; ``path`` None means ``<data_dir>/audit.jsonl``.

    ``broken_tail`` is what to do at start with a file whose last lines
    are damaged: ``refuse`` to start, or ``set_aside`` the file and begin
    a new one.
    """

    enabled: bool = True
    path: Path | None = None
    fail_closed: bool = True
    broken_tail: str = "refuse"


# Requests per second of each quota bucket, as Alibaba Cloud KMS limits
# them. The reference gives no burst sizes, so a bucket holds one second
# of its rate by default, as a per-second limit would allow.
QUOTA_RATES = {"create": 10, "cryptographic": 750, "cryptographic_asymmetric": 200,
               "read": 20, "write": 10}
QUOTA_BURST_SECONDS = 1


@dataclasses.dataclass(frozen=True)
class QuotaConfig:
    """The ``[quotas]`` section: bucket name to (requests per second, burst).

    A rate of 0 turns the limit of that bucket off. Quotas are off by
    default: the rates are account-wide limits of a shared cloud service,
    and one local process polling in a loop passes 20 reads per second.
    Turn them on where several callers share one agent.
    """

    enabled: bool = False
    rates: dict[str, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: {
            name: (float(rate), float(rate * QUOTA_BURST_SECONDS))
            for name, rate in QUOTA_RATES.items()})
    max_callers: int = 10000


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    """The ``[limits]`` section: resource counts per keystore, versions per key.

    Alibaba Cloud KMS allows 200 keys and 300 aliases per region (2021
    documentation). Those are account quotas of a shared service. In the
    agent a key costs one database row, not an HSM object, so the
    defaults only keep the store and its list calls bounded.
    """

    keys: int = 100000
    aliases: int = 100000
    versions: int = 50
    secrets: int = 100000


# Each section maps a key to (expected types, default). A default of
# _REQUIRED makes the key mandatory.
_REQUIRED = object()

_AGENT_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "socket": ((str,), _REQUIRED),
    "socket_mode": ((str,), "0660"),
    "socket_group": ((str,), None),
    "data_dir": ((str,), _REQUIRED),
    "max_frame_bytes": ((int,), DEFAULT_MAX_FRAME_BYTES),
    "drain_timeout": ((int, float), 10),
    "region": ((str,), "local"),
    "default_keystore": ((str,), "default"),
    "purge_interval": ((int, float), 60),
    "rotation_check_interval": ((int, float), 60),
    "policy_file": ((str,), None),
    "max_connections": ((int,), 1024),
    "max_connections_per_uid": ((int,), 256),
    "handshake_timeout": ((int, float), 10),
    "frame_timeout": ((int, float), 30),
    "idle_timeout": ((int, float), 300),
}

_SECRETS_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "default_key": ((str,), ""),
    "cache_ttl": ((int, float), 300),
    "cache_max_entries": ((int,), 1000),
    "cache_max_bytes": ((int,), 16 * 2**20),
    "stale_max_age": ((int, float), 3600),
    "rotation_timeout": ((int, float), 30),
    "rotation_check_interval": ((int, float), 60),
    "rotation_retry_delay": ((int, float), 300),
    "rotation": ((list,), []),
}

_ROTATION_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "pattern": ((str,), _REQUIRED),
    "command": ((list,), None),
    "entry_point": ((str,), None),
}

_DATA_KEY_CACHE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "max_age": ((int, float), 60),
    "max_uses": ((int,), 100),
    "max_bytes": ((int,), 2**30),
    "max_entries": ((int,), 100),
}

_AUDIT_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "enabled": ((bool,), True),
    "path": ((str,), None),
    "fail_closed": ((bool,), True),
    "broken_tail": ((str,), "refuse"),
}

_QUOTAS_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "enabled": ((bool,), False),
    "max_callers": ((int,), 10000),
    **{f"{name}_rate": ((int, float), rate) for name, rate in QUOTA_RATES.items()},
    **{f"{name}_burst": ((int, float), rate * QUOTA_BURST_SECONDS)
       for name, rate in QUOTA_RATES.items()},
}

_LIMITS_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    field.name: ((int,), field.default) for field in dataclasses.fields(LimitsConfig)
}

_LOG_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "level": ((str,), "info"),
    "format": ((str,), "auto"),
    "requests": ((str,), "failures"),
}

_KEYSTORE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "type": ((str,), _REQUIRED),
    "module": ((str,), None),
    "token_label": ((str,), None),
    "pin_file": ((str,), None),
    "pin_env": ((str,), None),
    "softhsm2_conf": ((str,), None),
    "domain_key_label": ((str,), "kms-agent-domain-key"),
    "domain_key_file": ((str,), None),
    "inline_crypto": ((bool,), True),
    "worker_threads": ((int,), 2),
}


def check_trusted_file(info: os.stat_result, path: Path, what: str) -> None:
    """Raise ConfigError unless only root or this process's user can change
    the file: whoever can write it can grant themselves any permission.
    """
    if info.st_mode & 0o022:
        raise ConfigError(
            f"{what}: {path} is writable by group or others; run chmod go-w {path}")
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"{what}: {path} is owned by uid {info.st_uid}; it must be owned by "
            "root or by the user the agent runs as")


def check_data_dir(path: Path) -> None:
    """Check the data directory ``path`` the way the store does at start.

    The store rejects a data directory that other users can access, so
    this reports the same problem without starting the agent. A missing
    directory passes, because the store creates it with mode 0700. This
    function creates nothing.

    Raises:
        ConfigError: ``path`` cannot be read, is not a directory, or is
            accessible by other users.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(
            f"agent.data_dir: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"agent.data_dir: {path} is not a directory")
    problem = exposed_data_dir(path, info.st_mode)
    if problem is not None:
        raise ConfigError(f"agent.data_dir: {problem}")


def load_config(path: Path) -> AgentConfig:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigError: the file is missing, is not TOML, or a key is invalid.
    """
    try:
        with open(path, "rb") as stream:
            check_trusted_file(os.fstat(stream.fileno()), path, "configuration file")
            raw = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    config = parse_config(raw, base_dir=Path(path).resolve().parent)
    return dataclasses.replace(config, path=Path(path).resolve())


def reload_access(path: Path, keystores: set[str]) -> AccessConfig:
    """Read the configuration at ``path`` again and return its access part.

    The whole file (and the policy file it names) is validated, and every
    keystore a principal names must be one of ``keystores``, those the
    running agent opened; other changes need a restart.

    Raises:
        ConfigError: naming the first problem.
    """
    access = load_config(path).access
    for principal in access.principals.values():
        missing = sorted((principal.keystores or set()) - keystores)
        if missing:
            raise ConfigError(
                f"principals.{principal.name}.keystores: keystore {missing[0]!r} "
                "is not open in the running agent; restart it to add keystores")
    return access


def parse_config(raw: dict[str, Any], base_dir: Path) -> AgentConfig:
    """Validate a parsed TOML document; relative paths join ``base_dir``."""
    _check_unknown(raw, {"agent", "log", "keystores", "secrets", "data_key_cache",
                         "principals", "policies", "audit", "quotas", "limits",
                         "metrics", "gateway"}, "")
    agent = _section(raw, "agent", _AGENT_KEYS)
    log = _section(raw, "log", _LOG_KEYS)
    keystores = _parse_keystores(raw.get("keystores"), base_dir)
    _check_choice("log.level", log["level"], LOG_LEVELS)
    _check_choice("log.format", log["format"], LOG_FORMATS)
    _check_choice("log.requests", log["requests"], LOG_REQUESTS)
    if agent["default_keystore"] not in keystores:
        raise ConfigError(
            f"agent.default_keystore: no keystore named "
            f"{agent['default_keystore']!r} in [keystores]"
        )
    return AgentConfig(
        socket=_path(base_dir, agent["socket"]),
        socket_mode=_parse_mode("agent.socket_mode", agent["socket_mode"]),
        socket_group=agent["socket_group"],
        data_dir=_path(base_dir, agent["data_dir"]),
        max_frame_bytes=_in_range(
            "agent.max_frame_bytes", agent["max_frame_bytes"], 1024, 64 * 2**20),
        drain_timeout=float(_in_range(
            "agent.drain_timeout", agent["drain_timeout"], 0, 3600)),
        region=_name("agent.region", agent["region"]),
        log_level=log["level"],
        log_format=log["format"],
        log_requests=log["requests"],
        keystores=keystores,
        default_keystore=agent["default_keystore"],
        purge_interval=float(_in_range(
            "agent.purge_interval", agent["purge_interval"], 0.01, 86400)),
        rotation_check_interval=float(_in_range(
            "agent.rotation_check_interval", agent["rotation_check_interval"],
            0.01, 86400)),
        secrets=_parse_secrets(raw),
        data_key_cache=_parse_data_key_cache(raw),
        audit=_parse_audit(raw, base_dir),
        quotas=_parse_quotas(raw),
        limits=_parse_limits(raw),
        metrics=_parse_metrics(raw, base_dir),
        gateway=_parse_gateway(raw, base_dir, _path(base_dir, agent["data_dir"])),
        access=_parse_access(raw, agent["policy_file"], base_dir, set(keystores)),
        connection_limits=ConnectionLimits(
            max_connections=_in_range(
                "agent.max_connections", agent["max_connections"], 1, 1_000_000),
            max_connections_per_uid=_in_range(
                "agent.max_connections_per_uid", agent["max_connections_per_uid"],
                1, 1_000_000),
            handshake_timeout=float(_in_range(
                "agent.handshake_timeout", agent["handshake_timeout"], 0.1, 3600)),
            frame_timeout=float(_in_range(
                "agent.frame_timeout", agent["frame_timeout"], 0.1, 3600)),
            idle_timeout=float(_in_range(
                "agent.idle_timeout", agent["idle_timeout"], 0.1, 86400))),
    )


def _parse_access(raw: dict[str, Any], policy_file: str | None, base_dir: Path,
                  keystores: set[str]) -> AccessConfig:
    tables, where = raw, ""
    if policy_file is not None:
        if "principals" in raw or "policies" in raw:
            raise ConfigError(
                "agent.policy_file: set it or [principals] and [policies] in this "
                "file, not both")
        path = _path(base_dir, policy_file)
        tables, where = _read_policy_file(path), f"{path}: "
    try:
        return parse_access(tables.get("principals"), tables.get("policies"),
                            keystores)
    except AccessConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _read_policy_file(path: Path) -> dict[str, Any]:
    # Whoever can write this file can grant themselves any permission.
    try:
        with open(path, "rb") as stream:
            stat_result = os.fstat(stream.fileno())
            raw = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"agent.policy_file: cannot read {path}: "
                          f"{exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    check_trusted_file(stat_result, path, "agent.policy_file")
    _check_unknown(raw, {"principals", "policies"}, f"{path}: ")
    return raw


def _parse_secrets(raw: dict[str, Any]) -> SecretsConfig:
    values = _section(raw, "secrets", _SECRETS_KEYS)
    for key in ("cache_ttl", "stale_max_age"):
        _in_range(f"secrets.{key}", values[key], 0, 366 * 86400)
    _in_range("secrets.cache_max_entries", values["cache_max_entries"], 1, 10**7)
    _in_range("secrets.cache_max_bytes", values["cache_max_bytes"], 4096, 2**40)
    _in_range("secrets.rotation_timeout", values["rotation_timeout"], 0.1, 3600)
    for key in ("rotation_check_interval", "rotation_retry_delay"):
        _in_range(f"secrets.{key}", values[key], 0.01, 86400)
    rules = tuple(_rotation_rule(f"secrets.rotation[{index}]", table)
                  for index, table in enumerate(values.pop("rotation")))
    seconds = ("cache_ttl", "stale_max_age", "rotation_timeout",
               "rotation_check_interval", "rotation_retry_delay")
    values.update({key: float(values[key]) for key in seconds})
    return SecretsConfig(**values, rotation=rules)


def _rotation_rule(where: str, table: Any) -> RotationRule:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    values = _section({where: table}, where, _ROTATION_KEYS)
    command, entry_point = values["command"], values["entry_point"]
    if (command is None) == (entry_point is None):
        raise ConfigError(f"{where}: set exactly one of command and entry_point")
    if command is not None and (
            not command or not all(isinstance(arg, str) and arg for arg in command)):
        raise ConfigError(f"{where}.command: expected a non-empty list of strings")
    if entry_point is not None:
        module, _, function = entry_point.partition(":")
        if not module or not function:
            raise ConfigError(
                f"{where}.entry_point: {entry_point!r} is not 'module:function'")
    return RotationRule(values["pattern"],
                        tuple(command) if command is not None else None, entry_point)


def _parse_data_key_cache(raw: dict[str, Any]) -> DataKeyCacheConfig:
    values = _section(raw, "data_key_cache", _DATA_KEY_CACHE_KEYS)
    _in_range("data_key_cache.max_age", values["max_age"], 0, 86400)
    _in_range("data_key_cache.max_uses", values["max_uses"], 0, 2**32)
    _in_range("data_key_cache.max_bytes", values["max_bytes"], 0, 2**50)
    _in_range("data_key_cache.max_entries", values["max_entries"], 1, 10**6)
    return DataKeyCacheConfig(max_age=float(values["max_age"]),
                              max_uses=values["max_uses"],
                              max_bytes=values["max_bytes"],
                              max_entries=values["max_entries"])


def _parse_audit(raw: dict[str, Any], base_dir: Path) -> AuditConfig:
    values = _section(raw, "audit", _AUDIT_KEYS)
    _check_choice("audit.broken_tail", values["broken_tail"], ("refuse", "set_aside"))
    if values["path"] is not None:
        values["path"] = _path(base_dir, values["path"])
    return AuditConfig(**values)


def _parse_quotas(raw: dict[str, Any]) -> QuotaConfig:
    values = _section(raw, "quotas", _QUOTAS_KEYS)
    given = raw.get("quotas", {})
    _in_range("quotas.max_callers", values["max_callers"], 1, 10**7)
    rates = {}
    for name in QUOTA_RATES:
        rate = _in_range(f"quotas.{name}_rate", values[f"{name}_rate"], 0, 10**6)
        # An unset burst follows a configured rate.
        burst_key = f"{name}_burst"
        burst = (values[burst_key] if burst_key in given
                 else max(rate * QUOTA_BURST_SECONDS, 1))
        _in_range(f"quotas.{burst_key}", burst, 1, 10**7)
        rates[name] = (float(rate), float(burst))
    return QuotaConfig(values["enabled"], rates, values["max_callers"])


def _parse_gateway(raw: dict[str, Any], base_dir: Path,
                   data_dir: Path) -> GatewayConfig:
    try:
        return gateway_config(_section(raw, "gateway", GATEWAY_KEYS), base_dir,
                              data_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _parse_metrics(raw: dict[str, Any], base_dir: Path) -> MetricsConfig:
    try:
        return metrics_config(_section(raw, "metrics", METRICS_KEYS), base_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _parse_limits(raw: dict[str, Any]) -> LimitsConfig:
    values = _section(raw, "limits", _LIMITS_KEYS)
    for name, value in values.items():
        _in_range(f"limits.{name}", value, 1, 10**9)
    return LimitsConfig(**values)


def _parse_keystores(raw: Any, base_dir: Path) -> dict[str, KeystoreSettings]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("keystores: at least one [keystores.<name>] table is required")
    result = {}
    for name, table in raw.items():
        where = f"keystores.{name}"
        _name(where, name)
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        values = _section({where: table}, where, _KEYSTORE_KEYS)
        result[name] = _keystore_settings(where, name, values, base_dir)
    return result


def _keystore_settings(where: str, name: str, values: dict[str, Any],
                       base_dir: Path) -> KeystoreSettings:
    kind = values["type"]
    _check_choice(f"{where}.type", kind, KEYSTORE_TYPES)
    if kind == "pkcs11":
        for key in ("module", "token_label"):
            if values[key] is None:
                raise ConfigError(f"{where}.{key}: required for a pkcs11 keystore")
        if (values["pin_file"] is None) == (values["pin_env"] is None):
            raise ConfigError(f"{where}: set exactly one of pin_file and pin_env")
    elif values["domain_key_file"] is None:
        raise ConfigError(f"{where}.domain_key_file: required for a software keystore")
    _in_range(f"{where}.worker_threads", values["worker_threads"], 1, 64)

    def optional_path(key: str) -> Path | None:
        value = values[key]
        return None if value is None else _path(base_dir, value)

    return KeystoreSettings(
        name=name,
        type=kind,
        module=values["module"],
        token_label=values["token_label"],
        pin_file=optional_path("pin_file"),
        pin_env=values["pin_env"],
        softhsm2_conf=optional_path("softhsm2_conf"),
        domain_key_label=values["domain_key_label"],
        domain_key_file=optional_path("domain_key_file"),
        inline_crypto=values["inline_crypto"],
        worker_threads=values["worker_threads"],
    )


def _section(raw: dict[str, Any], name: str,
             schema: dict[str, tuple[tuple[type, ...], Any]]) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table")
    _check_unknown(table, set(schema), name + ".")
    values = {}
    for key, (types, default) in schema.items():
        if key not in table:
            if default is _REQUIRED:
                raise ConfigError(f"{name}.{key}: missing required key")
            values[key] = default
            continue
        value = table[key]
        # bool is an int in Python; only accept it where bool is expected.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigError(
                f"{name}.{key}: expected {expected}, got {type(value).__name__}")
        values[key] = value
    return values


def _check_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _in_range(key: str, value: int | float, low: float, high: float) -> int | float:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside {low}..{high}")
    return value


def _name(key: str, value: str) -> str:
    if not value or not all(c.isalnum() or c in "-_" for c in value) or len(value) > 64:
        raise ConfigError(
            f"{key}: {value!r} must be 1-64 letters, digits, '-' or '_'")
    return value


def _parse_mode(key: str, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an octal mode such as '0660'") from None
    if mode & ~0o777 or mode & 0o007:
        raise ConfigError(f"{key}: {value!r} must be within 0770 (no access for others)")
    return mode


def _path(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path
