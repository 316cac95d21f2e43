"""Make the next value of a generic secret with a configured rotator.

A rule from ``[[secrets.rotation]]`` matches secret names with a
shell-style pattern; the first match wins. A ``command`` runs without a
shell, with a minimal environment (``PATH`` and the ``KMS_SECRET_*``
variables, never the agent's own variables, which may hold a PIN). It
reads the current value on standard input and writes the next value on
standard output; for a text secret one trailing newline is removed. Its
standard error is discarded, and nothing it prints is ever logged or put
in an error. An ``entry_point`` ``module:function`` is called as
``function(secret_name, current_value)`` and returns str or bytes. A
plain function runs in a worker thread and a coroutine function in the
event loop. Both are cut off after the configured timeout, but a plain
function's thread is abandoned, not stopped.

``RotationBudget`` holds RotateSecret to the cloud's 50 calls per hour,
counted per caller (principal, or uid without one) in this agent.
"""

from __future__ import annotations

import collections
import fnmatch
import importlib
import math
import inspect
import os
import subprocess
from typing import Any, Callable

import trio

from agent.config import RotationRule
from client.errors import LimitExceededError

MAX_VALUE_BYTES = 30720
ROTATIONS_PER_HOUR = 50
_HOUR_SECONDS = 3600.0
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class RotationError(Exception):
    """A rotator failed; the message names the cause, never a value."""


class RotationBudget:
    """RotateSecret calls that ran a rotator, per caller, in a sliding hour.

    Args:
        timer: returns the current time in seconds.
        limit: calls allowed per caller in any hour.
    """

    def __init__(self, timer: Callable[[], float], limit: int = ROTATIONS_PER_HOUR):
        self.timer = timer
        self.limit = limit
        self._calls: dict[Any, collections.deque[float]] = {}

    def take(self, caller: Any) -> None:
        """Count one rotation of ``caller``.

        Raises:
            LimitExceededError: the caller rotated ``limit`` times in the
                last hour; the message gives the seconds until the next one.
        """
        now = self.timer()
        calls = self._calls.setdefault(caller, collections.deque())
        while calls and calls[0] <= now - _HOUR_SECONDS:
            calls.popleft()
        if len(calls) >= self.limit:
            wait = math.ceil(calls[0] + _HOUR_SECONDS - now)
            raise LimitExceededError(
                f"RotateSecret is limited to {self.limit} calls per hour; "
                f"retry in {wait} s.")
        calls.append(now)
        # Callers whose hour has passed are dropped, so the map stays small.
        for other in [c for c, times in self._calls.items()
                      if times and times[-1] <= now - _HOUR_SECONDS]:
            del self._calls[other]


class Rotator:
    """Find the rule for a secret and run it; see the module docstring."""

    def __init__(self, rules: tuple[RotationRule, ...], timeout: float):
        self.rules = rules
        self.timeout = timeout

    def rule_for(self, secret_name: str) -> RotationRule | None:
        """Return the first rule whose pattern matches ``secret_name``."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(secret_name, rule.pattern):
                return rule
        return None

    async def next_value(self, rule: RotationRule, secret_name: str,
                         version_id: str, data_type: str, current: bytes) -> bytes:
        """Run ``rule`` and return the checked next value.

        Raises:
            RotationError: the rotator failed, timed out, or returned an
                empty, oversized or (for text) non-UTF-8 value.
        """
        with trio.move_on_after(self.timeout) as scope:
            if rule.command is not None:
                output = await _run_command(
                    rule.command, _environment(secret_name, version_id, data_type),
                    current)
            else:
                output = await _call_entry_point(rule.entry_point or "",
                                                 secret_name, current)
        if scope.cancelled_caught:
            raise RotationError(f"the rotator timed out after {self.timeout:g} s")
        return _check_output(output, data_type)


def _environment(secret_name: str, version_id: str, data_type: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", _DEFAULT_PATH),
        "KMS_SECRET_NAME": secret_name,
        "KMS_SECRET_VERSION_ID": version_id,
        "KMS_SECRET_DATA_TYPE": data_type,
    }


async def _run_command(argv: tuple[str, ...], env: dict[str, str],
                       current: bytes) -> bytes:
    try:
        process = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError as exc:
        raise RotationError(
            f"the rotation command {argv[0]!r} cannot start: {exc.strerror}") from None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, process.stdin, current)
            output = await _read_limited(process.stdout)
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    if status != 0:
        raise RotationError(f"the rotation command exited with status {status}")
    return output


async def _feed(stream: Any, data: bytes) -> None:
    # A command that exits without reading its input is not an error.
    try:
        async with stream:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _read_limited(stream: Any) -> bytes:
    chunks = bytearray()
    async with stream:
        while len(chunks) <= MAX_VALUE_BYTES + 2:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            chunks += chunk
    return bytes(chunks)


def _load(entry_point: str) -> Callable[..., Any]:
    module_name, _, attribute = entry_point.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise RotationError(
            f"the entry point {entry_point!r} cannot be loaded: "
            f"{type(exc).__name__}") from None
    if not callable(target):
        raise RotationError(f"the entry point {entry_point!r} is not callable")
    return target


async def _call_entry_point(entry_point: str, secret_name: str,
                            current: bytes) -> bytes:
    function = _load(entry_point)
    try:
        if inspect.iscoroutinefunction(function):
            result = await function(secret_name, current)
        else:
            result = await trio.to_thread.run_sync(
                function, secret_name, current, abandon_on_cancel=True)
    except Exception as exc:
        # The exception text may quote the value, so only its type is kept.
        raise RotationError(
            f"the entry point {entry_point!r} raised {type(exc).__name__}") from None
    if isinstance(result, str):
        try:
            return result.encode("utf-8")
        except UnicodeEncodeError:
            raise RotationError("the rotator returned text that is not UTF-8") from None
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    raise RotationError(f"the entry point {entry_point!r} returned neither str "
                        "nor bytes")


def _check_output(output: bytes, data_type: str) -> bytes:
    if data_type == "text":
        if output.endswith(b"\r\n"):
            output = output[:-2]
        elif output.endswith(b"\n"):
            output = output[:-1]
        try:
            output.decode("utf-8")
        except UnicodeDecodeError:
            raise RotationError("the rotator returned text that is not UTF-8") from None
    if not output:
        raise RotationError("the rotator returned an empty value")
    if len(output) > MAX_VALUE_BYTES:
        raise RotationError(
            f"the rotator returned more than {MAX_VALUE_BYTES} bytes")
    return output
