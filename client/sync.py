"""The blocking client, and the typed operation wrappers both clients share.

``KmsClient`` talks to the agent over its Unix socket with one request in
flight at a time. It connects on first use, redoes the handshake after a
broken connection, and serializes calls from many threads with a lock.
``KmsOperations`` contains the snake_case wrappers (``encrypt``,
``create_key`` ...). They only build the PascalCase params map and return
whatever ``call`` returns: the result map here, an awaitable of it in
``client.aio``. The protocol itself lives in ``client.wire``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from client.certificates import CertificateOperations
from client.client_key import ClientKey, resolve_client_key
from client.errors import (
    InternalFailureError,
    InvalidParameterError,
    KmsError,
    ReadTimeoutError,
    ServerUnreachableError,
    error_from_wire,
)
from client.retry import RetryPolicy, as_policy, call_with_retries, mark_not_sent
from client.wire import (
    CLOSED,
    DEFAULT_SOCKET_PATH,
    NEED_DATA,
    SOCKET_ENV,
    Challenge,
    Connection,
    Event,
    Hello,
    Proof,
    ProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

# Replies may be larger than the requests the agent accepts (a page of key
# metadata, say), so the clients accept reply frames up to this size.
MAX_REPLY_FRAME_SIZE = 16 * 1024 * 1024

_RECEIVE_SIZE = 65536

ResultT = TypeVar("ResultT")


def resolve_socket_path(socket_path: str | os.PathLike[str] | None = None) -> str:
    """Return ``socket_path``, else ``$KMS_AGENT_SOCKET``, else the default."""
    if socket_path is not None:
        return os.fspath(socket_path)
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET_PATH


def _present(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def _as_bytes(name: str, value: str | bytes) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    kind = type(value).__name__
    raise InvalidParameterError(f"{name} must be str or bytes, not {kind}.")


def _tag_list(tags: Mapping[str, str] | list[dict[str, str]] | None) -> Any:
    # The API takes tags as [{"TagKey", "TagValue"}]; a mapping is a shorthand.
    if isinstance(tags, Mapping):
        return [{"TagKey": key, "TagValue": value} for key, value in tags.items()]
    return tags


class KmsOperations(CertificateOperations[ResultT], Generic[ResultT]):
    """Typed wrappers over ``call`` with the API's parameters in snake_case.

    Arguments left as None are not sent, so the agent applies the API's
    default. Each wrapper returns what ``call`` returns and raises what it
    raises. ``plaintext`` may be str (sent as UTF-8) or bytes. The
    certificate wrappers come from ``client.certificates``.
    """

    def call(self, operation: str, **params: Any) -> ResultT:
        raise NotImplementedError

    def create_key(self, *, key_spec: str | None = None, key_usage: str | None = None,
                   origin: str | None = None, protection_level: str | None = None,
                   description: str | None = None,
                   enable_automatic_rotation: bool | None = None,
                   rotation_interval: str | None = None,
                   tags: Mapping[str, str] | list[dict[str, str]] | None = None
                   ) -> ResultT:
        """Create a key. The result contains ``KeyMetadata``."""
        return self.call("CreateKey", **_present(
            KeySpec=key_spec, KeyUsage=key_usage, Origin=origin,
            ProtectionLevel=protection_level, Description=description,
            EnableAutomaticRotation=enable_automatic_rotation,
            RotationInterval=rotation_interval, Tags=_tag_list(tags),
        ))

    def describe_key(self, key_id: str) -> ResultT:
        """Describe a key by id, alias or ARN; the result contains ``KeyMetadata``."""
        return self.call("DescribeKey", KeyId=key_id)

    def list_keys(self, *, page_number: int | None = None, page_size: int | None = None,
                  filters: list[dict[str, Any]] | None = None) -> ResultT:
        """List keys, one page at a time, optionally filtered."""
        return self.call("ListKeys", **_present(
            PageNumber=page_number, PageSize=page_size, Filters=filters,
        ))

    def enable_key(self, key_id: str) -> ResultT:
        """Enable a key."""
        return self.call("EnableKey", KeyId=key_id)

    def disable_key(self, key_id: str) -> ResultT:
        """Disable a key, so that it can no longer encrypt or decrypt."""
        return self.call("DisableKey", KeyId=key_id)

    def schedule_key_deletion(self, key_id: str,
                              pending_window_in_days: int) -> ResultT:
        """Schedule a key for deletion after the given number of days."""
        return self.call("ScheduleKeyDeletion", KeyId=key_id,
                         PendingWindowInDays=pending_window_in_days)

    def cancel_key_deletion(self, key_id: str) -> ResultT:
        """Cancel a scheduled deletion; the key becomes Enabled."""
        return self.call("CancelKeyDeletion", KeyId=key_id)

    def encrypt(self, key_id: str, plaintext: str | bytes,
                encryption_context: Mapping[str, str] | None = None) -> ResultT:
        """Encrypt ``plaintext`` under a key; the result contains ``CiphertextBlob``."""
        return self.call("Encrypt", **_present(
            KeyId=key_id, Plaintext=_as_bytes("plaintext", plaintext),
            EncryptionContext=encryption_context,
        ))

    def decrypt(self, ciphertext_blob: bytes,
                encryption_context: Mapping[str, str] | None = None) -> ResultT:
        """Decrypt a blob under the key named in it, returning ``Plaintext``."""
        return self.call("Decrypt", **_present(
            CiphertextBlob=ciphertext_blob, EncryptionContext=encryption_context,
        ))

    def re_encrypt(self, ciphertext_blob: bytes, destination_key_id: str, *,
                   source_encryption_context: Mapping[str, str] | None = None,
                   destination_encryption_context: Mapping[str, str] | None = None
                   ) -> ResultT:
        """Decrypt a blob and encrypt its plaintext under another key, in the agent."""
        return self.call("ReEncrypt", **_present(
            CiphertextBlob=ciphertext_blob, DestinationKeyId=destination_key_id,
            SourceEncryptionContext=source_encryption_context,
            DestinationEncryptionContext=destination_encryption_context,
        ))

    def generate_data_key(self, key_id: str, number_of_bytes: int | None = None,
                          key_spec: str | None = None,
                          encryption_context: Mapping[str, str] | None = None
                          ) -> ResultT:
        """Generate a data key, returned as ``Plaintext`` and ``CiphertextBlob``."""
        return self.call("GenerateDataKey", **_present(
            KeyId=key_id, NumberOfBytes=number_of_bytes, KeySpec=key_spec,
            EncryptionContext=encryption_context,
        ))

    def generate_data_key_without_plaintext(
        self, key_id: str, number_of_bytes: int | None = None,
        key_spec: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> ResultT:
        """Generate a data key and return only its ``CiphertextBlob``."""
        return self.call("GenerateDataKeyWithoutPlaintext", **_present(
            KeyId=key_id, NumberOfBytes=number_of_bytes, KeySpec=key_spec,
            EncryptionContext=encryption_context,
        ))

    def create_alias(self, alias_name: str, key_id: str) -> ResultT:
        """Create the alias ``alias_name`` (``alias/...``) for a key."""
        return self.call("CreateAlias", AliasName=alias_name, KeyId=key_id)

    def update_alias(self, alias_name: str, key_id: str) -> ResultT:
        """Point an existing alias at another key."""
        return self.call("UpdateAlias", AliasName=alias_name, KeyId=key_id)

    def delete_alias(self, alias_name: str) -> ResultT:
        """Delete an alias; the key is not affected."""
        return self.call("DeleteAlias", AliasName=alias_name)

    def list_aliases(self, *, page_number: int | None = None,
                     page_size: int | None = None) -> ResultT:
        """List aliases, one page at a time."""
        return self.call("ListAliases", **_present(
            PageNumber=page_number, PageSize=page_size,
        ))

    def tag_resource(self, key_id: str,
                     tags: Mapping[str, str] | list[dict[str, str]]) -> ResultT:
        """Add or replace tags on a key; a mapping is taken as key to value."""
        return self.call("TagResource", KeyId=key_id, Tags=_tag_list(tags))

    def untag_resource(self, key_id: str, tag_keys: list[str]) -> ResultT:
        """Remove the tags with the given keys from a key."""
        return self.call("UntagResource", KeyId=key_id, TagKeys=list(tag_keys))

    def list_resource_tags(self, key_id: str) -> ResultT:
        """List the tags of a key."""
        return self.call("ListResourceTags", KeyId=key_id)

    def create_secret(self, secret_name: str, secret_data: str | bytes,
                      version_id: str, *, secret_data_type: str | None = None,
                      encryption_key_id: str | None = None,
                      description: str | None = None,
                      tags: Mapping[str, str] | list[dict[str, str]] | None = None,
                      enable_automatic_rotation: bool | None = None,
                      rotation_interval: str | None = None) -> ResultT:
        """Create a secret whose first version takes ACSCurrent.

        ``secret_data_type`` is ``text`` (the default) or ``binary``; a
        binary value is sent as bytes.
        """
        return self.call("CreateSecret", **_present(
            SecretName=secret_name, SecretData=secret_data, VersionId=version_id,
            SecretDataType=secret_data_type, EncryptionKeyId=encryption_key_id,
            Description=description, Tags=_tag_list(tags),
            EnableAutomaticRotation=enable_automatic_rotation,
            RotationInterval=rotation_interval,
        ))

    def get_secret_value(self, secret_name: str, *, version_id: str | None = None,
                         version_stage: str | None = None) -> ResultT:
        """Read a secret's value, by default the ACSCurrent version.

        The result contains ``SecretData`` (str for text, bytes for
        binary), and ``Stale`` with ``StaleAgeSeconds`` when the agent
        served a cached value because its store or keystore failed.
        """
        return self.call("GetSecretValue", **_present(
            SecretName=secret_name, VersionId=version_id, VersionStage=version_stage,
        ))

    def batch_get_secret_value(self, secrets: list[str | dict[str, str]]) -> ResultT:
        """Read up to 20 secrets; names or ``{"SecretName", ...}`` maps.

        The result contains ``SecretValues`` and a per-secret ``Errors`` list.
        """
        entries = [{"SecretName": entry} if isinstance(entry, str) else entry
                   for entry in secrets]
        return self.call("BatchGetSecretValue", SecretsList=entries)

    def put_secret_value(self, secret_name: str, secret_data: str | bytes,
                         version_id: str, *, secret_data_type: str | None = None,
                         version_stages: list[str] | None = None) -> ResultT:
        """Add a version; by default it takes ACSCurrent.

        Repeating a put with the same ``version_id`` and data succeeds.
        """
        return self.call("PutSecretValue", **_present(
            SecretName=secret_name, SecretData=secret_data, VersionId=version_id,
            SecretDataType=secret_data_type, VersionStages=version_stages,
        ))

    def update_secret(self, secret_name: str, *,
                      description: str | None = None) -> ResultT:
        """Change a secret's description."""
        return self.call("UpdateSecret", **_present(
            SecretName=secret_name, Description=description,
        ))

    def update_secret_version_stage(self, secret_name: str, version_stage: str, *,
                                    remove_from_version: str | None = None,
                                    move_to_version: str | None = None) -> ResultT:
        """Move a stage to a version, or remove it from one."""
        return self.call("UpdateSecretVersionStage", **_present(
            SecretName=secret_name, VersionStage=version_stage,
            RemoveFromVersion=remove_from_version, MoveToVersion=move_to_version,
        ))

    def describe_secret(self, secret_name: str, *,
                        fetch_tags: bool | None = None) -> ResultT:
        """Return a secret's metadata, never its value."""
        return self.call("DescribeSecret", **_present(
            SecretName=secret_name, FetchTags=fetch_tags,
        ))

    def list_secrets(self, *, page_number: int | None = None,
                     page_size: int | None = None, fetch_tags: bool | None = None,
                     filters: list[dict[str, Any]] | None = None) -> ResultT:
        """List secrets, one page at a time, optionally filtered."""
        return self.call("ListSecrets", **_present(
            PageNumber=page_number, PageSize=page_size, FetchTags=fetch_tags,
            Filters=filters,
        ))

    def list_secret_version_ids(self, secret_name: str, *,
                                include_deprecated: bool | None = None,
                                page_number: int | None = None,
                                page_size: int | None = None) -> ResultT:
        """List a secret's versions with their stages."""
        return self.call("ListSecretVersionIds", **_present(
            SecretName=secret_name, IncludeDeprecated=include_deprecated,
            PageNumber=page_number, PageSize=page_size,
        ))

    def delete_secret(self, secret_name: str, *,
                      recovery_window_in_days: int | None = None,
                      force_delete_without_recovery: bool | None = None) -> ResultT:
        """Schedule deletion after 7 to 30 days (default 30), or delete now."""
        return self.call("DeleteSecret", **_present(
            SecretName=secret_name, RecoveryWindowInDays=recovery_window_in_days,
            ForceDeleteWithoutRecovery=force_delete_without_recovery,
        ))

    def restore_secret(self, secret_name: str) -> ResultT:
        """Cancel a scheduled deletion; the secret is as it was."""
        return self.call("RestoreSecret", SecretName=secret_name)

    def update_secret_rotation_policy(self, secret_name: str,
                                      enable_automatic_rotation: bool,
                                      rotation_interval: str | None = None) -> ResultT:
        """Turn automatic rotation on or off; the interval is like ``7d``."""
        return self.call("UpdateSecretRotationPolicy", **_present(
            SecretName=secret_name, EnableAutomaticRotation=enable_automatic_rotation,
            RotationInterval=rotation_interval,
        ))

    def rotate_secret(self, secret_name: str, version_id: str) -> ResultT:
        """Rotate now with the agent's configured rotator for this secret."""
        return self.call("RotateSecret", SecretName=secret_name, VersionId=version_id)

    def wait_secret_change(self, secret_name: str, version_id: str | None = None,
                           timeout_seconds: int | None = None) -> ResultT:
        """Wait until ACSCurrent is no longer ``version_id`` (agent-specific).

        The result has ``VersionId`` and ``Changed``. The agent waits up
        to ``timeout_seconds`` (1 to 300, default 60), so the client's own
        reply timeout must be longer.
        """
        return self.call("WaitSecretChange", **_present(
            SecretName=secret_name, VersionId=version_id,
            TimeoutSeconds=timeout_seconds,
        ))

    def describe_agent_cache(self) -> ResultT:
        """Return the agent's cache statistics (agent-specific)."""
        return self.call("DescribeAgentCache")

    def create_key_version(self, key_id: str) -> ResultT:
        """Add a version to a key and make it primary; returns ``KeyVersion``."""
        return self.call("CreateKeyVersion", KeyId=key_id)

    def describe_key_version(self, key_id: str, key_version_id: str) -> ResultT:
        """Describe one version of a key; the result contains ``KeyVersion``."""
        return self.call("DescribeKeyVersion", KeyId=key_id,
                         KeyVersionId=key_version_id)

    def list_key_versions(self, key_id: str, *, page_number: int | None = None,
                          page_size: int | None = None) -> ResultT:
        """List the versions of a key, oldest first, one page at a time."""
        return self.call("ListKeyVersions", **_present(
            KeyId=key_id, PageNumber=page_number, PageSize=page_size,
        ))

    def update_rotation_policy(self, key_id: str, enable_automatic_rotation: bool,
                               rotation_interval: str | None = None) -> ResultT:
        """Turn automatic rotation on or off.

        ``rotation_interval`` is 7 to 730 days written as ``30d``, ``720h``,
        ``43200m`` or ``2592000s``; it is required to turn rotation on.
        """
        return self.call("UpdateRotationPolicy", **_present(
            KeyId=key_id, EnableAutomaticRotation=enable_automatic_rotation,
            RotationInterval=rotation_interval,
        ))

    def generate_random(self, length: int,
                        dkms_instance_id: str | None = None) -> ResultT:
        """Return 1 to 1024 random bytes as ``Random``.

        The bytes come from the generator of a keystore, the HSM for a
        PKCS#11 one: ``dkms_instance_id`` names it, else the default.
        """
        return self.call("GenerateRandom", **_present(
            Length=length, DKMSInstanceId=dkms_instance_id,
        ))

    def get_random_password(
        self, *, password_length: int | None = None,
        exclude_characters: str | None = None, exclude_lowercase: bool | None = None,
        exclude_uppercase: bool | None = None, exclude_numbers: bool | None = None,
        exclude_punctuation: bool | None = None,
        require_each_included_type: bool | None = None,
    ) -> ResultT:
        """Generate a password of 8 to 128 characters as ``RandomPassword``."""
        return self.call("GetRandomPassword", **_present(
            PasswordLength=password_length, ExcludeCharacters=exclude_characters,
            ExcludeLowercase=exclude_lowercase, ExcludeUppercase=exclude_uppercase,
            ExcludeNumbers=exclude_numbers, ExcludePunctuation=exclude_punctuation,
            RequireEachIncludedType=require_each_included_type,
        ))

    def get_public_key(self, key_id: str, key_version_id: str) -> ResultT:
        """Return a version's public key as ``PublicKey`` (PEM text)."""
        return self.call("GetPublicKey", KeyId=key_id, KeyVersionId=key_version_id)

    def asymmetric_sign(self, key_id: str, key_version_id: str, algorithm: str,
                        digest: bytes) -> ResultT:
        """Sign a precomputed 32-byte digest; the signature is ``Value``.

        For SM2DSA the digest is SM3(Z_A || M), with Z_A computed from the
        public key and the ID ``1234567812345678``.
        """
        return self.call("AsymmetricSign", KeyId=key_id,
                         KeyVersionId=key_version_id, Algorithm=algorithm,
                         Digest=_as_bytes("digest", digest))

    def asymmetric_verify(self, key_id: str, key_version_id: str, algorithm: str,
                          digest: bytes, value: bytes) -> ResultT:
        """Check a signature; ``Value`` in the result is True or False."""
        return self.call("AsymmetricVerify", KeyId=key_id,
                         KeyVersionId=key_version_id, Algorithm=algorithm,
                         Digest=_as_bytes("digest", digest),
                         Value=_as_bytes("value", value))

    def asymmetric_encrypt(self, key_id: str, key_version_id: str, algorithm: str,
                           plaintext: str | bytes) -> ResultT:
        """Encrypt with a version's public key; the result has ``CiphertextBlob``."""
        return self.call("AsymmetricEncrypt", KeyId=key_id,
                         KeyVersionId=key_version_id, Algorithm=algorithm,
                         Plaintext=_as_bytes("plaintext", plaintext))

    def asymmetric_decrypt(self, key_id: str, key_version_id: str, algorithm: str,
                           ciphertext_blob: bytes) -> ResultT:
        """Decrypt with a version's private key; the result has ``Plaintext``."""
        return self.call("AsymmetricDecrypt", KeyId=key_id,
                         KeyVersionId=key_version_id, Algorithm=algorithm,
                         CiphertextBlob=_as_bytes("ciphertext_blob", ciphertext_blob))

    def generate_mac(self, key_id: str, algorithm: str,
                     message: str | bytes) -> ResultT:
        """Compute the HMAC of ``message`` (at most 4 KiB) as ``Mac``."""
        return self.call("GenerateMac", KeyId=key_id, Algorithm=algorithm,
                         Message=_as_bytes("message", message))

    def verify_mac(self, key_id: str, algorithm: str, message: str | bytes,
                   mac: bytes) -> ResultT:
        """Check an HMAC; ``Value`` in the result is True or False."""
        return self.call("VerifyMac", KeyId=key_id, Algorithm=algorithm,
                         Message=_as_bytes("message", message),
                         Mac=_as_bytes("mac", mac))

    def get_parameters_for_import(self, key_id: str, wrapping_algorithm: str,
                                  wrapping_key_spec: str = "RSA_2048") -> ResultT:
        """Return ``PublicKey`` (DER), ``ImportToken`` and ``TokenExpireTime``."""
        return self.call("GetParametersForImport", KeyId=key_id,
                         WrappingAlgorithm=wrapping_algorithm,
                         WrappingKeySpec=wrapping_key_spec)

    def import_key_material(self, key_id: str, encrypted_key_material: bytes,
                            import_token: str,
                            key_material_expire_unix: int | None = None) -> ResultT:
        """Import wrapped key material into an EXTERNAL key (0 = never expires)."""
        return self.call("ImportKeyMaterial", **_present(
            KeyId=key_id, ImportToken=import_token,
            EncryptedKeyMaterial=_as_bytes("encrypted_key_material",
                                           encrypted_key_material),
            KeyMaterialExpireUnix=key_material_expire_unix,
        ))

    def delete_key_material(self, key_id: str) -> ResultT:
        """Delete an EXTERNAL key's material; the key returns to PendingImport."""
        return self.call("DeleteKeyMaterial", KeyId=key_id)

    def generate_and_export_data_key(
        self, key_id: str, public_key_blob: bytes, wrapping_algorithm: str,
        wrapping_key_spec: str, *, key_spec: str | None = None,
        number_of_bytes: int | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> ResultT:
        """Make a data key; return its ``CiphertextBlob`` and ``ExportedDataKey``."""
        return self.call("GenerateAndExportDataKey", **_present(
            KeyId=key_id, PublicKeyBlob=_as_bytes("public_key_blob", public_key_blob),
            WrappingAlgorithm=wrapping_algorithm, WrappingKeySpec=wrapping_key_spec,
            KeySpec=key_spec, NumberOfBytes=number_of_bytes,
            EncryptionContext=encryption_context,
        ))

    def export_data_key(
        self, ciphertext_blob: bytes, public_key_blob: bytes, wrapping_algorithm: str,
        wrapping_key_spec: str,
        encryption_context: Mapping[str, str] | None = None,
    ) -> ResultT:
        """Re-encrypt a data key blob's key to a public key as ``ExportedDataKey``."""
        return self.call("ExportDataKey", **_present(
            CiphertextBlob=_as_bytes("ciphertext_blob", ciphertext_blob),
            PublicKeyBlob=_as_bytes("public_key_blob", public_key_blob),
            WrappingAlgorithm=wrapping_algorithm, WrappingKeySpec=wrapping_key_spec,
            EncryptionContext=encryption_context,
        ))


class KmsClient(KmsOperations[dict[str, Any]]):
    """A blocking, thread-safe client of the agent.

    Args:
        socket_path: the agent's socket; defaults to ``$KMS_AGENT_SOCKET``,
            then ``/run/kms-agent/agent.sock``.
        timeout: seconds to wait for each reply. It is also sent to the
            agent as the request's ``timeout_ms``.
        connect_timeout: seconds allowed for connecting and the handshake.
        client_key: a ``ClientKey`` or the path of a client key file to
            prove at handshake; defaults to ``$KMS_AGENT_CLIENT_KEY``, and
            without either the agent knows the caller by its uid alone.
        retries: how many times a failed call is sent again, or a
            ``client.retry.RetryPolicy``; the default 0 turns retrying
            off. Which errors are retried depends on the operation (see
            ``client.retry``); by default no retry starts after
            ``timeout`` seconds.
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *,
                 timeout: float = 30.0, connect_timeout: float = 5.0,
                 client_key: ClientKey | str | os.PathLike[str] | None = None,
                 retries: int | RetryPolicy = 0):
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_key = resolve_client_key(client_key)
        self.retry_policy = as_policy(retries)
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._connection: Connection | None = None
        self._peer_closed = False
        self._owner_pid = 0
        self._last_request_id = 0

    def __repr__(self) -> str:
        return f"KmsClient(socket_path={self.socket_path!r})"

    def __enter__(self) -> KmsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        with self._lock:
            self._disconnect()

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` with PascalCase ``params`` and return the result map.

        Raises:
            KmsError: the typed error the agent returned, such as
                ``KeyNotFoundError``, with ``code``, ``http_status`` and
                ``request_id``.
            ServerUnreachableError: the socket cannot be reached or the
                connection broke before the reply.
            ReadTimeoutError: no reply came within ``timeout`` seconds.
        Each is the error of the last attempt when retries are on.
        """
        if not isinstance(operation, str) or not operation:
            raise InvalidParameterError("The operation name must be a non-empty str.")
        return call_with_retries(self.retry_policy, operation,
                                 lambda: self._call_once(operation, params),
                                 self.timeout)

    def _call_once(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            response = self._call_locked(operation, params)
        if response.error is not None:
            raise error_from_wire(response.error)
        return response.result  # type: ignore[return-value]

    def _call_locked(self, operation: str, params: dict[str, Any]) -> Response:
        self._last_request_id += 1
        request = Request(self._last_request_id, operation, params,
                          timeout_ms=int(self.timeout * 1000))
        try:
            self._deliver(request)
        except KmsError as error:
            # A failed connect, handshake or write leaves the agent without
            # a whole request frame, so it did not run the request.
            mark_not_sent(error)
            raise
        return self._receive_reply(request.id, time.monotonic() + self.timeout)

    def _deliver(self, request: Request) -> None:
        is_new = self._connect_if_needed()
        try:
            self._send(request)
        except ServerUnreachableError:
            if is_new:
                raise
            # The agent may have closed an idle connection. A write to a
            # closed Unix socket fails before the peer can read a whole
            # frame, so the request was not run and one retry is safe.
            self._connect_if_needed()
            self._send(request)

    # --- connection -----------------------------------------------------------

    def _connect_if_needed(self) -> bool:
        # Return True when a new connection was opened.
        if self._socket is not None and self._owner_pid == os.getpid():
            return False
        self._disconnect()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise ServerUnreachableError(
                f"Cannot connect to the agent socket {self.socket_path}: "
                f"{exc.strerror or exc}. Check that kms-agent is running and "
                f"that {SOCKET_ENV} names its socket."
            ) from exc
        self._socket = sock
        self._connection = Connection(Role.CLIENT, max_frame_size=MAX_REPLY_FRAME_SIZE)
        self._peer_closed = False
        self._owner_pid = os.getpid()
        self._handshake()
        return True

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        key = self.client_key
        hello = Hello(client_key_id=key.client_key_id if key else None)
        self._write(self._connection.send(hello), self.connect_timeout)
        event = self._read_event(deadline, self.connect_timeout)
        if type(event) is Challenge and key is not None:
            proof = Proof(key.sign_challenge(event.nonce))
            self._write(self._connection.send(proof), self.connect_timeout)
            event = self._read_event(deadline, self.connect_timeout)
        if type(event) is not Welcome:
            self._disconnect()
            message = "The agent replied to the hello without a welcome."
            raise InternalFailureError(message)

    def _disconnect(self) -> None:
        # A socket inherited across fork() is closed in the child only;
        # the parent's connection stays open.
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._connection = None

    # --- requests and replies -------------------------------------------------

    def _send(self, request: Request) -> None:
        self._write(self._connection.send(request), self.timeout)

    def _write(self, data: bytes, timeout: float) -> None:
        self._socket.settimeout(timeout)
        try:
            self._socket.sendall(data)
        except TimeoutError as exc:
            self._disconnect()
            raise ReadTimeoutError(
                f"The agent did not accept the request within {timeout} seconds."
            ) from exc
        except OSError as exc:
            self._disconnect()
            raise ServerUnreachableError(
                f"The connection to the agent broke: {exc.strerror or exc}."
            ) from exc

    def _receive_reply(self, request_id: int, deadline: float) -> Response:
        while True:
            event = self._read_event(deadline, self.timeout)
            if type(event) is Response and event.id in (request_id, 0):
                return event
            if type(event) is ProtocolError and event.request_id in (request_id, 0):
                raise event.error
            # Anything else belongs to no request of this client; skip it.

    def _read_event(self, deadline: float, timeout: float) -> Event:
        # Return the next event, reading as needed. A stream that ended or
        # failed closes the connection and raises.
        connection = self._connection
        while True:
            event = connection.next_event()
            if event is NEED_DATA:
                connection.receive_data(self._receive(deadline, timeout))
                continue
            if event is CLOSED:
                self._disconnect()
                raise ServerUnreachableError("The agent closed the connection.")
            if type(event) is ProtocolError and event.fatal:
                self._disconnect()
                if self._peer_closed:
                    raise ServerUnreachableError(
                        "The agent closed the connection in the middle of a frame."
                    ) from event.error
                raise event.error
            return event

    def _receive(self, deadline: float, timeout: float) -> bytes:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self._socket.settimeout(remaining)
            data = self._socket.recv(_RECEIVE_SIZE)
        except TimeoutError as exc:
            # The agent may be stuck on this connection, so the next call
            # starts on a new one, where no late reply can arrive.
            self._disconnect()
            raise ReadTimeoutError(
                f"The agent did not reply within {timeout} seconds."
            ) from exc
        except OSError as exc:
            self._disconnect()
            raise ServerUnreachableError(
                f"The connection to the agent broke: {exc.strerror or exc}."
            ) from exc
        if not data:
            self._peer_closed = True
        return data
