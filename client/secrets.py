"""A small caching client for reading secrets from the agent.

``SecretsClient`` wraps a blocking ``KmsClient`` and keeps recent
GetSecretValue results for a TTL (one hour unless set otherwise). While
the agent is unreachable, slow, throttling or failing, a read retries with
capped exponential backoff and jitter and then falls back to the last
value it has, marked stale. Other errors, such as a secret that does not
exist, are raised at once and never retried. ``watch`` calls back when a
secret changes, by long-polling WaitSecretChange, or by polling at the TTL
when the agent lacks that operation. ``AsyncSecretsClient`` offers ``get``
for trio code over ``AsyncKmsClient``. Secret values live in
``SecretValue``, whose repr never shows the data.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from client.errors import (
    InternalFailureError,
    InvalidApiNameError,
    InvalidParameterError,
    KmsError,
    UnsupportedOperationError,
)
from client.sync import KmsClient

DEFAULT_TTL = 3600.0
DEFAULT_STAGE = "ACSCurrent"
# The longest WaitSecretChange the agent accepts, in seconds.
MAX_WAIT_SECONDS = 300
TEXT = "text"
BINARY = "binary"

# Errors after which a read is retried and, once the retries are spent,
# served from the cache. All are transient: the agent is away, slow,
# throttling or failing inside. 4xx and 409 errors are never retried.
RETRYABLE_CODES = frozenset({
    "SDK.ServerUnreachable",
    "SDK.ReadTimeout",
    "Rejected.Throttling",
    "ServiceUnavailableTemporary",
    "InternalFailure",
})

RetryHook = Callable[[KmsError, int, float], None]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter for retryable errors.

    Retry ``n`` (from 0) waits a random time between half and all of
    ``min(max_delay, base_delay * 2**n)`` seconds. The jitter spreads the
    retries of many clients that failed at the same moment.
    """

    max_retries: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, retry: int, uniform: Callable[[], float] = random.random) -> float:
        """Return the seconds to wait before retry number ``retry``."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** retry)
        return ceiling / 2 + uniform() * ceiling / 2


def is_retryable(error: KmsError) -> bool:
    """Return True for the transient errors that a read retries."""
    return error.code in RETRYABLE_CODES


@dataclasses.dataclass(frozen=True)
class SecretValue:
    """One version of a secret as GetSecretValue returned it.

    ``data`` is str for ``text`` secrets and bytes for ``binary`` ones,
    and is left out of the repr. ``stale`` is true when the agent could
    not confirm the value, either because its reply set ``Stale`` or
    because this client served it from its cache after an error.
    ``stale_age_seconds`` is then the time since the value was last
    confirmed, when known.
    """

    name: str
    data: str | bytes = dataclasses.field(repr=False)
    data_type: str = TEXT
    version_id: str = ""
    version_stages: tuple[str, ...] = ()
    stale: bool = False
    stale_age_seconds: float | None = None

    def as_bytes(self) -> bytes:
        """Return the data as bytes, text encoded as UTF-8."""
        if isinstance(self.data, bytes):
            return self.data
        return self.data.encode("utf-8")

    def as_text(self) -> str:
        """Return text data as is and binary data as Base64 text."""
        if isinstance(self.data, bytes):
            return base64.b64encode(self.data).decode("ascii")
        return self.data

    def json_field(self, key: str) -> str:
        """Return one field of a value that is a JSON object.

        A string field is returned as is, any other JSON value as compact
        JSON text. Error messages name the secret and the field, never the
        value.

        Raises:
            InvalidParameterError: the value is not a JSON object, or it
                has no field ``key``.
        """
        try:
            document = json.loads(self.as_bytes())
        except (ValueError, UnicodeDecodeError):
            document = None
        if not isinstance(document, dict):
            raise InvalidParameterError(
                f"The value of secret {self.name!r} is not a JSON object, so "
                f"its field {key!r} cannot be selected.")
        if key not in document:
            raise InvalidParameterError(
                f"The JSON value of secret {self.name!r} has no field {key!r}.")
        field = document[key]
        if isinstance(field, str):
            return field
        return json.dumps(field, separators=(",", ":"), ensure_ascii=False)


def secret_from_reply(reply: dict[str, Any], requested_name: str) -> SecretValue:
    """Build a ``SecretValue`` from a GetSecretValue result map.

    Raises:
        InternalFailureError: the reply lacks SecretData or has a field of
            the wrong type.
    """
    data_type = reply.get("SecretDataType") or TEXT
    if data_type not in (TEXT, BINARY):
        raise _malformed(f"an unknown SecretDataType {data_type!r}")
    stale_age = reply.get("StaleAgeSeconds")
    return SecretValue(
        name=str(reply.get("SecretName") or requested_name),
        data=_secret_data(reply.get("SecretData"), data_type),
        data_type=data_type,
        version_id=str(reply.get("VersionId") or ""),
        version_stages=_version_stages(reply.get("VersionStages")),
        stale=bool(reply.get("Stale", False)),
        stale_age_seconds=float(stale_age) if stale_age is not None else None,
    )


def _secret_data(data: Any, data_type: str) -> str | bytes:
    if data_type == TEXT and isinstance(data, str):
        return data
    if data_type == TEXT and isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("text SecretData that is not UTF-8") from None
    if data_type == BINARY and isinstance(data, bytes):
        return data
    if data_type == BINARY and isinstance(data, str):
        # The cloud API sends binary data as Base64 text.
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("binary SecretData that is not Base64") from None
    raise _malformed("no SecretData")


def _version_stages(stages: Any) -> tuple[str, ...]:
    # The API wraps lists as {"VersionStage": [...]}; a plain list is accepted.
    if isinstance(stages, dict):
        stages = stages.get("VersionStage")
    if isinstance(stages, list):
        return tuple(str(stage) for stage in stages)
    return ()


def _malformed(detail: str) -> InternalFailureError:
    return InternalFailureError(f"The agent sent a GetSecretValue reply with {detail}.")


def get_params(name: str, stage: str | None, version_id: str | None) -> dict[str, str]:
    """Return the GetSecretValue parameters; None values are left out."""
    params = {"SecretName": name}
    if stage is not None:
        params["VersionStage"] = stage
    if version_id is not None:
        params["VersionId"] = version_id
    return params


@dataclasses.dataclass
class _Entry:
    value: SecretValue
    fetched_at: float
    # After a fallback the agent is not asked again before this time, so
    # that an outage does not cost every read the whole retry budget.
    retry_after: float = float("-inf")


CacheKey = tuple[str, str | None, str | None]


class SecretCache:
    """The LRU map of recent values and the rules for when they may be used.

    It has no locking and no I/O, so the blocking and trio clients share it.
    """

    def __init__(self, *, ttl: float, stale_retry_interval: float,
                 max_entries: int):
        if ttl <= 0 or stale_retry_interval < 0 or max_entries < 1:
            raise InvalidParameterError(
                "ttl and max_entries must be positive and stale_retry_interval "
                "must not be negative.")
        self.ttl = ttl
        self.stale_retry_interval = stale_retry_interval
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[CacheKey, _Entry] = (
            collections.OrderedDict())

    def usable(self, key: CacheKey, now: float,
               ttl: float | None) -> SecretValue | None:
        """Return the cached value if it may be served without asking the agent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        lifetime = self.ttl if ttl is None else ttl
        if entry.value.stale:
            # The agent itself served this value stale, so ask again soon.
            lifetime = min(lifetime, self.stale_retry_interval)
        if now - entry.fetched_at < lifetime and not entry.value.stale:
            return entry.value
        if now - entry.fetched_at < lifetime or now < entry.retry_after:
            return self._stale_copy(entry, now)
        return None

    def store(self, key: CacheKey, value: SecretValue, now: float) -> None:
        """Remember ``value`` as fetched at ``now``, evicting the oldest entry."""
        self._entries[key] = _Entry(value, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def fallback(self, key: CacheKey, error: KmsError, now: float) -> SecretValue:
        """Return the last value for ``key`` marked stale, or raise ``error``.

        Raises:
            KmsError: ``error`` itself, when it is not retryable or nothing
                is cached for ``key``.
        """
        entry = self._entries.get(key)
        if entry is None or not is_retryable(error):
            raise error
        entry.retry_after = now + self.stale_retry_interval
        return self._stale_copy(entry, now)

    def discard(self, name: str | None = None) -> None:
        """Forget every cached value of secret ``name``, or all when None."""
        for key in list(self._entries):
            if name is None or key[0] == name:
                del self._entries[key]

    @staticmethod
    def _stale_copy(entry: _Entry, now: float) -> SecretValue:
        age = now - entry.fetched_at + (entry.value.stale_age_seconds or 0.0)
        return dataclasses.replace(entry.value, stale=True, stale_age_seconds=age)


class SecretsClient:
    """A blocking, thread-safe reader of secrets with a cache and fallback.

    Args:
        client: the ``KmsClient`` to use; by default one is made for
            ``socket_path`` with ``timeout``. ``close`` closes it either way.
        socket_path: the agent's socket when ``client`` is None.
        timeout: seconds to wait for each reply when ``client`` is None.
        ttl: seconds a value is served from the cache before it is read
            again; ``get`` can override it per call.
        retry: the backoff of retryable errors.
        stale_retry_interval: seconds a value served stale after an error
            is served again without asking the agent.
        max_entries: the number of values kept; the least recently read
            value is dropped first.
        clock, sleep, uniform: monotonic time in seconds, a sleep and a
            random number in [0, 1), replaceable in tests.
        on_retry: called as ``on_retry(error, retry_number, delay)`` before
            each backoff sleep, for progress messages.
    """

    def __init__(self, client: Any = None, *, socket_path: str | None = None,
                 timeout: float = 10.0, ttl: float = DEFAULT_TTL,
                 retry: RetryPolicy = RetryPolicy(),
                 stale_retry_interval: float = 5.0, max_entries: int = 128,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 uniform: Callable[[], float] = random.random,
                 on_retry: RetryHook | None = None):
        if client is None:
            client = KmsClient(socket_path, timeout=timeout)
        self.client = client
        self.retry = retry
        self._cache = SecretCache(ttl=ttl, stale_retry_interval=stale_retry_interval,
                                  max_entries=max_entries)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._on_retry = on_retry

    def __repr__(self) -> str:
        return f"SecretsClient(client={self.client!r})"

    def __enter__(self) -> SecretsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying client; the cache stays usable."""
        self.client.close()

    def get(self, name: str, *, stage: str | None = None,
            version_id: str | None = None, ttl: float | None = None) -> SecretValue:
        """Return secret ``name``, from the cache while it is younger than ``ttl``.

        ``stage`` defaults to ACSCurrent on the agent. ``ttl`` overrides the
        client's TTL for this read.

        Raises:
            KmsError: a non-retryable error, such as ResourceNotFoundError;
                or a retryable one when nothing is cached to fall back on.
        """
        key = (name, stage, version_id)
        with self._lock:
            cached = self._cache.usable(key, self._clock(), ttl)
        if cached is not None:
            return cached
        return self._read(key)

    def refresh(self, name: str, *, stage: str | None = None,
                version_id: str | None = None) -> SecretValue:
        """Read secret ``name`` from the agent now, with ``get``'s fallback."""
        return self._read((name, stage, version_id))

    def invalidate(self, name: str | None = None) -> None:
        """Drop the cached values of secret ``name``, or of every secret."""
        with self._lock:
            self._cache.discard(name)

    def watch(self, name: str, callback: Callable[[SecretValue], None], *,
              stage: str | None = None, wait_seconds: int = 60,
              poll_interval: float | None = None,
              on_error: Callable[[KmsError], None] | None = None) -> SecretWatch:
        """Call ``callback(value)`` from a thread each time the secret changes.

        See ``SecretWatch`` for how changes are detected and errors handled.
        ``wait_seconds`` is the length of one long poll, from 1 to 300 (the
        agent's limit). ``poll_interval`` defaults to the client's TTL.

        Raises:
            InvalidParameterError: ``wait_seconds`` is out of range.
        """
        if not 1 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise InvalidParameterError(
                f"wait_seconds must be from 1 to {MAX_WAIT_SECONDS}, "
                f"not {wait_seconds}.")
        interval = self._cache.ttl if poll_interval is None else poll_interval
        return SecretWatch(self, name, callback, stage=stage,
                           wait_seconds=wait_seconds, poll_interval=interval,
                           on_error=on_error)

    def _read(self, key: CacheKey) -> SecretValue:
        try:
            value = self._fetch(key)
        except KmsError as error:
            with self._lock:
                return self._cache.fallback(key, error, self._clock())
        with self._lock:
            self._cache.store(key, value, self._clock())
        return value

    def _fetch(self, key: CacheKey) -> SecretValue:
        params = get_params(*key)
        retry = 0
        while True:
            try:
                return secret_from_reply(self.client.call("GetSecretValue", **params),
                                         key[0])
            except KmsError as error:
                if not is_retryable(error) or retry >= self.retry.max_retries:
                    raise
                delay = self.retry.delay(retry, self._uniform)
                if self._on_retry is not None:
                    self._on_retry(error, retry + 1, delay)
                self._sleep(delay)
                retry += 1


class AsyncSecretsClient:
    """The trio counterpart of ``SecretsClient.get`` over an ``AsyncKmsClient``.

    It shares the cache rules and retry policy of ``SecretsClient`` and
    takes the same keyword arguments, except ``socket_path``, ``timeout``
    and ``on_retry``. ``clock`` and ``sleep`` default to trio's. It has no
    ``watch``.
    """

    def __init__(self, client: Any, *, ttl: float = DEFAULT_TTL,
                 retry: RetryPolicy = RetryPolicy(),
                 stale_retry_interval: float = 5.0, max_entries: int = 128,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Any] | None = None,
                 uniform: Callable[[], float] = random.random):
        import trio

        self.client = client
        self.retry = retry
        self._cache = SecretCache(ttl=ttl, stale_retry_interval=stale_retry_interval,
                                  max_entries=max_entries)
        self._clock = clock or trio.current_time
        self._sleep = sleep or trio.sleep
        self._uniform = uniform

    async def get(self, name: str, *, stage: str | None = None,
                  version_id: str | None = None,
                  ttl: float | None = None) -> SecretValue:
        """Return secret ``name`` as ``SecretsClient.get`` does."""
        key = (name, stage, version_id)
        cached = self._cache.usable(key, self._clock(), ttl)
        if cached is not None:
            return cached
        try:
            value = await self._fetch(key)
        except KmsError as error:
            return self._cache.fallback(key, error, self._clock())
        self._cache.store(key, value, self._clock())
        return value

    async def _fetch(self, key: CacheKey) -> SecretValue:
        params = get_params(*key)
        retry = 0
        while True:
            try:
                reply = await self.client.call("GetSecretValue", **params)
                return secret_from_reply(reply, key[0])
            except KmsError as error:
                if not is_retryable(error) or retry >= self.retry.max_retries:
                    raise
                await self._sleep(self.retry.delay(retry, self._uniform))
                retry += 1



