"""The audit stage: one record per request, durable before changes reply.

``AuditStage`` comes before access control and quotas, so it gets the
parameters of requests they reject, and its ``after`` records the code
sent. A record names the caller, operation, resource (secret name or
key id), version and result code, and no other parameter, so no
plaintext, data key or secret value reaches the file. Requests of the
``create`` and ``write`` groups wait for their record's fsync; while the
trail fails and ``fail_closed`` is set they get AuditUnavailable.

NOTE: a write that fails after the handler ran cannot undo the change:
the reply is AuditUnavailable and the log line's detail says so.
"""

from __future__ import annotations

import datetime
from typing import Any

from agent.audit.trail import AuditTrail, AuditWriteError
from agent.context import Clock, RequestContext
from agent.rpc.dispatch import CREATE, WRITE, Operation, Stage
from client.errors import AuditUnavailableError, KmsError

STATE_CHANGING_GROUPS = frozenset({CREATE, WRITE})
# Parameters that name the resource of a request, most specific first.
REFERENCE_PARAMS = ("KeyId", "ProtectedResourceArn", "DestinationKeyId",
                    "ClientKeyId", "Principal", "CertificateId")
MAX_FIELD_CHARS = 512


def changes_state(operation: Operation | None) -> bool:
    """Return whether a request of ``operation`` may change stored state."""
    return operation is not None and operation.group in STATE_CHANGING_GROUPS


def format_time(moment: datetime.datetime) -> str:
    """Return ``moment`` as UTC ISO 8601 text with milliseconds."""
    if moment.tzinfo is not datetime.timezone.utc:
        moment = moment.astimezone(datetime.timezone.utc)
    # isoformat ends in "+00:00" here; it is much cheaper than strftime.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def audit_fields(ctx: RequestContext, values: dict[str, Any],
                 result: dict[str, Any] | None, failure: KmsError | None,
                 moment: datetime.datetime) -> dict[str, Any]:
    """Return the record of one finished request (without its chain fields)."""
    fields: dict[str, Any] = {
        "time": format_time(moment), "request_id": ctx.request_id,
        "principal": ctx.principal, "uid": ctx.peer.uid, "pid": ctx.peer.pid,
        "op": ctx.operation[:MAX_FIELD_CHARS],
        "resource": _resource(ctx, values, result),
        "version": ctx.key_version_id or _text(values, "KeyVersionId", "VersionId"),
        "code": failure.code if failure is not None else "OK",
    }
    alias = _text(values, "AliasName")
    if alias is not None:
        fields["alias"] = alias
    if ctx.client_key_id is not None:
        fields["client_key_id"] = ctx.client_key_id
    if ctx.refused_items:
        # Items of a batch that access control refused, though the request succeeded.
        fields["refused"] = [name[:MAX_FIELD_CHARS] for name in ctx.refused_items]
    return fields


def _text(values: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = values.get(name)
        if isinstance(value, str):
            return value[:MAX_FIELD_CHARS]
    return None


def _resource(ctx: RequestContext, values: dict[str, Any],
              result: dict[str, Any] | None) -> str | list[str] | None:
    secret = _text(values, "SecretName")
    if secret is not None:
        return secret
    if ctx.key_id is not None:
        return ctx.key_id
    reference = _text(values, *REFERENCE_PARAMS)
    if reference is not None:
        return reference
    if result is not None:
        for name in ("ClientKeyId", "CertificateId"):
            if isinstance(result.get(name), str):
                return result[name]
    entries = values.get("SecretsList")
    if isinstance(entries, list):
        names = [_text(entry, "SecretName") for entry in entries
                 if isinstance(entry, dict)]
        return [name for name in names if name is not None] or None
    return None


class AuditStage(Stage):
    """Write one audit record per request; see the module docstring.

    A request cancelled midway (when a stopping agent's drain times out)
    leaves no record. Callers rejected at handshake send no request, so
    they are only logged.

    Args:
        trail: the running audit trail.
        clock: the source of record times.
    """

    def __init__(self, trail: AuditTrail, clock: Clock):
        self.trail = trail
        self.clock = clock

    async def before(self, ctx: RequestContext, operation: Operation,
                     values: dict[str, Any]) -> None:
        if (self.trail.fail_closed and changes_state(operation)
                and not self.trail.healthy and not await self.trail.recover()):
            raise AuditUnavailableError()

    async def after(self, ctx: RequestContext, operation: Operation | None,
                    values: dict[str, Any], result: dict[str, Any] | None,
                    failure: KmsError | None) -> None:
        fields = audit_fields(ctx, values, result, failure, self.clock.now())
        if not changes_state(operation):
            self.trail.submit(fields)
            return
        try:
            await self.trail.write(fields)
        except AuditWriteError:
            if self.trail.fail_closed and failure is None:
                raise _unaudited_change() from None


def _unaudited_change() -> AuditUnavailableError:
    error = AuditUnavailableError()
    # The detail reaches the operator's log line, never the caller.
    error.detail = (  # type: ignore[attr-defined]
        "the change was applied, but its audit record could not be written")
    return error
