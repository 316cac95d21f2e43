"""Key Service operations: one table entry per Alibaba Cloud KMS action.

Each handler gets validated parameters, calls ``KeyService`` (or the
alias and tag helpers) and shapes the reply with the API's field names.
Lists use the API's wrappers, such as ``Keys.Key[]`` and ``Aliases.Alias[]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.cache import data_keys
from agent.context import RequestContext
from agent.keys import aliases, rotation
from agent.keys.service import CryptoResult, KeyService, MAX_PLAINTEXT_BYTES
from agent.rpc.dispatch import CREATE, CRYPTO, READ, WRITE, Operation
from agent.rpc.params import (
    BOOL, BYTES, INT, LIST, MAP, PLAINTEXT, Param, parse_filters, string_map,
)
from agent.store.base import RESOURCE_KEY
from agent.store.records import KeyFilter, KeyRecord
from client.errors import InvalidParameterError, MissingParameterError

KEY_ID = Param("KeyId", required=True, low=1, high=512)
CONTEXT = Param("EncryptionContext", MAP)
PAGE_NUMBER = Param("PageNumber", INT, low=1, high=2**31)
PAGE_SIZE = Param("PageSize", INT, low=1, high=100)
KEY_SPECS = ("Aliyun_AES_256", "Aliyun_AES_192", "Aliyun_AES_128", "Aliyun_SM4",
             "RSA_2048", "RSA_3072", "RSA_4096", "EC_P256", "EC_P256K", "EC_SM2",
             "HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512", "HMAC_SM3")
MAX_FILTER_VALUES = 100
FILTER_FIELDS = {
    "KeyState": "key_state", "KeySpec": "key_spec", "KeyUsage": "key_usage",
    "ProtectionLevel": "protection_level", "CreatorType": "creator_type",
    "KeyId": "key_id", "keyId": "key_id", "AliasName": "alias_name",
    "TagKey": "tag_key", "TagValue": "tag_value", "DKMSInstanceId": "keystore",
}


def _keys(services: Any) -> KeyService:
    return services.keys


def _context(values: dict[str, Any], name: str = "EncryptionContext") -> dict | None:
    context = values.get(name)
    return None if context is None else string_map(name, context)


def _note(ctx: RequestContext, key: KeyRecord, version_id: str | None = None) -> None:
    ctx.key_id = key.key_id
    ctx.key_version_id = version_id


def key_metadata(service: KeyService, key: KeyRecord) -> dict[str, Any]:
    """Return the API's KeyMetadata map for a key."""
    metadata = {
        "KeyId": key.key_id, "Arn": service.arn(key), "KeySpec": key.key_spec,
        "KeyUsage": key.key_usage, "KeyState": key.state, "Origin": key.origin,
        "ProtectionLevel": key.protection_level, "Description": key.description,
        "Creator": key.creator, "CreationDate": key.creation_date,
        "PrimaryKeyVersion": key.primary_version_id or "",
        "AutomaticRotation": rotation.policy_status(key),
        "DeletionProtection": "Enabled" if key.deletion_protection else "Disabled",
        "DKMSInstanceId": key.keystore,
    }
    optional = {
        "DeleteDate": key.delete_date, "RotationInterval": key.rotation_interval,
        "LastRotationDate": key.last_rotation_date,
        "NextRotationDate": key.next_rotation_date,
        "MaterialExpireTime": key.material_expire_time,
    }
    metadata.update({name: value for name, value in optional.items() if value})
    if key.deletion_protection:
        metadata["DeletionProtectionDescription"] = key.deletion_protection_description
    return metadata


def tags_param(value: list[Any], key_name: str = "TagKey",
               value_name: str = "TagValue") -> dict[str, str]:
    """Convert ``[{"TagKey": k, "TagValue": v}, ...]`` to a map."""
    tags = {}
    for item in value:
        if (not isinstance(item, dict) or set(item) - {key_name, value_name}
                or not isinstance(item.get(key_name), str)
                or not isinstance(item.get(value_name, ""), str)):
            raise InvalidParameterError(
                f"Tags must be a list of {{{key_name!r}: string, {value_name!r}: "
                "string}} maps.")
        tags[item[key_name]] = item.get(value_name, "")
    return aliases.validate_tags(tags)


def _page(values: dict[str, Any]) -> tuple[int, int, int]:
    number = values.get("PageNumber", 1)
    size = values.get("PageSize", 10)
    return number, size, (number - 1) * size


def _crypto_reply(ctx: RequestContext, result: CryptoResult) -> dict[str, Any]:
    _note(ctx, result.key, result.version_id)
    return {"KeyId": result.key.key_id, "KeyVersionId": result.version_id}


# --- lifecycle ---------------------------------------------------------------


