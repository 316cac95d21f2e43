"""SIGTERM on the real daemon while a slow request runs.

A secret whose rotation command sleeps keeps one RotateSecret request in
flight for as long as the test needs, so the drain has something to
wait for.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from client import KmsClient, errors
from tests.integration.conftest import launch
from tests.integration.ops_support import prepare, wait_for_log

pytestmark = pytest.mark.hsm


def slow_rotation(seconds: int) -> str:
    # Short sleeps finish and print the next value. Long ones are cut off,
    # and exec leaves no grandchild behind when the shell is killed.
    script = f"sleep {seconds}; echo next" if seconds < 10 else f"exec sleep {seconds}"
    return f"""
[secrets]
rotation_timeout = 300

[[secrets.rotation]]
pattern = "slow/*"
command = ["sh", "-c", "{script}"]
"""


@pytest.fixture
def started():
    """The agents a test starts; any still running at the end is killed."""
    agents = []
    yield agents
    for agent in agents:
        if agent.process.poll() is None:
            agent.stop(signal.SIGKILL)


def start(tmp_path, started, sleep_seconds: int, drain_timeout: int):
    config = prepare(tmp_path / "agent", extra=slow_rotation(sleep_seconds))
    text = config.read_text().replace("drain_timeout = 10",
                                      f"drain_timeout = {drain_timeout}")
    config.write_text(text)
    agent = launch(config, config.parent)
    started.append(agent)
    with KmsClient(agent.socket) as client:
        client.call("CreateSecret", SecretName="slow/x", SecretData="first",
                    VersionId="v1")
    return agent


class SlowRotation:
    """Run RotateSecret in a thread and record its outcome."""

    def __init__(self, agent):
        self.agent = agent
        self.outcome: list[str] = []
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            with KmsClient(self.agent.socket, timeout=300) as client:
                client.call("RotateSecret", SecretName="slow/x", VersionId="v2")
            self.outcome.append("OK")
        except errors.KmsError as error:
            self.outcome.append(error.code)

    def start(self) -> "SlowRotation":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.command_running():
            assert self.outcome == [], "RotateSecret ended before its command ran"
            assert time.monotonic() < deadline, "the rotation command never started"
            time.sleep(0.02)
        return self

    def command_running(self) -> bool:
        # Any thread of the agent may have started the command.
        tasks = Path(f"/proc/{self.agent.process.pid}/task")
        return any((task / "children").read_text().strip()
                   for task in tasks.iterdir())


def test_drain_finishes_running_request(tmp_path, started):
    """A request running at SIGTERM completes; the agent then exits 0."""
    agent = start(tmp_path, started, sleep_seconds=2, drain_timeout=120)
    rotation = SlowRotation(agent).start()
    assert agent.stop(signal.SIGTERM, timeout=120) == 0
    rotation.thread.join(60)
    assert rotation.outcome == ["OK"]


def test_drain_deadline_cancels_request(tmp_path, started):
    """A request that outlasts drain_timeout is cancelled and logged."""
    agent = start(tmp_path, started, sleep_seconds=120, drain_timeout=1)
    rotation = SlowRotation(agent).start()
    assert agent.stop(signal.SIGTERM, timeout=120) == 0
    rotation.thread.join(60)
    assert rotation.outcome != ["OK"]
    assert "drain timed out" in agent.log_text()


def test_second_sigterm_stops_drain(tmp_path, started):
    """A second SIGTERM ends the drain at once, and the agent still exits 0."""
    agent = start(tmp_path, started, sleep_seconds=120, drain_timeout=300)
    rotation = SlowRotation(agent).start()
    agent.process.send_signal(signal.SIGTERM)
    wait_for_log(agent, '"draining"')
    assert agent.stop(signal.SIGTERM, timeout=120) == 0
    rotation.thread.join(60)
    assert rotation.outcome != ["OK"]
    assert "second stop signal" in agent.log_text()
    assert '"stopped"' in agent.log_text()
