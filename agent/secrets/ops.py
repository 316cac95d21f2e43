"""Secrets Manager operations: one table entry per action.

Handlers shape replies with the API's field names and wrappers
(``SecretList.Secret[]``, ``VersionIds.VersionId[]``,
``VersionStages.VersionStage[]``). A text value travels as a string and
a binary value as bytes. Agent-specific additions: ``Stale`` and
``StaleAgeSeconds`` on a value served from the cache while the store or
keystore fails, ``LastRotationError`` in DescribeSecret, and the long
poll WaitSecretChange. Errors name secrets and versions, never values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.context import RequestContext
from agent.keys.ops import MAX_FILTER_VALUES, PAGE_NUMBER, PAGE_SIZE, tags_param
from agent.quotas import caller_of
from agent.rpc.dispatch import CREATE, READ, WRITE, Operation
from agent.rpc.params import BOOL, INT, LIST, PLAINTEXT, Param, parse_filters
from agent.secrets import lifecycle, validate
from agent.secrets.service import SecretService, SecretValue
from agent.store.base import RESOURCE_SECRET
from agent.store.records import ACS_CURRENT, ACS_PREVIOUS, SecretFilter, SecretRecord
from client.errors import InvalidParameterError, KmsError

SECRET_NAME = Param("SecretName", required=True, low=1, high=512)
DATA_TYPE = Param("SecretDataType", choices=validate.DATA_TYPES)
MAX_BATCH = 20
MAX_WAIT_SECONDS = 300
FILTER_FIELDS = {
    "SecretName": "secret_name", "Description": "description",
    "SecretType": "secret_type", "Creator": "creator",
    "DKMSInstanceId": "keystore", "TagKey": "tag_key", "TagValue": "tag_value",
}


def _secrets(services: Any) -> SecretService:
    return services.secrets


def _stages(stages: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {"VersionStage": list(stages)}


def _interval(seconds: int | None) -> str | None:
    return None if seconds is None else f"{seconds}s"


def _page(values: dict[str, Any]) -> tuple[int, int, int]:
    number = values.get("PageNumber", 1)
    size = values.get("PageSize", 10)
    return number, size, (number - 1) * size


def _optional(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def value_reply(value: SecretValue) -> dict[str, Any]:
    """Return the GetSecretValue reply map of a value."""
    data: str | bytes = value.data
    if value.data_type == "text":
        data = value.data.decode("utf-8")
    reply = {
        "SecretName": value.secret_name, "SecretType": value.secret_type,
        "SecretData": data, "SecretDataType": value.data_type,
        "VersionId": value.version_id, "VersionStages": _stages(value.stages),
        "CreateTime": value.create_time,
    }
    if value.stale_age is not None:
        reply["Stale"] = True
        reply["StaleAgeSeconds"] = int(value.stale_age)
    return reply


async def _describe(service: SecretService, secret: SecretRecord,
                    fetch_tags: bool) -> dict[str, Any]:
    reply = {
        "SecretName": secret.secret_name, "Arn": service.arn(secret),
        "SecretType": secret.secret_type, "Description": secret.description,
        "EncryptionKeyId": secret.encryption_key_id,
        "DKMSInstanceId": secret.keystore,
        "CreateTime": secret.create_time, "UpdateTime": secret.update_time,
        "AutomaticRotation": secret.automatic_rotation,
        **_optional({
            "PlannedDeleteTime": secret.planned_delete_time,
            "RotationInterval": _interval(secret.rotation_interval),
            "LastRotationDate": secret.last_rotation_date,
            "NextRotationDate": secret.next_rotation_date,
            "LastRotationError": secret.last_rotation_error,
        }),
    }
    if fetch_tags:
        tags = await service.store.get_tags(RESOURCE_SECRET, secret.secret_name)
        reply["Tags"] = {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}
    return reply


def _creator(ctx: RequestContext) -> str:
    return ctx.principal or str(ctx.peer.uid if ctx.peer.uid is not None else "local")


async def create_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    enabled = values.get("EnableAutomaticRotation", False)
    interval = values.get("RotationInterval")
    seconds = validate.rotation_interval(interval) if interval is not None else None
    if enabled:
        if seconds is None:
            raise InvalidParameterError(
                "RotationInterval is required with EnableAutomaticRotation.")
        lifecycle.require_rotator(service, values["SecretName"])
    secret = await service.create_secret(
        name=values["SecretName"], version_id=values["VersionId"],
        data=values["SecretData"], data_type=values.get("SecretDataType", "text"),
        key_ref=values.get("EncryptionKeyId"),
        description=values.get("Description", ""),
        tags=tags_param(values.get("Tags", [])), creator=_creator(ctx),
        rotation_interval=seconds, automatic_rotation=enabled)
    ctx.key_id = secret.encryption_key_id
    return {
        "Arn": service.arn(secret), "SecretName": secret.secret_name,
        "SecretType": secret.secret_type, "VersionId": values["VersionId"],
        "AutomaticRotation": secret.automatic_rotation,
        **_optional({"RotationInterval": _interval(secret.rotation_interval),
                     "NextRotationDate": secret.next_rotation_date}),
    }


async def get_secret_value(services: Any, ctx: RequestContext, values: dict) -> dict:
    value = await _secrets(services).get_value(
        values["SecretName"], values.get("VersionId"), values.get("VersionStage"))
    return value_reply(value)


async def batch_get_secret_value(services: Any, ctx: RequestContext,
                                 values: dict) -> dict:
    service = _secrets(services)
    found, failed = [], []
    for entry in values["SecretsList"]:
        _check_batch_entry(entry)
        try:
            refused = (ctx.refused_items or {}).get(entry["SecretName"])
            if refused is not None:
                raise refused
            value = await service.get_value(
                entry["SecretName"], entry.get("VersionId"), entry.get("VersionStage"))
            found.append(value_reply(value))
        except KmsError as error:
            failed.append({"SecretName": entry["SecretName"], "Code": error.code,
                           "HttpStatus": error.http_status, "Message": error.message})
    return {"SecretValues": found, "Errors": failed}


def _check_batch_entry(entry: Any) -> None:
    allowed = {"SecretName", "VersionId", "VersionStage", "FetchExtendedConfig"}
    if (not isinstance(entry, dict) or not isinstance(entry.get("SecretName"), str)
            or set(entry) - allowed
            or not all(isinstance(entry.get(k, ""), str)
                       for k in ("VersionId", "VersionStage"))):
        raise InvalidParameterError(
            "SecretsList must be a list of {\"SecretName\": string} maps with "
            "optional VersionId and VersionStage strings.")


async def put_secret_value(services: Any, ctx: RequestContext, values: dict) -> dict:
    requested = values.get("VersionStages", [ACS_CURRENT])
    if not all(isinstance(stage, str) for stage in requested):
        raise InvalidParameterError("VersionStages must be a list of strings.")
    if ACS_PREVIOUS in requested:
        # ACSPrevious only ever follows ACSCurrent off the version it leaves.
        raise InvalidParameterError(
            "VersionStages must not name ACSPrevious; the agent moves it.")
    secret, stages = await _secrets(services).put_value(
        values["SecretName"], values["VersionId"], values["SecretData"],
        values.get("SecretDataType", "text"), requested)
    return {"SecretName": secret.secret_name, "VersionId": values["VersionId"],
            "VersionStages": _stages(stages)}


async def update_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    if "Description" in values:
        secret = await service.update_description(values["SecretName"],
                                                  values["Description"])
    else:
        secret = await service.get_secret(values["SecretName"])
    return {"SecretName": secret.secret_name}


async def update_secret_version_stage(services: Any, ctx: RequestContext,
                                      values: dict) -> dict:
    secret = await _secrets(services).update_stage(
        values["SecretName"], values["VersionStage"],
        values.get("RemoveFromVersion"), values.get("MoveToVersion"))
    return {"SecretName": secret.secret_name}


async def describe_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    secret = await service.get_secret(values["SecretName"], allow_pending=True)
    return await _describe(service, secret, values.get("FetchTags", False))


async def list_secrets(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    number, size, offset = _page(values)
    where = _secret_filter(values.get("Filters", []))
    # Access control limits the caller to the keystores it is bound to.
    keystores = ctx.keystore_scope(where.keystore)
    found, total = [], 0
    if keystores is not None:
        found, total = await service.store.list_secrets(
            dataclasses.replace(where, keystore=keystores), offset, size)
    entries = []
    for secret in found:
        entry = {"SecretName": secret.secret_name, "SecretType": secret.secret_type,
                 "CreateTime": secret.create_time, "UpdateTime": secret.update_time,
                 **_optional({"PlannedDeleteTime": secret.planned_delete_time})}
        if values.get("FetchTags", False):
            tags = await service.store.get_tags(RESOURCE_SECRET, secret.secret_name)
            entry["Tags"] = {"Tag": [{"TagKey": k, "TagValue": v}
                                     for k, v in tags.items()]}
        entries.append(entry)
    return {"SecretList": {"Secret": entries}, "PageNumber": number,
            "PageSize": size, "TotalCount": total}


def _secret_filter(filters: list[Any]) -> SecretFilter:
    return SecretFilter(**parse_filters(filters, FILTER_FIELDS, MAX_FILTER_VALUES))


async def list_secret_version_ids(services: Any, ctx: RequestContext,
                                  values: dict) -> dict:
    secret, versions = await _secrets(services).list_versions(
        values["SecretName"], values.get("IncludeDeprecated", False))
    number, size, offset = _page(values)
    entries = [{
        "VersionId": version.version_id, "CreateTime": version.create_time,
        "VersionStages": _stages(sorted(
            stage for stage, holder in secret.stages.items()
            if holder == version.version_id)),
    } for version in versions[offset:offset + size]]
    return {"SecretName": secret.secret_name, "VersionIds": {"VersionId": entries},
            "PageNumber": number, "PageSize": size, "TotalCount": len(versions)}


async def delete_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    planned = await lifecycle.delete_secret(
        service, values["SecretName"], values.get("RecoveryWindowInDays"),
        values.get("ForceDeleteWithoutRecovery", False))
    return {"SecretName": service.secret_name(values["SecretName"]),
            "PlannedDeleteTime": planned}


async def restore_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    secret = await lifecycle.restore_secret(_secrets(services), values["SecretName"])
    return {"SecretName": secret.secret_name}


async def update_rotation_policy(services: Any, ctx: RequestContext,
                                 values: dict) -> dict:
    secret = await lifecycle.update_rotation_policy(
        _secrets(services), values["SecretName"], values["EnableAutomaticRotation"],
        values.get("RotationInterval"))
    return {"SecretName": secret.secret_name}


async def rotate_secret(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    secret = await lifecycle.rotate_secret(service, values["SecretName"],
                                           values["VersionId"], caller_of(ctx))
    return {"SecretName": secret.secret_name, "Arn": service.arn(secret),
            "VersionId": values["VersionId"]}


async def wait_secret_change(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _secrets(services)
    version_id, changed = await lifecycle.wait_change(
        service, values["SecretName"], values.get("VersionId"),
        values.get("TimeoutSeconds", 60))
    return {"SecretName": service.secret_name(values["SecretName"]),
            "VersionId": version_id, "Changed": changed}


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


_VERSION_ID = Param("VersionId", required=True, low=1, high=64)
_SECRET_DATA = Param("SecretData", PLAINTEXT, required=True, low=1,
                     high=validate.MAX_VALUE_BYTES)

OPERATIONS = [
    _op("CreateSecret", create_secret, CREATE, SECRET_NAME, _VERSION_ID, _SECRET_DATA,
        DATA_TYPE, Param("SecretType", choices=("Generic",)),
        Param("EncryptionKeyId", low=1, high=512), Param("Description", high=8192),
        Param("Tags", LIST, high=20), Param("EnableAutomaticRotation", BOOL),
        Param("RotationInterval", high=32)),
    _op("GetSecretValue", get_secret_value, READ, SECRET_NAME,
        Param("VersionId", high=64), Param("VersionStage", high=64),
        Param("FetchExtendedConfig", BOOL)),
    _op("BatchGetSecretValue", batch_get_secret_value, READ,
        Param("SecretsList", LIST, required=True, low=1, high=MAX_BATCH)),
    _op("PutSecretValue", put_secret_value, WRITE, SECRET_NAME, _VERSION_ID,
        _SECRET_DATA, DATA_TYPE, Param("VersionStages", LIST, high=8)),
    _op("UpdateSecret", update_secret, WRITE, SECRET_NAME,
        Param("Description", high=8192)),
    _op("UpdateSecretVersionStage", update_secret_version_stage, WRITE, SECRET_NAME,
        Param("VersionStage", required=True, low=1, high=64),
        Param("RemoveFromVersion", high=64), Param("MoveToVersion", high=64)),
    _op("DescribeSecret", describe_secret, READ, SECRET_NAME, Param("FetchTags", BOOL)),
    _op("ListSecrets", list_secrets, READ, PAGE_NUMBER, PAGE_SIZE,
        Param("FetchTags", BOOL), Param("Filters", LIST)),
    _op("ListSecretVersionIds", list_secret_version_ids, READ, SECRET_NAME,
        Param("IncludeDeprecated", BOOL), PAGE_NUMBER, PAGE_SIZE),
    _op("DeleteSecret", delete_secret, WRITE, SECRET_NAME,
        Param("RecoveryWindowInDays", INT, low=7, high=30),
        Param("ForceDeleteWithoutRecovery", BOOL)),
    _op("RestoreSecret", restore_secret, WRITE, SECRET_NAME),
    _op("UpdateSecretRotationPolicy", update_rotation_policy, WRITE, SECRET_NAME,
        Param("EnableAutomaticRotation", BOOL, required=True),
        Param("RotationInterval", high=32)),
    _op("RotateSecret", rotate_secret, WRITE, SECRET_NAME, _VERSION_ID),
    _op("WaitSecretChange", wait_secret_change, READ, SECRET_NAME,
        Param("VersionId", high=64),
        Param("TimeoutSeconds", INT, low=1, high=MAX_WAIT_SECONDS)),
]
