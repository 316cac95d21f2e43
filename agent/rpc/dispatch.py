"""The operation table and the dispatcher every transport calls.

An ``Operation`` is defined once, independent of transport: its name (the
Alibaba Cloud KMS action), its parameter schema, the permission it needs,
its quota group and a handler. A handler parses nothing itself: it gets
validated parameters, calls a domain service and shapes the reply.

``Dispatcher.handle`` runs one request and writes its log line: for every
request, or with ``log_successes`` off only for those that failed (the
audit trail records them all, and a line costs a fifth of an Encrypt).
Cross-cutting checks (authorization, quotas, audit) are ``Stage``
objects: each ``before`` runs after parameter validation and may refuse
the request; each ``after`` runs, in reverse order, before the reply is
sent, with the validated parameters and the result or the error.
Caller errors reach the caller as they are; anything unexpected is
logged with its traceback and answered with a generic InternalFailure
carrying the request id.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

from agent.context import RequestContext
from agent.logs import LOGGER_NAME, log
from agent.rpc.params import Param, parse_params
from client.errors import (
    CallerError, InternalFailureError, InvalidApiNameError, KmsError,
)

Handler = Callable[[Any, RequestContext, dict[str, Any]], Awaitable[dict[str, Any]]]

# Quota groups, as the KMS API throttles them.
CREATE = "create"
CRYPTO = "cryptographic"
READ = "read"
WRITE = "write"


@dataclasses.dataclass(frozen=True)
class Operation:
    """One RPC operation: name, schema, permission, quota group, handler."""

    name: str
    handler: Handler
    params: tuple[Param, ...] = ()
    permission: str = ""
    group: str = READ


class Stage:
    """A check around every request; the default does nothing."""

    async def before(self, ctx: RequestContext, operation: Operation,
                     values: dict[str, Any]) -> None:
        """Run before the handler; raise a KmsError to refuse the request."""

    async def after(self, ctx: RequestContext, operation: Operation | None,
                    values: dict[str, Any], result: dict[str, Any] | None,
                    failure: KmsError | None) -> None:
        """Run before the reply is sent; raise a KmsError to fail it.

        ``values`` are the validated parameters, empty when validation
        failed or the operation is unknown.
        """


class Dispatcher:
    """Validate, run and log requests against an operation table."""

    def __init__(self, operations: Iterable[Operation], services: Any,
                 stages: Iterable[Stage] = (), log_successes: bool = True):
        self.operations = {op.name: op for op in operations}
        self.services = services
        self.stages = list(stages)
        self.log_successes = log_successes

    @property
    def stages(self) -> list[Stage]:
        """The stages, in the order their ``before`` hooks run."""
        return self._stages

    @stages.setter
    def stages(self, stages: list[Stage]) -> None:
        self._stages = list(stages)
        # Hooks a stage leaves as Stage's no-op are not called at all.
        self._befores = [stage.before for stage in self._stages
                         if type(stage).before is not Stage.before]
        self._afters = [stage.after for stage in reversed(self._stages)
                        if type(stage).after is not Stage.after]

    async def handle(self, ctx: RequestContext, params: Any) -> dict[str, Any]:
        """Run the request named by ``ctx.operation``.

        Returns:
            The result map, with ``RequestId`` added.
        Raises:
            KmsError: with ``request_id`` set; never another exception type.
        """
        started = time.perf_counter()
        operation = self.operations.get(ctx.operation)
        failure: KmsError | None = None
        values: dict[str, Any] = {}
        try:
            try:
                if operation is None:
                    raise InvalidApiNameError(
                        f"The operation {ctx.operation!r} is not known.")
                values = parse_params(params, operation.params)
                result = await self._run(ctx, operation, values)
            except KmsError as error:
                failure = error
            except Exception:
                logging.getLogger(LOGGER_NAME).exception(
                    "request failed unexpectedly",
                    extra={"fields": {"op": ctx.operation,
                                      "request_id": ctx.request_id}})
                failure = InternalFailureError()
            try:
                await self._after(ctx, operation, values,
                                  None if failure else result, failure)
            except KmsError as error:
                failure = error
            if failure is not None:
                failure.request_id = ctx.request_id
                raise failure
            result["RequestId"] = ctx.request_id
            return result
        finally:
            self._log_request(ctx, failure, started)

    async def _run(self, ctx: RequestContext, operation: Operation,
                   values: dict[str, Any]) -> dict[str, Any]:
        for before in self._befores:
            await before(ctx, operation, values)
        return await operation.handler(self.services, ctx, values)

    async def _after(self, ctx: RequestContext, operation: Operation | None,
                     values: dict[str, Any], result: dict[str, Any] | None,
                     failure: KmsError | None) -> None:
        for after in self._afters:
            await after(ctx, operation, values, result, failure)

    def _log_request(self, ctx: RequestContext, failure: KmsError | None,
                     started: float) -> None:
        if failure is None and not self.log_successes:
            return
        level = logging.INFO
        if failure is not None and not isinstance(failure, CallerError):
            level = logging.WARNING
        log(level, "request",
            op=ctx.operation, code=failure.code if failure else "OK",
            request_id=ctx.request_id, principal=ctx.principal, key_id=ctx.key_id,
            key_version=ctx.key_version_id, peer_uid=ctx.peer.uid,
            peer_pid=ctx.peer.pid,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            detail=getattr(failure, "detail", None))
