"""When and how long the clients wait before sending a request again.

``RetryPolicy`` decides from the operation and the error alone, so
``KmsClient`` and ``AsyncKmsClient`` share it and tests can check it as
a table. Two kinds of failure are retried for every operation, because
the agent certainly did not run the request: Rejected.Throttling (the
agent refuses it before the handler) and a request that never left the
client whole (connecting, the handshake or the write failed). Other
server errors (HTTP 5xx), a broken connection after the request was sent
and a reply timeout are retried only for operations that are safe to
repeat: reads, cryptographic calls and writes that set a value. Creating
operations (CreateKey, CreateSecret ...), and other writes that a repeat
could apply twice or answer with a misleading error, are not. Caller
errors (4xx, 409) are never retried.

Waits grow exponentially up to ``max_delay`` with full jitter (a random
time between 0 and the cap), and no attempt starts after ``deadline``
seconds since the first one began.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from client.errors import KmsError, ThrottlingError

T = TypeVar("T")

# Operations that change nothing, or set a state that a repeat sets again.
SAFE_PREFIXES = ("Describe", "List", "Get", "BatchGet")
SAFE_OPERATIONS = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext", "GenerateRandom", "AsymmetricSign",
    "AsymmetricVerify", "AsymmetricEncrypt", "AsymmetricDecrypt",
    "WaitSecretChange", "EnableKey", "DisableKey", "UpdateKeyDescription",
    "TagResource", "UntagResource", "UpdateAlias", "SetDeletionProtection",
    "UpdateRotationPolicy", "UpdateSecret", "PutSecretValue",
    "UpdateSecretRotationPolicy", "SetKeyPolicy", "SetSecretPolicy",
})
_NOT_SENT = "_kms_request_not_sent"
DEFAULT_RETRIES = 3


def mark_not_sent(error: KmsError) -> KmsError:
    """Note on ``error`` that its request never reached the agent whole."""
    setattr(error, _NOT_SENT, True)
    return error


def was_not_sent(error: KmsError) -> bool:
    """Return whether ``mark_not_sent`` was applied to ``error``."""
    return getattr(error, _NOT_SENT, False)


def is_safe_to_repeat(operation: str) -> bool:
    """Return whether running ``operation`` twice has the effect of once."""
    return operation in SAFE_OPERATIONS or operation.startswith(SAFE_PREFIXES)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; see the module docstring.

    Args:
        retries: attempts after the first; 0 turns retrying off.
        base_delay: the cap of the first wait, in seconds.
        max_delay: the largest cap of any wait, in seconds.
        deadline: seconds after the first attempt began when no new
            attempt starts; None means the client's reply timeout.
    """

    retries: int = DEFAULT_RETRIES
    base_delay: float = 0.05
    max_delay: float = 1.0
    deadline: float | None = None

    def should_retry(self, operation: str, error: KmsError) -> bool:
        """Return whether ``error`` from ``operation`` is worth another attempt."""
        if isinstance(error, ThrottlingError):
            return True
        if error.http_status < 500:
            return False
        return was_not_sent(error) or is_safe_to_repeat(operation)

    def delay(self, retry: int, uniform: Callable[[], float] = random.random) -> float:
        """Return the seconds to wait before retry number ``retry`` (from 0)."""
        return uniform() * min(self.max_delay, self.base_delay * 2.0 ** retry)

    def next_delay(self, operation: str, error: KmsError, retry: int,
                   elapsed: float, deadline: float,
                   uniform: Callable[[], float] = random.random) -> float | None:
        """Return the wait before retry number ``retry``, or None to give up.

        ``elapsed`` is the time since the first attempt began and
        ``deadline`` the budget when ``self.deadline`` is None.
        """
        if retry >= self.retries or not self.should_retry(operation, error):
            return None
        wait = self.delay(retry, uniform)
        if elapsed + wait >= (self.deadline if self.deadline is not None else deadline):
            return None
        return wait


NO_RETRY = RetryPolicy(retries=0)


def as_policy(retries: int | RetryPolicy | None) -> RetryPolicy:
    """Return the policy that a client's ``retries=`` argument requests.

    An int is the number of retries with the default waits; None is 0.
    """
    if isinstance(retries, RetryPolicy):
        return retries
    if retries is None:
        return NO_RETRY
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a RetryPolicy or an int >= 0, not "
                         f"{retries!r}")
    return RetryPolicy(retries=retries)


def call_with_retries(policy: RetryPolicy, operation: str, attempt: Callable[[], T],
                      budget: float, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> T:
    """Run ``attempt`` until it returns or ``policy`` gives up.

    Raises:
        KmsError: the error of the last attempt.
    """
    started = clock()
    retry = 0
    while True:
        try:
            return attempt()
        except KmsError as error:
            wait = policy.next_delay(operation, error, retry, clock() - started, budget)
            if wait is None:
                raise
        sleep(wait)
        retry += 1


async def acall_with_retries(policy: RetryPolicy, operation: str,
                             attempt: Callable[[], Awaitable[T]], budget: float,
                             sleep: Callable[[float], Awaitable[None]],
                             clock: Callable[[], float],
                             closed: Callable[[], bool] = lambda: False) -> T:
    """Await ``attempt`` until it returns or ``policy`` gives up.

    ``closed`` returns True once the client was closed, which ends the
    retries too.

    Raises:
        KmsError: the error of the last attempt.
    """
    started = clock()
    retry = 0
    while True:
        try:
            return await attempt()
        except KmsError as error:
            wait = policy.next_delay(operation, error, retry, clock() - started, budget)
            if wait is None or closed():
                raise
        await sleep(wait)
        retry += 1
