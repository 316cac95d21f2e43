"""DescribeAgentCache: statistics of the agent's caches.

An agent-specific operation with no cloud counterpart. It returns the
counters of the secret value cache and the data key cache, and the
number of WaitSecretChange requests waiting now, for health checks and
metrics.
"""

from __future__ import annotations

from typing import Any

from agent.context import RequestContext
from agent.rpc.dispatch import READ, Operation


async def describe_agent_cache(services: Any, ctx: RequestContext,
                               values: dict) -> dict:
    reply: dict[str, Any] = {}
    secrets = getattr(services, "secrets", None)
    if secrets is not None:
        reply["SecretValueCache"] = secrets.cache.describe()
        reply["SecretWaiters"] = secrets.notifier.waiting()
    data_keys = getattr(services, "data_keys", None)
    if data_keys is not None:
        reply["DataKeyCache"] = data_keys.describe()
    return reply


OPERATIONS = [
    Operation("DescribeAgentCache", describe_agent_cache, (),
              permission="kms:DescribeAgentCache", group=READ),
]
