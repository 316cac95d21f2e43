"""The daemon under real concurrency on a real SoftHSM2 token.

SoftHSM2 crashes under concurrent threads unless it is initialised with
OS locking. These tests drive the daemon from many clients at once while
its keystore runs every call in worker threads, and check every result
and that the process is still alive afterwards.
"""

from __future__ import annotations

import threading

import pytest
import trio

from client import AsyncKmsClient, KmsClient
from tests.integration.conftest import start_agent

pytestmark = pytest.mark.hsm


@pytest.mark.parametrize("inline", ["true", "false"])
async def test_mixed_load_does_not_crash(tmp_path, inline):
    """Key creation and crypto from 24 clients at once, all results right."""
    agent = start_agent(
        tmp_path / f"agent-{inline}",
        extra_keystore=f"inline_crypto = {inline}\nworker_threads = 4")
    failures = []
    try:
        async def worker(number: int) -> None:
            async with AsyncKmsClient(agent.socket) as client:
                level = "HSM" if number % 2 else "SOFTWARE"
                meta = (await client.create_key(protection_level=level))
                key_id = meta["KeyMetadata"]["KeyId"]
                for index in range(40):
                    text = f"{number}:{index}".encode()
                    blob = (await client.encrypt(key_id, text))["CiphertextBlob"]
                    if (await client.decrypt(blob))["Plaintext"] != text:
                        failures.append(text)
                    if index % 10 == 0:
                        await client.create_key()
                        await client.generate_data_key(key_id, number_of_bytes=64)

        async with trio.open_nursery() as nursery:
            for number in range(24):
                nursery.start_soon(worker, number)
        assert agent.process.poll() is None
        with KmsClient(agent.socket) as client:
            assert client.call("ListKeys")["TotalCount"] == 24 * 5
    finally:
        code = agent.stop()
    assert failures == []
    assert code == 0


def test_blocking_clients_in_threads(shared_agent):
    """Eight threads with their own sync clients run side by side."""
    errors = []

    def work() -> None:
        try:
            with KmsClient(shared_agent.socket) as client:
                key_id = client.create_key()["KeyMetadata"]["KeyId"]
                for index in range(50):
                    blob = client.encrypt(key_id, b"%d" % index)["CiphertextBlob"]
                    assert client.decrypt(blob)["Plaintext"] == b"%d" % index
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
