"""The Secrets Manager service: generic secrets, versions and stages.

Pure domain logic over the store, the Key Service and the clock; methods
raise ``client.errors`` types. Every change of a secret is a
compare-and-swap on its revision (retried on conflict), and every change
invalidates the value cache and wakes long-poll waiters before it
returns, so no reader of this agent sees a stage that has moved. Stage
rules are in ``stages``, encryption in ``envelope``, limits in
``validate``; deletion, restore and rotation in ``lifecycle``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import time
from typing import Awaitable, Callable

import trio

from agent.cache.values import ValueCache
from agent.config import SecretsConfig
from agent.context import Clock
from agent.keys import states
from agent.keys.service import ENCRYPT_DECRYPT, ORIGIN_KMS, KeyService
from agent.keystore.base import SYMMETRIC_KEY_BYTES
from agent.secrets import envelope, stages as stage_rules, validate
from agent.secrets.rotation import RotationBudget, Rotator
from agent.secrets.watch import ChangeNotifier
from agent.locks import NamedLocks, contention_error
from agent.store.base import (
    ConflictError, DuplicateError, LimitError, Store, StoreError,
)
from agent.store.records import (
    ACS_CURRENT, AliasRecord, KeyRecord, SecretRecord, SecretVersionRecord,
    format_time,
)
from client.errors import (
    CallerError, InternalFailureError, InvalidParameterError, LimitExceededError,
    ResourceExistError, ResourceInDeleteWindowError, ResourceNotFoundError,
)

DEFAULT_KEY_ALIAS = "alias/acs/secrets-manager"
GENERIC = "Generic"
_UPDATE_ATTEMPTS = 8
# Store rereads of a long poll, so changes made by other agents on the
# same database are seen within this many seconds.
WAIT_POLL_SECONDS = 5.0

Mutation = Callable[[SecretRecord], Awaitable[
    tuple[SecretRecord, SecretVersionRecord | None, list[str]]]]


@dataclasses.dataclass(frozen=True)
class SecretValue:
    """One version's value and what GetSecretValue returns with it.

    ``stale_age`` is set, in seconds, when the value was served from the
    cache because the store or keystore failed.
    """

    secret_name: str
    secret_type: str
    data_type: str
    version_id: str
    create_time: str
    stages: tuple[str, ...]
    data: bytes = dataclasses.field(repr=False)
    stale_age: float | None = None
    # The secret record the value was read with: its creation time and
    # revision, which every change of the secret moves.
    record: tuple[str, int] = ("", -1)


class SecretService:
    """Secrets over one store and the Key Service; see the module docstring."""

    def __init__(self, store: Store, keys: KeyService, clock: Clock,
                 config: SecretsConfig, timer: Callable[[], float] = time.monotonic):
        self.store = store
        self.keys = keys
        self.clock = clock
        self.config = config
        self.cache = ValueCache(config.cache_ttl, config.cache_max_entries,
                                config.cache_max_bytes, config.stale_max_age, timer)
        self.rotator = Rotator(config.rotation, config.rotation_timeout)
        self.rotation_budget = RotationBudget(timer)
        self.notifier = ChangeNotifier()
        self._default_key_lock = trio.Lock()
        self.write_locks = NamedLocks()
        # A disabled or deleted key must stop cached values at once. Key
        # state changes are rare, so the whole cache is dropped.
        keys.state_listeners.append(lambda key_id: self.cache.invalidate_all())

    def now(self) -> str:
        """Return the current time as an API timestamp."""
        return format_time(self.clock.now())

    def later(self, seconds: float) -> str:
        """Return the API timestamp ``seconds`` from now."""
        return format_time(self.clock.now() + datetime.timedelta(seconds=seconds))

    def arn(self, secret: SecretRecord) -> str:
        """Return acs:kms:<region>:<keystore>:secret/<name>."""
        return f"acs:kms:{self.keys.region}:{secret.keystore}:secret/{secret.secret_name}"

    def secret_name(self, ref: str) -> str:
        """Return the name a SecretName parameter (name or ARN) refers to."""
        if ref.startswith("acs:"):
            parts = ref.split(":", 4)
            if (len(parts) != 5 or parts[1] != "kms" or parts[2] != self.keys.region
                    or not parts[4].startswith("secret/")):
                raise ResourceNotFoundError(f"The secret {ref!r} is not found.")
            ref = parts[4][len("secret/"):]
        return validate.secret_name(ref)

    # --- reading ---------------------------------------------------------------

    async def get_secret(self, ref: str, allow_pending: bool = False) -> SecretRecord:
        """Return a secret by name or ARN.

        Raises:
            ResourceNotFoundError: no such secret.
            ResourceInDeleteWindowError: it is in its recovery window and
                ``allow_pending`` is false.
        """
        name = self.secret_name(ref)
        return _require(await self.store.get_secret(name), name, allow_pending)

    async def get_value(self, ref: str, version_id: str | None,
                        stage: str | None) -> SecretValue:
        """GetSecretValue: by VersionId, VersionStage, or ACSCurrent.

        A cached value is served while fresh and while the secret's record
        is the one it was read with, so a change by another agent on the
        same store shows as soon as this agent reads the commit. If the
        store or keystore fails, a cached value within the stale age is
        served with ``stale_age`` set; caller errors are never masked.
        """
        name = self.secret_name(ref)
        if version_id is None and stage is None:
            stage = ACS_CURRENT
        key = (name, version_id, stage)
        cached = self.cache.get(key)
        if cached is not None and await self._unchanged(cached):
            return cached
        token = self.cache.token()
        try:
            value = await self.read_value(name, version_id, stage)
        except CallerError:
            raise
        except Exception:
            stale = self.cache.get_stale(key)
            if stale is None:
                raise
            return dataclasses.replace(stale[0], stale_age=stale[1])
        self.cache.put(key, value, len(value.data), token)
        return value

    async def _unchanged(self, cached: SecretValue) -> bool:
        # The store remembers the record until any commit, so this costs a
        # lookup in memory. This agent's own writes already invalidated.
        try:
            secret = await self.store.get_secret(cached.secret_name)
        except StoreError:
            return True  # a fresh value outlives a failing store
        if secret is not None and (secret.create_time, secret.revision) == cached.record:
            return True
        self.cache.invalidate(cached.secret_name)
        return False

    async def read_value(self, name: str, version_id: str | None,
                         stage: str | None) -> SecretValue:
        """Read and decrypt a version from the store, bypassing the cache."""
        secret, version = await self.store.read_secret_version(name, version_id, stage)
        secret = _require(secret, name)
        if version is None or (stage is not None
                               and secret.stages.get(stage) != version.version_id):
            requested = version_id if version_id is not None else stage
            raise ResourceNotFoundError(
                f"The version {requested!r} of secret {name!r} is not found.")
        data = await self._open(version)
        return SecretValue(
            name, secret.secret_type, version.data_type, version.version_id,
            version.create_time,
            tuple(stage_rules.stages_of(secret.stages, version.version_id)), data,
            record=(secret.create_time, secret.revision))

    async def _open(self, version: SecretVersionRecord) -> bytes:
        return await envelope.open_value(
            self.keys, version.secret_name, version.version_id, version.data_type,
            version.value_format, version.data_key_blob, version.iv,
            version.ciphertext)

    async def list_versions(self, ref: str, include_deprecated: bool
                            ) -> tuple[SecretRecord, list[SecretVersionRecord]]:
        """ListSecretVersionIds: versions oldest first; stageless ones only
        if ``include_deprecated``."""
        secret = await self.get_secret(ref, allow_pending=True)
        versions = await self.store.list_secret_versions(secret.secret_name)
        staged = set(secret.stages.values())
        if not include_deprecated:
            versions = [v for v in versions if v.version_id in staged]
        return secret, versions

    # --- writing ---------------------------------------------------------------

    async def change(self, name: str, mutate: Mutation,
                     allow_pending: bool = False) -> SecretRecord:
        """Apply ``mutate`` to the current record and store the result.

        ``mutate`` returns the new record, a version to insert (or None)
        and version ids to drop. It runs again if another writer won
        the compare-and-swap. The cache entries of the secret are
        dropped and its waiters woken whether or not the write succeeded.
        """
        try:
            async with self.write_locks.hold(name):
                for _ in range(_UPDATE_ATTEMPTS):
                    secret = _require(await self.store.get_secret(name), name,
                                      allow_pending)
                    updated, version, drop = await mutate(secret)
                    updated = dataclasses.replace(updated, update_time=self.now())
                    try:
                        return await self.store.write_secret(updated, version, drop)
                    except ConflictError:
                        continue
            raise contention_error(f"secret {name}")
        finally:
            self.changed(name)

    def changed(self, name: str) -> None:
        """Invalidate the cached values of ``name`` and wake its waiters."""
        self.cache.invalidate(name)
        self.notifier.notify(name)

    async def create_secret(self, *, name: str, version_id: str, data: bytes,
                            data_type: str, key_ref: str | None, description: str,
                            tags: dict[str, str], creator: str,
                            rotation_interval: int | None,
                            automatic_rotation: bool) -> SecretRecord:
        """CreateSecret: a new secret whose first version takes ACSCurrent.

        Raises:
            ResourceExistError: a secret of that name exists.
            ResourceInDeleteWindowError: it exists in its recovery window.
        """
        validate.secret_name(name, creating=True)
        validate.version_id(version_id)
        validate.secret_data(data, data_type)
        existing = await self.store.get_secret(name)
        if existing is not None:
            raise _exists_error(existing)
        key = await self.encryption_key(key_ref)
        sealed = await envelope.seal(self.keys, key.key_id, name, version_id,
                                     data_type, data)
        now = self.now()
        secret = SecretRecord(
            secret_name=name, secret_type=GENERIC, encryption_key_id=key.key_id,
            keystore=key.keystore, description=description, creator=creator,
            create_time=now, update_time=now, stages={ACS_CURRENT: version_id},
            automatic_rotation="Enabled" if automatic_rotation else "Disabled",
            rotation_interval=rotation_interval,
            next_rotation_date=(self.later(rotation_interval)
                                if automatic_rotation and rotation_interval else None))
        try:
            await self.store.insert_secret(
                secret, _version(name, version_id, now, data_type, sealed), tags)
        except DuplicateError:
            raise _exists_error(await self.store.get_secret(name)) from None
        except LimitError as exc:
            raise LimitExceededError(str(exc)) from None
        finally:
            self.changed(name)
        return secret

    async def put_value(self, ref: str, version_id: str, data: bytes,
                        data_type: str, requested: list[str],
                        metadata: Callable[[SecretRecord], SecretRecord] | None = None
                        ) -> tuple[SecretRecord, list[str]]:
        """PutSecretValue: add a version that takes ``requested`` stages.

        An existing VersionId with the same data and type succeeds and
        changes nothing. ``metadata`` may adjust the record in the same
        write (rotation uses it).

        Returns:
            The stored secret and the stages of the version.
        Raises:
            ResourceExistError: the VersionId exists with other data.
        """
        name = self.secret_name(ref)
        validate.version_id(version_id)
        validate.secret_data(data, data_type)
        for stage in requested:
            stage_rules.validate_stage(stage)
        secret = await self.get_secret(name)
        repeated = await self._repeated_put(secret, version_id, data, data_type)
        if repeated is not None:
            return repeated
        sealed = await envelope.seal(self.keys, secret.encryption_key_id, name,
                                     version_id, data_type, data)
        version = _version(name, version_id, self.now(), data_type, sealed)

        async def mutate(current: SecretRecord):
            new_stages = stage_rules.stages_after_put(
                current.stages, version_id, requested)
            ids = [v.version_id for v in await self.store.list_secret_versions(name)]
            drop = stage_rules.versions_to_drop([*ids, version_id], new_stages)
            updated = dataclasses.replace(current, stages=new_stages)
            return (metadata(updated) if metadata else updated), version, drop

        try:
            stored = await self.change(name, mutate)
        except DuplicateError:
            # Another request stored the same VersionId first.
            repeated = await self._repeated_put(
                await self.get_secret(name), version_id, data, data_type)
            if repeated is None:
                raise InternalFailureError() from None
            return repeated
        return stored, stage_rules.stages_of(stored.stages, version_id)

    async def _repeated_put(self, secret: SecretRecord, version_id: str, data: bytes,
                            data_type: str) -> tuple[SecretRecord, list[str]] | None:
        _, version = await self.store.read_secret_version(
            secret.secret_name, version_id, None)
        if version is None:
            return None
        stored = await self._open(version)
        if version.data_type != data_type or not hmac.compare_digest(stored, data):
            raise ResourceExistError(
                f"The version {version_id!r} of secret {secret.secret_name!r} "
                "already exists with different data.")
        return secret, stage_rules.stages_of(secret.stages, version_id)

    async def update_description(self, ref: str, description: str) -> SecretRecord:
        """UpdateSecret: change the description."""
        async def mutate(secret: SecretRecord):
            return dataclasses.replace(secret, description=description), None, []

        return await self.change(self.secret_name(ref), mutate)

    async def update_stage(self, ref: str, stage: str, remove_from: str | None,
                           move_to: str | None) -> SecretRecord:
        """UpdateSecretVersionStage; see ``stages.stages_after_update``."""
        name = self.secret_name(ref)

        async def mutate(secret: SecretRecord):
            versions = await self.store.list_secret_versions(name)
            new_stages = stage_rules.stages_after_update(
                secret.stages, stage, remove_from, move_to,
                {v.version_id for v in versions})
            return dataclasses.replace(secret, stages=new_stages), None, []

        return await self.change(name, mutate)

    # --- keys ------------------------------------------------------------------

    async def encryption_key(self, key_ref: str | None) -> KeyRecord:
        """Return the usable symmetric key that seals a new secret.

        Without ``key_ref`` it is ``[secrets] default_key``, or else the
        agent's own key under ``DEFAULT_KEY_ALIAS``, created on first use.

        Raises:
            InvalidParameterError: the key is not a symmetric key.
            KeyNotFoundError, KeyDisabledError ...: it cannot be used.
        """
        ref = key_ref or self.config.default_key or None
        key = await (self.keys.resolve(ref) if ref else self._default_key())
        if key.key_usage != ENCRYPT_DECRYPT or key.key_spec not in SYMMETRIC_KEY_BYTES:
            raise InvalidParameterError(
                f"EncryptionKeyId {key.key_id} is not a symmetric key.")
        states.require_state(key, states.USE)
        return key

    async def _default_key(self) -> KeyRecord:
        alias = await self.store.get_alias(DEFAULT_KEY_ALIAS)
        if alias is not None:
            return await self.keys.resolve(alias.key_id)
        async with self._default_key_lock:
            alias = await self.store.get_alias(DEFAULT_KEY_ALIAS)
            if alias is not None:
                return await self.keys.resolve(alias.key_id)
            return await self._create_default_key()

    async def _create_default_key(self) -> KeyRecord:
        key = await self.keys.create_key(
            key_spec="Aliyun_AES_256", key_usage=None, origin=ORIGIN_KMS,
            protection_level=None, description="Default key of the Secrets Manager",
            tags={}, keystore_name=None, creator="kms-agent")
        now = self.now()
        try:
            await self.store.create_alias(
                AliasRecord(DEFAULT_KEY_ALIAS, key.key_id, now, now))
            return key
        except DuplicateError:
            pass
        # Another agent on the same database created the alias first: use
        # its key and retire ours, which sealed nothing.
        await self.keys.schedule_deletion(key.key_id, 7)
        alias = await self.store.get_alias(DEFAULT_KEY_ALIAS)
        if alias is None:
            raise InternalFailureError()
        return await self.keys.resolve(alias.key_id)


def _require(secret: SecretRecord | None, name: str,
             allow_pending: bool = False) -> SecretRecord:
    if secret is None:
        raise ResourceNotFoundError(f"The secret {name!r} is not found.")
    if secret.planned_delete_time is not None and not allow_pending:
        raise ResourceInDeleteWindowError(
            f"The secret {name!r} is scheduled for deletion at "
            f"{secret.planned_delete_time}; restore it with RestoreSecret first.")
    return secret


def _exists_error(secret: SecretRecord | None) -> Exception:
    if secret is None:
        return InternalFailureError()
    if secret.planned_delete_time is not None:
        return ResourceInDeleteWindowError(
            f"The secret {secret.secret_name!r} is in its recovery window; "
            "restore it or wait until it is deleted.")
    return ResourceExistError(f"The secret {secret.secret_name!r} already exists.")


def _version(name: str, version_id: str, now: str, data_type: str,
             sealed: envelope.SealedValue) -> SecretVersionRecord:
    return SecretVersionRecord(
        secret_name=name, version_id=version_id, create_time=now,
        data_type=data_type, value_format=envelope.VALUE_FORMAT,
        data_key_blob=sealed.data_key_blob, iv=sealed.iv,
        ciphertext=sealed.ciphertext)