# Errors of WaitSecretChange that mean the agent does not offer it.
_UNSUPPORTED_ERRORS = (InvalidApiNameError, UnsupportedOperationError)
LONG_POLL = "long-poll"
POLLING = "polling"


class SecretWatch:
    """A daemon thread that calls back each time a secret changes.

    A change is a new VersionId at the watched stage. For ACSCurrent the
    thread long-polls WaitSecretChange on a connection of its own, because
    a ``KmsClient`` runs one call at a time and the long poll would hold up
    every read. For other stages, or when the agent does not know that
    operation, ``mode`` is ``"polling"`` and the secret is read every
    ``poll_interval`` seconds instead. Errors go to ``on_error`` and the watch goes on after
    a backoff. An exception raised by ``callback`` ends the watch and
    reaches ``threading.excepthook``.
    """

    def __init__(self, secrets: SecretsClient, name: str,
                 callback: Callable[[SecretValue], None], *, stage: str | None,
                 wait_seconds: int, poll_interval: float,
                 on_error: Callable[[KmsError], None] | None):
        self.name = name
        self.stage = stage
        self.wait_seconds = wait_seconds
        self.poll_interval = poll_interval
        self._secrets = secrets
        self._callback = callback
        self._on_error = on_error
        self._stopped = threading.Event()
        self._poller = self._open_poller()
        self.mode = LONG_POLL if self._poller is not None else POLLING
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"secret-watch {name}")
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop watching; return True if the thread ended within ``timeout``.

        A long poll in progress is not interrupted, so the thread may run
        on for up to ``wait_seconds`` before it ends.
        """
        self._stopped.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _open_poller(self) -> Any:
        # WaitSecretChange watches ACSCurrent only.
        socket_path = getattr(self._secrets.client, "socket_path", None)
        if socket_path is None or self.stage not in (None, DEFAULT_STAGE):
            return None
        # The agent must be allowed to hold the request for the whole wait.
        return KmsClient(socket_path, timeout=self.wait_seconds + 15.0)

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            if self._poller is not None:
                self._poller.close()

    def _watch(self) -> None:
        known: SecretValue | None = None
        failures = 0
        while not self._stopped.is_set():
            try:
                if known is None:
                    known = self._secrets.get(self.name, stage=self.stage)
                known = self._next_value(known)
                failures = 0
            except KmsError as error:
                if self._on_error is not None:
                    self._on_error(error)
                self._stopped.wait(self._backoff(failures))
                failures += 1

    def _next_value(self, known: SecretValue) -> SecretValue:
        # Wait for a change, then return the new value after calling back.
        if not self._wait_for_change(known.version_id):
            return known
        value = self._secrets.refresh(self.name, stage=self.stage)
        if value.version_id == known.version_id:
            # The agent signalled a change that a read did not show, perhaps
            # because the read fell back to the cache, so back off a little.
            self._stopped.wait(self._backoff(0))
            return known
        self._callback(value)
        return value

    def _wait_for_change(self, version_id: str) -> bool:
        if self.mode == POLLING:
            return not self._stopped.wait(self.poll_interval)
        # WaitSecretChange is specific to this agent. It returns when
        # ACSCurrent no longer names VersionId, or after TimeoutSeconds.
        try:
            reply = self._poller.call("WaitSecretChange", SecretName=self.name,
                                      VersionId=version_id,
                                      TimeoutSeconds=self.wait_seconds)
        except _UNSUPPORTED_ERRORS:
            self.mode = POLLING
            return False
        if "Changed" in reply:
            return bool(reply["Changed"])
        return reply.get("VersionId", version_id) != version_id

    def _backoff(self, failures: int) -> float:
        delay = self._secrets.retry.delay(failures)
        return min(delay, self.poll_interval)