async def create_key(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    tags = tags_param(values.get("Tags", []))
    key = await service.create_key(
        key_spec=values.get("KeySpec", "Aliyun_AES_256"),
        key_usage=values.get("KeyUsage"),
        origin=values.get("Origin", "Aliyun_KMS"),
        protection_level=values.get("ProtectionLevel"),
        description=values.get("Description", ""), tags=tags,
        keystore_name=values.get("DKMSInstanceId"),
        creator=ctx.principal or str(ctx.peer.uid if ctx.peer.uid is not None
                                     else "local"),
        rotation_interval=rotation.requested_interval(values))
    _note(ctx, key, key.primary_version_id)
    return {"KeyMetadata": key_metadata(service, key)}


async def describe_key(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    key = await service.resolve(values["KeyId"])
    _note(ctx, key)
    return {"KeyMetadata": key_metadata(service, key)}


async def list_keys(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    number, size, offset = _page(values)
    where = _key_filter(values.get("Filters", []))
    # Access control limits the caller to the keystores it is bound to.
    keystores = ctx.keystore_scope(where.keystore)
    if keystores is None:
        return {"Keys": {"Key": []}, "PageNumber": number, "PageSize": size,
                "TotalCount": 0}
    keys, total = await service.store.list_keys(
        dataclasses.replace(where, keystore=keystores), offset, size)
    entries = [{"KeyId": k.key_id, "KeyArn": service.arn(k)} for k in keys]
    return {"Keys": {"Key": entries}, "PageNumber": number, "PageSize": size,
            "TotalCount": total}


def _key_filter(filters: list[Any]) -> KeyFilter:
    return KeyFilter(**parse_filters(filters, FILTER_FIELDS, MAX_FILTER_VALUES))


def _lifecycle(change):
    """Build a handler that applies ``change(service, key_ref, values)``."""
    async def handler(services: Any, ctx: RequestContext, values: dict) -> dict:
        key = await change(_keys(services), values["KeyId"], values)
        _note(ctx, key)
        return {}
    return handler


async def set_deletion_protection(services: Any, ctx: RequestContext,
                                  values: dict) -> dict:
    key = await _keys(services).set_deletion_protection(
        values["ProtectedResourceArn"], values["EnableDeletionProtection"],
        values.get("DeletionProtectionDescription", ""))
    _note(ctx, key)
    return {}


# --- cryptography ------------------------------------------------------------


async def encrypt(services: Any, ctx: RequestContext, values: dict) -> dict:
    result = await _keys(services).encrypt(
        values["KeyId"], values["Plaintext"], _context(values))
    return {**_crypto_reply(ctx, result), "CiphertextBlob": result.blob}


async def decrypt(services: Any, ctx: RequestContext, values: dict) -> dict:
    result = await _keys(services).decrypt(values["CiphertextBlob"], _context(values))
    return {**_crypto_reply(ctx, result), "Plaintext": result.plaintext}


# The parameters that name an asymmetric source ciphertext; all or none.
ASYMMETRIC_SOURCE = ("SourceKeyId", "SourceKeyVersionId", "SourceEncryptionAlgorithm")


async def re_encrypt(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    destination_context = _context(values, "DestinationEncryptionContext")
    if any(name in values for name in ASYMMETRIC_SOURCE):
        # Imported here: the asymmetric module builds on this one.
        from agent.keys.asymmetric import re_encrypt_from
        for name in ASYMMETRIC_SOURCE:
            if name not in values:
                raise MissingParameterError(
                    f"The parameter {name} is required with an asymmetric source "
                    f"ciphertext ({', '.join(ASYMMETRIC_SOURCE)}).")
        if "SourceEncryptionContext" in values:
            raise InvalidParameterError(
                "SourceEncryptionContext does not apply to asymmetric ciphertext.")
        result = await re_encrypt_from(
            service, values["SourceKeyId"], values["SourceKeyVersionId"],
            values["SourceEncryptionAlgorithm"], values["CiphertextBlob"],
            values["DestinationKeyId"], destination_context)
    else:
        result = await service.re_encrypt(
            values["CiphertextBlob"], _context(values, "SourceEncryptionContext"),
            values["DestinationKeyId"], destination_context)
    return {**_crypto_reply(ctx, result), "CiphertextBlob": result.blob}


def _data_key(with_plaintext: bool):
    async def handler(services: Any, ctx: RequestContext, values: dict) -> dict:
        result, cached = await data_keys.generate_for_request(
            services, values, _context(values))
        reply = {**_crypto_reply(ctx, result), "CiphertextBlob": result.blob}
        if cached is not None:
            reply["CachedDataKey"] = cached
        if with_plaintext:
            reply["Plaintext"] = result.plaintext
        return reply
    return handler


# --- aliases and tags --------------------------------------------------------


async def create_alias(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await aliases.create_alias(_keys(services), values["AliasName"],
                                     values["KeyId"])
    _note(ctx, key)
    return {}


async def update_alias(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await aliases.update_alias(_keys(services), values["AliasName"],
                                     values["KeyId"])
    _note(ctx, key)
    return {}


async def delete_alias(services: Any, ctx: RequestContext, values: dict) -> dict:
    await aliases.delete_alias(_keys(services), values["AliasName"])
    return {}


async def list_aliases(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    key_id = None
    if "KeyId" in values:
        key = await service.resolve(values["KeyId"])
        _note(ctx, key)
        key_id = key.key_id
    number, size, offset = _page(values)
    keystores = ctx.keystore_scope()
    found, total = [], 0
    if keystores is not None:
        found, total = await service.store.list_aliases(key_id, offset, size,
                                                        keystores)
    entries = []
    for alias in found:
        key = await service.store.get_key(alias.key_id)
        keystore = key.keystore if key else service.default_keystore
        entries.append({
            "AliasName": alias.alias_name, "KeyId": alias.key_id,
            "AliasArn": f"acs:kms:{service.region}:{keystore}:{alias.alias_name}",
        })
    return {"Aliases": {"Alias": entries}, "PageNumber": number, "PageSize": size,
            "TotalCount": total}


async def list_resource_tags(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _keys(services)
    key = await service.resolve(values["KeyId"])
    _note(ctx, key)
    tags = await service.store.get_tags(RESOURCE_KEY, key.key_id)
    entries = [{"KeyId": key.key_id, "TagKey": k, "TagValue": v}
               for k, v in tags.items()]
    return {"Tags": {"Tag": entries}}


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


OPERATIONS = [
    _op("CreateKey", create_key, CREATE,
        Param("KeySpec", choices=KEY_SPECS), Param("KeyUsage", high=32),
        Param("Origin", high=32),
        Param("ProtectionLevel"), Param("Description", high=8192),
        Param("Tags", LIST, high=20), Param("DKMSInstanceId", high=64),
        Param("EnableAutomaticRotation", BOOL), Param("RotationInterval", high=32)),
    _op("DescribeKey", describe_key, READ, KEY_ID),
    _op("ListKeys", list_keys, READ, PAGE_NUMBER, PAGE_SIZE, Param("Filters", LIST)),
    _op("EnableKey", _lifecycle(lambda s, k, v: s.set_enabled(k, True)), WRITE,
        KEY_ID),
    _op("DisableKey", _lifecycle(lambda s, k, v: s.set_enabled(k, False)), WRITE,
        KEY_ID),
    _op("UpdateKeyDescription",
        _lifecycle(lambda s, k, v: s.update_description(k, v["Description"])), WRITE,
        KEY_ID, Param("Description", required=True, high=8192)),
    _op("ScheduleKeyDeletion",
        _lifecycle(lambda s, k, v: s.schedule_deletion(k, v["PendingWindowInDays"])),
        WRITE, KEY_ID, Param("PendingWindowInDays", INT, required=True, low=7, high=366)),
    _op("CancelKeyDeletion", _lifecycle(lambda s, k, v: s.cancel_deletion(k)), WRITE,
        KEY_ID),
    _op("SetDeletionProtection", set_deletion_protection, WRITE,
        Param("ProtectedResourceArn", required=True, low=1, high=512),
        Param("EnableDeletionProtection", BOOL, required=True),
        Param("DeletionProtectionDescription", high=8192)),
    _op("Encrypt", encrypt, CRYPTO, KEY_ID,
        Param("Plaintext", PLAINTEXT, required=True, high=MAX_PLAINTEXT_BYTES), CONTEXT),
    _op("Decrypt", decrypt, CRYPTO,
        Param("CiphertextBlob", BYTES, required=True, high=65536), CONTEXT),
    _op("ReEncrypt", re_encrypt, CRYPTO,
        Param("CiphertextBlob", BYTES, required=True, high=65536),
        Param("DestinationKeyId", required=True, low=1, high=512),
        Param("SourceEncryptionContext", MAP),
        Param("DestinationEncryptionContext", MAP),
        Param("SourceKeyId", low=1, high=512), Param("SourceKeyVersionId", low=1, high=128),
        Param("SourceEncryptionAlgorithm", low=1, high=64)),
    _op("GenerateDataKey", _data_key(True), CRYPTO, KEY_ID,
        Param("KeySpec", choices=("AES_256", "AES_128")),
        Param("NumberOfBytes", INT, low=1, high=1024), CONTEXT,
        # Agent-specific: reuse a cached data key (see agent.cache.data_keys).
        Param("AllowCachedDataKey", BOOL), Param("DataKeyUsageBytes", INT, low=0,
                                                 high=2**50)),
    _op("GenerateDataKeyWithoutPlaintext", _data_key(False), CRYPTO, KEY_ID,
        Param("KeySpec", choices=("AES_256", "AES_128")),
        Param("NumberOfBytes", INT, low=1, high=1024), CONTEXT),
    _op("CreateAlias", create_alias, WRITE,
        Param("AliasName", required=True), KEY_ID),
    _op("UpdateAlias", update_alias, WRITE, Param("AliasName", required=True), KEY_ID),
    _op("DeleteAlias", delete_alias, WRITE, Param("AliasName", required=True)),
    _op("ListAliases", list_aliases, READ, PAGE_NUMBER, PAGE_SIZE),
    _op("ListAliasesByKeyId", list_aliases, READ, KEY_ID, PAGE_NUMBER, PAGE_SIZE),
    _op("ListResourceTags", list_resource_tags, READ, KEY_ID),
]
