"""The access control stage: identify the caller and authorize each request.

``AccessStage.before`` runs after parameter validation and before the
handler. It names the principal (``ctx.principal``), finds every
resource the request names through ``rules.RULES``, and refuses with
``Forbidden.NoPermission`` unless the configured policies and the
resource's own policy allow it (an explicit Deny wins, then any Allow).
Aliases, ARNs and blobs are resolved first. A resolved key reference is
written back into the request as the key id, so the handler acts on the
very key that was authorized.

A refusal never tells whether the resource exists: a missing key,
alias, blob version, secret or certificate gets the same NoPermission as
one the caller may not use, with a message that quotes only the caller's
own reference. Only a principal that may use the whole collection
(``key/*``, ``secret/*`` or ``certificate/*``) in every keystore sees
the handler's not-found error. Certificates have no resource policy of
their own, so the configured policies alone decide on them.
A resource in a keystore that failed to open is refused with
ServiceUnavailableTemporary, after authorization. BatchGetSecretValue
is the exception to refusing the whole request: each refused secret is
put in ``ctx.refused_items`` and reported alone in the reply's Errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.auth import resource_policy, rules
from agent.auth.control import AccessControl
from agent.auth.policy import (
    AGENT, ALLOW, CERTIFICATE, DENY, KEY, SECRET, AccessConfig, Resource,
)
from agent.auth.principals import Principal
from agent.auth.resource_policy import POLICY_NAME, Statement
from agent.context import RequestContext
from agent.keys.blob import parse_blob
from agent.keystore.unavailable import UnavailableKeystore
from agent.rpc.dispatch import Operation, Stage
from client.errors import (
    AliasNotFoundError, InternalFailureError, InvalidParameterError,
    KeyNotFoundError, NoPermissionError, ResourceNotFoundError,
    ServiceUnavailableError,
)

_BLOB_REFERENCE = "the key of the ciphertext blob"
_POLICY_CACHE_ENTRIES = 1024


@dataclasses.dataclass
class _Check:
    """One target of one request, with what deciding on it needs."""

    ctx: RequestContext
    config: AccessConfig
    principal: Principal
    operation: str
    templates: frozenset[str]
    actions: tuple[str, ...]
    context: dict[str, str] | None


class AccessStage(Stage):
    """Refuse every request that the access configuration does not allow.

    Args:
        control: the access configuration and client keys.
        services: the daemon's services; ``keys`` and, when present,
            ``secrets`` are used to resolve references.
    """

    def __init__(self, control: AccessControl, services: Any):
        self.control = control
        self.services = services
        self._policies: dict[str, tuple[Statement, ...]] = {}

    async def before(self, ctx: RequestContext, operation: Operation,
                     values: dict[str, Any]) -> None:
        principal = await self.control.principal_for(ctx.peer, ctx.client_key_id)
        ctx.principal = principal.name
        config = self.control.config
        rule = rules.RULES.get(operation.name)
        if rule is None:
            self._check_unmapped(config, principal, operation.name)
            return
        for target in rule.targets:
            if any(name in values for name in target.unless):
                continue
            check = _Check(
                ctx, config, principal, operation.name,
                target.templates or rule.templates,
                target.actions or (f"kms:{operation.name}",),
                _context(values, target.context))
            await self._check_target(check, target, values)

    def _check_unmapped(self, config: AccessConfig, principal: Principal,
                        operation: str) -> None:
        agent = Resource(AGENT)
        if (principal.keystores is not None
                or config.decide(principal, rules.ADMIN, agent) != ALLOW):
            raise _denied(principal, operation, "the agent")

    async def _check_target(self, check: _Check, target: rules.Target,
                            values: dict[str, Any]) -> None:
        kind = target.kind
        if kind == rules.KEY_REF:
            await self._check_key_ref(check, target.param, values)
        elif kind == rules.KEY_BLOB:
            await self._check_blob(check, values.get(target.param))
        elif kind == rules.KEY_ALIAS:
            await self._check_alias(check, values.get(target.param))
        elif kind == rules.KEY_NEW:
            keystore = values.get(target.param) or self._keys.default_keystore
            self._check_collection(check, Resource(KEY, None, keystore),
                                   f"a new key in keystore {keystore}")
            self._require_available(keystore)
        elif kind in (rules.KEYS, rules.SECRETS):
            resource_kind = KEY if kind == rules.KEYS else SECRET
            self._check_collection(check, Resource(resource_kind), f"{resource_kind}/*")
            check.ctx.keystores = check.principal.keystores
        elif kind == rules.SECRET_REF:
            await self._check_secret_ref(check, target.param, values)
        elif kind == rules.SECRET_LIST:
            await self._check_secret_list(check, values.get(target.param))
        elif kind == rules.SECRET_NEW:
            await self._check_new_secret(check, values.get(target.param), values)
        elif kind == rules.AGENT_ITSELF:
            self._check_collection(check, Resource(AGENT), "the agent")
        elif kind == rules.ANY_GRANT:
            self._check_any_grant(check, None)
        elif kind in (rules.CERTIFICATE_REF, rules.CERTIFICATE_NEW,
                      rules.CERTIFICATES):
            await self._check_certificate_target(check, target, values)
        elif kind == rules.KEYSTORE:
            keystore = values.get(target.param) or self._keys.default_keystore
            self._check_any_grant(check, keystore)
            self._require_available(keystore)
        else:
            raise InternalFailureError()

    @property
    def _keys(self) -> Any:
        return self.services.keys

    # --- keys -------------------------------------------------------------------

    async def _check_key_ref(self, check: _Check, param: str,
                             values: dict[str, Any]) -> None:
        reference = values.get(param)
        if reference is None:
            return
        try:
            key = await self._keys.resolve(reference)
        except (KeyNotFoundError, AliasNotFoundError):
            self._check_missing(check, KEY, reference)
            return
        await self._check_key(check, key, reference)
        values[param] = key.key_id

    async def _check_blob(self, check: _Check, blob: bytes | None) -> None:
        if blob is None:
            return
        # A malformed blob raises InvalidCiphertext here, as Decrypt would.
        version = await self._keys.store.get_version(parse_blob(blob).version_id)
        key = None if version is None else await self._keys.store.get_key(
            version.key_id)
        if key is None:
            self._check_missing(check, KEY, _BLOB_REFERENCE)
            return
        await self._check_key(check, key, _BLOB_REFERENCE)

    async def _check_alias(self, check: _Check, alias_name: str | None) -> None:
        if alias_name is None:
            return
        # NOTE: the alias is resolved again by the handler, so a concurrent
        # UpdateAlias can move it to another key between the two reads.
        store = self._keys.store
        alias = await store.get_alias(alias_name)
        key = None if alias is None else await store.get_key(alias.key_id)
        if key is None:
            self._check_missing(check, KEY, alias_name)
            return
        await self._check_key(check, key, alias_name)

    async def _check_key(self, check: _Check, key: Any, reference: str) -> None:
        resource = Resource(KEY, key.key_id, key.keystore)
        statements = await self._resource_statements(KEY, key.key_id)
        self._check_resource(check, resource, statements, reference)
        self._require_available(key.keystore)

    # --- secrets ----------------------------------------------------------------

    def _secret_name(self, reference: str) -> str:
        secrets = getattr(self.services, "secrets", None)
        return reference if secrets is None else secrets.secret_name(reference)

    async def _check_secret_ref(self, check: _Check, param: str,
                                values: dict[str, Any]) -> None:
        reference = values.get(param)
        if reference is None:
            return
        values[param] = await self._check_secret(check, reference)

    async def _check_secret(self, check: _Check, reference: str) -> str:
        # Return the plain secret name after checking the caller may use it.
        try:
            name = self._secret_name(reference)
        except ResourceNotFoundError:
            self._check_missing(check, SECRET, reference)
            return reference
        secret = await self._keys.store.get_secret(name)
        if secret is None:
            self._check_missing(check, SECRET, reference)
            return name
        statements = await self._resource_statements(SECRET, name)
        self._check_resource(check, Resource(SECRET, name, secret.keystore),
                             statements, reference)
        self._require_available(secret.keystore)
        return name

    async def _check_secret_list(self, check: _Check, entries: Any) -> None:
        # Malformed entries are left for the handler to reject. A refused
        # entry fails alone, as the cloud reports it in the reply's Errors.
        for entry in entries or ():
            if isinstance(entry, dict) and isinstance(entry.get("SecretName"), str):
                reference = entry["SecretName"]
                try:
                    entry["SecretName"] = await self._check_secret(check, reference)
                except (NoPermissionError, ServiceUnavailableError) as error:
                    if check.ctx.refused_items is None:
                        check.ctx.refused_items = {}
                    check.ctx.refused_items[reference] = error

    async def _check_new_secret(self, check: _Check, name: str | None,
                                values: dict[str, Any]) -> None:
        keystore = self._keys.default_keystore
        key_reference = values.get("EncryptionKeyId")
        if key_reference is not None:
            try:
                keystore = (await self._keys.resolve(key_reference)).keystore
            except (KeyNotFoundError, AliasNotFoundError):
                pass  # the EncryptionKeyId target decides what the caller sees
        self._check_collection(check, Resource(SECRET, name, keystore),
                               f"secret/{name}")
        self._require_available(keystore)

    # --- certificates -----------------------------------------------------------

    async def _check_certificate_target(self, check: _Check, target: rules.Target,
                                        values: dict[str, Any]) -> None:
        if target.kind == rules.CERTIFICATES:
            self._check_collection(check, Resource(CERTIFICATE), "certificate/*")
            check.ctx.keystores = check.principal.keystores
            return
        if target.kind == rules.CERTIFICATE_NEW:
            keystore = values.get(target.param) or self._keys.default_keystore
            self._check_collection(check, Resource(CERTIFICATE, None, keystore),
                                   f"a new certificate in keystore {keystore}")
            self._require_available(keystore)
            return
        reference = values.get(target.param)
        if reference is None:
            return
        record = await self._keys.store.get_certificate(reference)
        if record is None:
            self._check_missing(check, CERTIFICATE, reference)
            return
        resource = Resource(CERTIFICATE, record.certificate_id, record.keystore)
        self._check_resource(check, resource, (), reference)
        self._require_available(record.keystore)

    # --- decisions --------------------------------------------------------------

    def _check_resource(self, check: _Check, resource: Resource,
                        statements: tuple[Statement, ...], reference: str) -> None:
        decision = check.config.decide(check.principal, check.templates, resource)
        if decision != DENY:
            by_policy = resource_policy.decide(
                statements, check.principal.name, check.actions, check.context)
            if by_policy == DENY:
                decision = DENY
            elif by_policy == ALLOW:
                decision = ALLOW
        if decision != ALLOW:
            raise _denied(check.principal, check.operation, reference,
                          detail=str(resource))

    def _check_collection(self, check: _Check, resource: Resource,
                          reference: str) -> None:
        if check.config.decide(check.principal, check.templates, resource) != ALLOW:
            raise _denied(check.principal, check.operation, reference)

    def _check_missing(self, check: _Check, kind: str, reference: str) -> None:
        # Only a caller that could use any such resource, in any keystore,
        # may learn that this one does not exist, from the handler's error.
        if (check.principal.keystores is None
                and check.config.decide(check.principal, check.templates,
                                        Resource(kind)) == ALLOW):
            return
        raise _denied(check.principal, check.operation, reference,
                      detail="not found")

    def _check_any_grant(self, check: _Check, keystore: str | None) -> None:
        bound = keystore is None or check.principal.uses_keystore(keystore)
        if not bound or not check.config.holds_any(check.principal, check.templates):
            raise _denied(check.principal, check.operation,
                          f"keystore {keystore}" if keystore else "the agent")

    def _require_available(self, keystore: str) -> None:
        if isinstance(self._keys.keystores.get(keystore), UnavailableKeystore):
            raise ServiceUnavailableError(
                f"The keystore {keystore} is unavailable; try again later.")

    async def _resource_statements(self, kind: str,
                                   name: str) -> tuple[Statement, ...]:
        record = await self._keys.store.get_resource_policy(kind, name, POLICY_NAME)
        if record is None:
            return ()
        statements = self._policies.get(record.document)
        if statements is None:
            try:
                statements = resource_policy.parse_policy(record.document, None, None)
            except InvalidParameterError as exc:
                # Documents are checked when set, so this is a damaged
                # store; failing closed keeps every request refused.
                error = InternalFailureError()
                detail = f"stored policy of {kind}/{name}: {exc.message}"
                error.detail = detail  # type: ignore[attr-defined]
                raise error from None
            if len(self._policies) >= _POLICY_CACHE_ENTRIES:
                self._policies.clear()
            self._policies[record.document] = statements
        return statements


def _context(values: dict[str, Any], param: str | None) -> dict[str, str] | None:
    context = values.get(param) if param else None
    return context if isinstance(context, dict) else None


def _denied(principal: Principal, operation: str, reference: str,
            detail: str | None = None) -> NoPermissionError:
    error = NoPermissionError(
        f"The principal {principal.name} is not allowed to perform {operation} "
        f"on {reference}.")
    # The detail reaches the operator's log line, never the caller.
    error.detail = detail  # type: ignore[attr-defined]
    return error
