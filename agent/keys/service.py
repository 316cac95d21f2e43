"""The Key Service: key lifecycle and symmetric cryptography.

Pure domain logic: the store, the keystores and the clock are passed in,
and every method raises ``client.errors`` types for the caller. Key
state rules live in ``states``, the blob format in ``blob``, aliases and
tags in ``aliases``. Writes re-read and retry when a concurrent writer
changed the key first (compare-and-swap on the record revision).
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import uuid
from typing import Callable

from agent.context import Clock
from agent.keys import rotation, specs, states
from agent.keys.blob import (
    FORMAT_DATA_KEY, FORMAT_PLAINTEXT, blob_header, canonical_context, parse_blob,
)
from agent.locks import NamedLocks, contention_error
from agent.keystore.base import (
    ASYMMETRIC_SPECS, HMAC_KEY_BYTES, HSM, SOFTWARE, SYMMETRIC_KEY_BYTES,
    DecryptionFailed, KeyMaterial, Keystore,
)
from agent.store.base import ConflictError, LimitError, Store
from agent.store.records import (
    DISABLED, ENABLED, PENDING_DELETION, PENDING_IMPORT, KeyFilter, KeyRecord,
    KeyVersionRecord, format_time,
)
from client.errors import (
    DeletionProtectedError, InternalFailureError, InvalidCiphertextError,
    InvalidParameterError, KeyNotFoundError, KeyPendingDeletionError,
    KeyPendingImportError, LimitExceededError, ServiceUnavailableError,
    UnsupportedOperationError, UnsupportedOriginError,
    UnsupportedProtectionLevelError,
)

ENCRYPT_DECRYPT = "ENCRYPT/DECRYPT"
ORIGIN_KMS = "Aliyun_KMS"
ORIGIN_EXTERNAL = "EXTERNAL"
MAX_PLAINTEXT_BYTES = 6144
DATA_KEY_SPEC_BYTES = {"AES_256": 32, "AES_128": 16}
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_UPDATE_ATTEMPTS = 5


def new_key_id() -> str:
    """Return a fresh key id such as ``key-4x0h2j9s...`` (24 random chars)."""
    return "key-" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(24))


def _opaque_failure(detail: str) -> InvalidCiphertextError:
    # The caller sees one message for every cause; the detail is logged.
    error = InvalidCiphertextError()
    error.detail = detail  # type: ignore[attr-defined]
    return error


@dataclasses.dataclass(frozen=True)
class CryptoResult:
    """The result an Encrypt, Decrypt or data key call returns to its handler."""

    key: KeyRecord
    version_id: str
    blob: bytes = b""
    plaintext: bytes = dataclasses.field(default=b"", repr=False)
    blob_format: int = FORMAT_PLAINTEXT


class KeyService:
    """Key lifecycle and cryptography over one store and its keystores."""

    def __init__(self, store: Store, keystores: dict[str, Keystore],
                 default_keystore: str, clock: Clock, region: str):
        self.store = store
        self.keystores = keystores
        self.default_keystore = default_keystore
        self.clock = clock
        self.region = region
        # Called after a key's state changes or it is purged, so caches of
        # values protected by the key (secrets) drop them at once.
        self.state_listeners: list[Callable[[str], None]] = []
        self.write_locks = NamedLocks()

    def now(self) -> str:
        """Return the current time as an API timestamp."""
        return format_time(self.clock.now())

    def arn(self, key: KeyRecord) -> str:
        """Return the ARN of a key: acs:kms:<region>:<keystore>:key/<id>."""
        return f"acs:kms:{self.region}:{key.keystore}:key/{key.key_id}"

    # --- lookup ------------------------------------------------------------

    async def resolve(self, key_ref: str) -> KeyRecord:
        """Find a key by id, ``alias/<name>`` or ARN.

        Raises:
            KeyNotFoundError, AliasNotFoundError: nothing matches.
        """
        keystore = None
        if key_ref.startswith("acs:"):
            keystore, key_ref = self._split_arn(key_ref)
        if key_ref.startswith("alias/"):
            from agent.keys.aliases import lookup_alias
            key_ref = (await lookup_alias(self.store, key_ref)).key_id
        key = await self.store.get_key(key_ref)
        if key is None or (keystore is not None and key.keystore != keystore):
            raise KeyNotFoundError(f"The key {key_ref!r} is not found.")
        return key

    def _split_arn(self, arn: str) -> tuple[str, str]:
        parts = arn.split(":", 4)
        if (len(parts) != 5 or parts[:2] != ["acs", "kms"]
                or parts[2] != self.region):
            raise KeyNotFoundError(f"The key {arn!r} is not found.")
        resource = parts[4]
        if resource.startswith("key/"):
            return parts[3], resource[len("key/"):]
        if resource.startswith("alias/"):
            return parts[3], resource
        raise KeyNotFoundError(f"The key {arn!r} is not found.")

    def keystore_of(self, key: KeyRecord) -> Keystore:
        """Return the keystore that contains a key's material."""
        try:
            return self.keystores[key.keystore]
        except KeyError:
            raise InternalFailureError() from None

    # --- lifecycle ---------------------------------------------------------

    async def create_key(self, *, key_spec: str, key_usage: str | None,
                         origin: str, protection_level: str | None,
                         description: str, tags: dict[str, str],
                         keystore_name: str | None, creator: str,
                         rotation_interval: int | None = None) -> KeyRecord:
        """Create a key with its first, primary version.

        A key with Origin EXTERNAL starts in PendingImport without a
        version (see ``byok``). With ``rotation_interval`` (seconds) the
        key rotates automatically. KeyUsage rules are in ``specs``.

        Raises:
            UnsupportedOperationError: the key spec is not available.
            UnsupportedOriginError: the origin is unknown, or EXTERNAL
                for a spec whose material cannot be imported.
            UnsupportedProtectionLevelError: the keystore cannot protect
                that spec at the requested level.
            InvalidParameterError: an unknown keystore or usage.
        """
        usage = specs.key_usage(key_spec, key_usage)
        if origin not in (ORIGIN_KMS, ORIGIN_EXTERNAL):
            raise UnsupportedOriginError(
                f"Origin {origin} is not supported; use {ORIGIN_KMS} or "
                f"{ORIGIN_EXTERNAL}.")
        if origin == ORIGIN_EXTERNAL and key_spec not in specs.IMPORTABLE_SPECS:
            raise UnsupportedOriginError(
                f"Origin {ORIGIN_EXTERNAL} is available for KeySpec "
                f"{', '.join(specs.IMPORTABLE_SPECS)} only.")
        name = keystore_name or self.default_keystore
        keystore = self.keystores.get(name)
        if keystore is None:
            raise InvalidParameterError(f"DKMSInstanceId {name!r} is not a keystore.")
        level = self._protection_level(keystore, key_spec, protection_level)
        now = self.now()
        key = KeyRecord(
            key_id=new_key_id(), keystore=name, key_spec=key_spec,
            key_usage=usage, origin=origin, protection_level=level,
            description=description, creator=creator, creation_date=now,
            state=ENABLED, primary_version_id=None)
        if rotation_interval is not None:
            key = rotation.with_policy(key, rotation_interval)
        if origin == ORIGIN_EXTERNAL:
            key = dataclasses.replace(key, state=PENDING_IMPORT)
            await self._insert(key, None, tags)
            return key
        version = await self._new_version(key, keystore, now)
        key = dataclasses.replace(key, primary_version_id=version.version_id)
        await self._insert(key, version, tags)
        return key

    async def _insert(self, key: KeyRecord, version: KeyVersionRecord | None,
                      tags: dict[str, str]) -> None:
        try:
            await self.store.insert_key(key, version, tags)
        except LimitError as exc:
            raise LimitExceededError(str(exc)) from None

    @staticmethod
    def _protection_level(keystore: Keystore, key_spec: str,
                          requested: str | None) -> str:
        # The cloud defaults to SOFTWARE; a local agent exists for its HSM,
        # so the default is HSM wherever the keystore can do it.
        if requested is None:
            if keystore.supports_spec(key_spec, HSM):
                return HSM
            if not keystore.supports_spec(key_spec, SOFTWARE):
                raise UnsupportedOperationError(
                    f"KeySpec {key_spec} is not available in keystore "
                    f"{keystore.name}.")
            return SOFTWARE
        if requested not in (HSM, SOFTWARE):
            raise InvalidParameterError(
                f"ProtectionLevel {requested} is not valid; use HSM or SOFTWARE.")
        if not keystore.supports_spec(key_spec, requested):
            raise UnsupportedProtectionLevelError(
                f"ProtectionLevel {requested} is not available for {key_spec} "
                f"in keystore {keystore.name}.")
        return requested

    async def _new_version(self, key: KeyRecord, keystore: Keystore,
                           now: str) -> KeyVersionRecord:
        version_id = str(uuid.uuid4())
        generate = keystore.generate
        if key.key_spec in ASYMMETRIC_SPECS:
            generate = keystore.generate_key_pair
        elif key.key_spec in HMAC_KEY_BYTES:
            generate = keystore.generate_mac_key
        material = await generate(version_id, key.key_spec, key.protection_level)
        return KeyVersionRecord(
            version_id=version_id, key_id=key.key_id, creation_date=now,
            protection_level=key.protection_level,
            wrap_format=material.wrap_format, wrapped=material.wrapped,
            public_key=material.public_key)

    async def new_version(self, key: KeyRecord) -> KeyVersionRecord:
        """Generate the material of a new version of ``key``; store nothing."""
        return await self._new_version(key, self.keystore_of(key), self.now())

    async def change_key(self, key_ref: str,
                         mutate: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        """Apply ``mutate`` to the current record and store the result.

        ``mutate`` checks the state and raises for a forbidden change. On
        a lost compare-and-swap the key is reread and ``mutate`` runs again.
        """
        key_id = (await self.resolve(key_ref)).key_id
        async with self.write_locks.hold(key_id):
            for _ in range(_UPDATE_ATTEMPTS):
                key = await self.resolve(key_id)
                try:
                    stored = await self.store.update_key(mutate(key))
                except ConflictError:
                    continue
                if stored.state != key.state:
                    self._notify_state(stored.key_id)
                return stored
        raise contention_error(f"key {key_id}")

    async def set_enabled(self, key_ref: str, enabled: bool) -> KeyRecord:
        """EnableKey and DisableKey."""
        def mutate(key: KeyRecord) -> KeyRecord:
            states.require_state(key, states.TOGGLE)
            return dataclasses.replace(key, state=ENABLED if enabled else DISABLED)

        return await self.change_key(key_ref, mutate)

    async def update_description(self, key_ref: str, description: str) -> KeyRecord:
        """UpdateKeyDescription."""
        def mutate(key: KeyRecord) -> KeyRecord:
            states.require_state(key, states.EDIT)
            return dataclasses.replace(key, description=description)

        return await self.change_key(key_ref, mutate)

    async def schedule_deletion(self, key_ref: str, days: int) -> KeyRecord:
        """ScheduleKeyDeletion: PendingDeletion until now + ``days``."""
        delete_at = self.clock.now() + datetime.timedelta(days=days)

        def mutate(key: KeyRecord) -> KeyRecord:
            states.require_state(key, states.SCHEDULE)
            if key.deletion_protection:
                raise DeletionProtectedError(
                    f"The key {key.key_id} has deletion protection enabled.")
            return dataclasses.replace(
                key, state=PENDING_DELETION, delete_date=format_time(delete_at))

        return await self.change_key(key_ref, mutate)

    async def cancel_deletion(self, key_ref: str) -> KeyRecord:
        """CancelKeyDeletion: back to Enabled, or PendingImport without material."""
        def mutate(key: KeyRecord) -> KeyRecord:
            states.require_state(key, states.CANCEL)
            state = ENABLED if key.primary_version_id else PENDING_IMPORT
            return dataclasses.replace(key, state=state, delete_date=None)

        return await self.change_key(key_ref, mutate)

    async def set_deletion_protection(self, key_ref: str, enabled: bool,
                                      description: str) -> KeyRecord:
        """SetDeletionProtection; refused while the key is pending deletion."""
        def mutate(key: KeyRecord) -> KeyRecord:
            if key.state == PENDING_DELETION:
                raise KeyPendingDeletionError(
                    f"The key {key.key_id} is in state {key.state}.")
            return dataclasses.replace(
                key, deletion_protection=enabled,
                deletion_protection_description=description if enabled else "")

        return await self.change_key(key_ref, mutate)

    async def purge_due_keys(self) -> list[str]:
        """Delete every key whose deletion date has passed; return their ids.

        Safe to run on several agents at once: the store deletes a key
        only if it is still due, so exactly one run purges each key.
        """
        now = self.now()
        purged = []
        for key_id in await self.store.keys_due_for_deletion(now):
            if await self.store.purge_key(key_id, now):
                purged.append(key_id)
                self._notify_state(key_id)
        return purged

    def _notify_state(self, key_id: str) -> None:
        for listener in self.state_listeners:
            listener(key_id)

    async def unreadable_keystores(self) -> list[str]:
        """Return keystores that cannot unseal the material they stored.

        One symmetric key per keystore is tried. A keystore fails when its
        domain key is not the one that sealed the store's material, for
        example after ``domain_key_label`` changed or another token was
        configured. Keystores that failed to open are skipped.
        """
        unreadable = []
        for name, keystore in self.keystores.items():
            keys, _ = await self.store.list_keys(KeyFilter(
                keystore=(name,), key_spec=tuple(SYMMETRIC_KEY_BYTES)), 0, 1)
            if not keys or keys[0].primary_version_id is None:
                continue
            material = await self._material(keys[0], keys[0].primary_version_id)
            try:
                await keystore.encrypt(material, b"\0", b"")
            except DecryptionFailed:
                unreadable.append(name)
            except ServiceUnavailableError:
                continue
        return unreadable

    # --- cryptography ------------------------------------------------------

    async def _material(self, key: KeyRecord, version_id: str) -> KeyMaterial:
        if key.material_expire_time and key.material_expire_time <= self.now():
            # Expired imported material is unusable at once; the expiry
            # job in ``byok`` deletes it and moves the key to PendingImport.
            raise KeyPendingImportError(
                f"The key material of {key.key_id} expired at "
                f"{key.material_expire_time}; import it again.")
        version = await self.store.get_version(version_id)
        if version is None or version.key_id != key.key_id:
            raise InternalFailureError()
        return KeyMaterial(version.version_id, key.key_spec,
                           version.protection_level, version.wrap_format,
                           version.wrapped, version.public_key)

    async def material(self, key: KeyRecord, version_id: str) -> KeyMaterial:
        """Return the material of a version of ``key`` for a cryptographic use.

        Raises:
            KeyPendingImportError: the key's imported material expired.
            InternalFailureError: the version is not the key's.
        """
        return await self._material(key, version_id)

    async def encrypt(self, key_ref: str, plaintext: bytes,
                      context: dict[str, str] | None,
                      blob_format: int = FORMAT_PLAINTEXT) -> CryptoResult:
        """Encrypt under the key's primary version and return the blob."""
        if not 1 <= len(plaintext) <= MAX_PLAINTEXT_BYTES:
            raise InvalidParameterError(
                f"Plaintext is {len(plaintext)} bytes; it must be 1 to "
                f"{MAX_PLAINTEXT_BYTES} bytes.")
        aad_context = canonical_context(context)
        key = await self.require_encryption_key(key_ref)
        if key.primary_version_id is None:
            raise InternalFailureError()
        material = await self._material(key, key.primary_version_id)
        header = blob_header(material.version_id, blob_format)
        iv, sealed = await self.keystore_of(key).encrypt(
            material, plaintext, header + aad_context)
        return CryptoResult(key, material.version_id, blob=header + iv + sealed,
                            blob_format=blob_format)

    async def decrypt(self, blob_bytes: bytes,
                      context: dict[str, str] | None) -> CryptoResult:
        """Decrypt a blob with the key version it names.

        Raises:
            InvalidCiphertextError: for every failure to decrypt.
            KeyDisabledError and other state errors: the key is not usable.
        """
        aad_context = canonical_context(context)
        blob = parse_blob(blob_bytes)
        version = await self.store.get_version(blob.version_id)
        if version is None:
            raise _opaque_failure("unknown key version")
        key = await self.store.get_key(version.key_id)
        if key is None:
            raise _opaque_failure("key of the version is gone")
        if key.key_spec not in SYMMETRIC_KEY_BYTES:
            raise _opaque_failure("the version is not of a symmetric key")
        states.require_state(key, states.USE)
        material = await self._material(key, version.version_id)
        try:
            plaintext = await self.keystore_of(key).decrypt(
                material, blob.iv, blob.ciphertext, blob.header() + aad_context)
        except DecryptionFailed:
            raise _opaque_failure("authentication failed") from None
        return CryptoResult(key, version.version_id, plaintext=plaintext,
                            blob_format=blob.format)

    async def re_encrypt(self, blob_bytes: bytes, source_context: dict | None,
                         destination_ref: str,
                         destination_context: dict | None) -> CryptoResult:
        """Decrypt a blob and encrypt its plaintext under another key."""
        canonical_context(destination_context)
        await self.require_encryption_key(destination_ref)
        source = await self.decrypt(blob_bytes, source_context)
        return await self.encrypt(destination_ref, source.plaintext,
                                  destination_context, source.blob_format)

    async def require_encryption_key(self, key_ref: str) -> KeyRecord:
        """Check that ``key_ref`` names a key Encrypt accepts now; return it.

        ReEncrypt checks its destination so before it decrypts anything.

        Raises:
            KeyNotFoundError and the state errors: as Encrypt would.
            UnsupportedOperationError: the key is not symmetric.
        """
        key = await self.resolve(key_ref)
        states.require_state(key, states.USE)
        specs.require_symmetric(key, "Encrypt")
        return key

    async def generate_data_key(self, key_ref: str, number_of_bytes: int | None,
                                key_spec: str | None,
                                context: dict[str, str] | None) -> CryptoResult:
        """Make a random data key and return it with its encrypted blob.

        NumberOfBytes wins over KeySpec; with neither the key is 32 bytes.
        """
        if number_of_bytes is None:
            number_of_bytes = DATA_KEY_SPEC_BYTES.get(key_spec or "AES_256", 32)
        key = await self.resolve(key_ref)
        states.require_state(key, states.USE)
        specs.require_symmetric(key, "GenerateDataKey")
        data_key = await self.keystore_of(key).random_bytes(number_of_bytes)
        result = await self.encrypt(key.key_id, data_key, context, FORMAT_DATA_KEY)
        return dataclasses.replace(result, plaintext=data_key)
