"""Fill an agent's store through its API: many keys, many cached secrets.

Keys and secrets are created with concurrent CreateKey and CreateSecret
requests, like any client would, then every secret is read once so its
value sits in the agent's secret value cache. On the 2-core machine of
bench/README.md, 10,000 of each took 20 to 33 seconds.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterator

import trio

from client.aio import AsyncKmsClient

# Concurrent requests while filling a store.
CLIENTS = 32
SECRET_DATA = "s" * 32

Step = Callable[[AsyncKmsClient, int], Awaitable[Any]]


async def _run_all(socket_path: str, count: int, step: Step) -> list[Any]:
    # Run step(client, i) for i in range(count) on CLIENTS connections
    # and return the results in the order of i.
    results: list[Any] = [None] * count
    numbers: Iterator[int] = iter(range(count))

    async def worker() -> None:
        async with AsyncKmsClient(socket_path) as client:
            for number in numbers:
                results[number] = await step(client, number)

    async with trio.open_nursery() as nursery:
        for _ in range(min(CLIENTS, count)):
            nursery.start_soon(worker)
    return results


async def create_aes_keys(socket_path: str, count: int) -> list[str]:
    """Create ``count`` AES-256 HSM keys; return their ids."""
    async def create(client: AsyncKmsClient, number: int) -> str:
        created = await client.call("CreateKey", KeySpec="Aliyun_AES_256",
                                    ProtectionLevel="HSM")
        return created["KeyMetadata"]["KeyId"]

    return await _run_all(socket_path, count, create)


async def create_secrets(socket_path: str, names: list[str]) -> None:
    """Create one secret with a 32-character value for each name."""
    async def create(client: AsyncKmsClient, number: int) -> None:
        await client.call("CreateSecret", SecretName=names[number],
                          SecretData=SECRET_DATA, VersionId="v1")

    await _run_all(socket_path, len(names), create)


async def read_secrets(socket_path: str, names: list[str]) -> None:
    """Read every secret once, which puts its value in the agent's cache."""
    async def read(client: AsyncKmsClient, number: int) -> None:
        await client.call("GetSecretValue", SecretName=names[number])

    await _run_all(socket_path, len(names), read)


async def count_keys(socket_path: str) -> int:
    """Return how many keys the agent's store holds."""
    async with AsyncKmsClient(socket_path) as client:
        listed = await client.call("ListKeys", PageSize=1)
    return listed["TotalCount"]


def secret_names(prefix: str, count: int) -> list[str]:
    """Return ``count`` distinct secret names that start with ``prefix``."""
    return [f"{prefix}{number:06d}" for number in range(count)]
