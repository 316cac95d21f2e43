"""Access control operations: resource policies, client keys, reload, identity.

``Get/SetKeyPolicy`` and ``Get/SetSecretPolicy`` follow the KMS API:
PolicyName is ``default`` and the document is checked against the
configured principals and the operations of the agent. The rest are specific to
the agent: ``CreateClientKey``, ``ListClientKeys`` and ``RevokeClientKey``
manage client keys, ``ReloadPolicies`` does what SIGHUP does, and
``GetCallerIdentity`` tells callers who the agent takes them for.
"""

from __future__ import annotations

from typing import Any

from agent.auth import resource_policy, rules
from agent.auth.client_keys import describe_client_key
from agent.auth.control import AccessControl
from agent.auth.policy import KEY, SECRET
from agent.auth.resource_policy import EMPTY_POLICY, POLICY_NAME
from agent.context import RequestContext
from agent.rpc.dispatch import READ, WRITE, Operation
from agent.rpc.params import INT, Param
from agent.store.access import ResourcePolicyRecord
from agent.store.records import format_time
from client.errors import InvalidParameterError, ResourceNotFoundError

KEY_ID = Param("KeyId", required=True, low=1, high=512)
SECRET_NAME = Param("SecretName", required=True, low=1, high=512)
POLICY_NAME_PARAM = Param("PolicyName", high=64)
POLICY = Param("Policy", required=True, low=1,
               high=resource_policy.MAX_POLICY_BYTES)


def _control(services: Any) -> AccessControl:
    control = getattr(services, "auth", None)
    if control is None:
        raise InvalidParameterError("Access control is not configured on this agent.")
    return control


def _policy_name(values: dict[str, Any]) -> str:
    name = values.get("PolicyName", POLICY_NAME)
    if name != POLICY_NAME:
        raise InvalidParameterError(f"PolicyName must be {POLICY_NAME!r}.")
    return name


async def _get_policy(services: Any, kind: str, resource_id: str,
                      values: dict) -> dict:
    name = _policy_name(values)
    record = await services.keys.store.get_resource_policy(kind, resource_id, name)
    return {"Policy": record.document if record else EMPTY_POLICY,
            "PolicyName": name}


async def _set_policy(services: Any, kind: str, resource_id: str,
                      values: dict) -> dict:
    name = _policy_name(values)
    document = values["Policy"]
    resource_policy.parse_policy(document, _control(services).config.principals,
                                 rules.key_policy_actions())
    await services.keys.store.put_resource_policy(ResourcePolicyRecord(
        kind, resource_id, name, document, format_time(services.keys.clock.now())))
    return {}


async def get_key_policy(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await services.keys.resolve(values["KeyId"])
    ctx.key_id = key.key_id
    return {"KeyId": key.key_id, **await _get_policy(services, KEY, key.key_id, values)}


async def set_key_policy(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await services.keys.resolve(values["KeyId"])
    ctx.key_id = key.key_id
    return await _set_policy(services, KEY, key.key_id, values)


async def _secret(services: Any, reference: str) -> Any:
    secrets = getattr(services, "secrets", None)
    if secrets is None:
        raise ResourceNotFoundError(f"The secret {reference!r} is not found.")
    return await secrets.get_secret(reference, allow_pending=True)


async def get_secret_policy(services: Any, ctx: RequestContext, values: dict) -> dict:
    secret = await _secret(services, values["SecretName"])
    reply = await _get_policy(services, SECRET, secret.secret_name, values)
    return {"SecretName": secret.secret_name, **reply}


async def set_secret_policy(services: Any, ctx: RequestContext, values: dict) -> dict:
    secret = await _secret(services, values["SecretName"])
    return await _set_policy(services, SECRET, secret.secret_name, values)


# --- client keys ---------------------------------------------------------------


async def create_client_key(services: Any, ctx: RequestContext, values: dict) -> dict:
    control = _control(services)
    principal = control.config.principals.get(values["Principal"])
    if principal is None:
        raise InvalidParameterError(
            f"Principal {values['Principal']!r} is not in [principals].")
    record, private_pem = await control.client_keys.create(
        principal, values.get("NotBefore"), values.get("NotAfter"))
    return {**describe_client_key(record), "PrivateKeyData": private_pem}


async def list_client_keys(services: Any, ctx: RequestContext, values: dict) -> dict:
    number = values.get("PageNumber", 1)
    size = values.get("PageSize", 10)
    records, total = await _control(services).client_keys.store.list_client_keys(
        values.get("Principal"), (number - 1) * size, size)
    return {"ClientKeys": {"ClientKey": [describe_client_key(r) for r in records]},
            "PageNumber": number, "PageSize": size, "TotalCount": total}


async def revoke_client_key(services: Any, ctx: RequestContext, values: dict) -> dict:
    await _control(services).client_keys.revoke(values["ClientKeyId"])
    return {}


# --- the agent -------------------------------------------------------------------


async def reload_policies(services: Any, ctx: RequestContext, values: dict) -> dict:
    config = _control(services).reload()
    return {"Principals": len(config.principals), "Policies": len(config.grants)}


async def get_caller_identity(services: Any, ctx: RequestContext,
                              values: dict) -> dict:
    reply: dict[str, Any] = {
        "Principal": ctx.principal or "", "Uid": ctx.peer.uid, "Gid": ctx.peer.gid,
        "Pid": ctx.peer.pid,
    }
    if ctx.client_key_id:
        reply["ClientKeyId"] = ctx.client_key_id
    control = getattr(services, "auth", None)
    principal = control.config.principals.get(ctx.principal) if control else None
    if principal is not None:
        reply["Keystores"] = sorted(principal.keystores or ["*"])
    return reply


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


_PAGE = (Param("PageNumber", INT, low=1, high=2**31),
         Param("PageSize", INT, low=1, high=100))

OPERATIONS = [
    _op("GetKeyPolicy", get_key_policy, READ, KEY_ID, POLICY_NAME_PARAM),
    _op("SetKeyPolicy", set_key_policy, WRITE, KEY_ID, POLICY_NAME_PARAM, POLICY),
    _op("GetSecretPolicy", get_secret_policy, READ, SECRET_NAME, POLICY_NAME_PARAM),
    _op("SetSecretPolicy", set_secret_policy, WRITE, SECRET_NAME, POLICY_NAME_PARAM,
        POLICY),
    _op("CreateClientKey", create_client_key, WRITE,
        Param("Principal", required=True, low=1, high=64),
        Param("NotBefore", high=32), Param("NotAfter", high=32)),
    _op("ListClientKeys", list_client_keys, READ, Param("Principal", high=64), *_PAGE),
    _op("RevokeClientKey", revoke_client_key, WRITE,
        Param("ClientKeyId", required=True, low=1, high=128)),
    _op("ReloadPolicies", reload_policies, WRITE),
    _op("GetCallerIdentity", get_caller_identity, READ),
]
