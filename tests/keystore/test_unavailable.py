"""The stand-in for a keystore that failed to open."""

from __future__ import annotations

import inspect

import pytest

from agent.keystore.base import Keystore
from agent.keystore.unavailable import UnavailableKeystore
from client.errors import ServiceUnavailableError

COROUTINES = [name for name, _ in inspect.getmembers(
    Keystore, inspect.iscoroutinefunction) if name != "aclose"]


@pytest.mark.parametrize("name", COROUTINES)
async def test_every_operation_is_unavailable(name):
    """Each keystore coroutine raises ServiceUnavailable (503)."""
    keystore = UnavailableKeystore("broken", "wrong PIN")
    method = getattr(keystore, name)
    arguments = [None] * (len(inspect.signature(getattr(Keystore, name)).parameters) - 1)
    with pytest.raises(ServiceUnavailableError) as caught:
        await method(*arguments)
    assert caught.value.http_status == 503
    assert "wrong PIN" not in caught.value.message


def test_status_not_ready():
    """The stand-in reports itself as not ready."""
    assert UnavailableKeystore("broken", "x").status()["ready"] is False
