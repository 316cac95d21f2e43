"""The option and client helpers shared by kmsctl's friendly commands."""

from __future__ import annotations

import pytest

from client import cli_words
from client.errors import InvalidParameterError, ServerUnreachableError


@pytest.mark.parametrize("text, seconds", [("2", 2.0), ("0.5", 0.5), ("1e3", 1000.0)])
def test_timeout_accepts_positive_numbers(text, seconds):
    """A positive, finite --timeout is returned as seconds."""
    assert cli_words.timeout_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "inf", "nan", "soon", ""])
def test_timeout_rejects_the_rest(text):
    """Zero, negative, infinite, NaN and non-numbers are InvalidParameter."""
    with pytest.raises(InvalidParameterError, match="--timeout must be a positive"):
        cli_words.timeout_seconds(text)


def test_option_value_after_equals_or_next():
    """--name=value keeps the rest of the tokens; --name value takes the next one."""
    tokens = ["next", "rest"]
    assert cli_words.option_value("socket", "=", "a.sock", tokens) == "a.sock"
    assert tokens == ["next", "rest"]
    assert cli_words.option_value("socket", "", "", tokens) == "next"
    assert tokens == ["rest"]
    with pytest.raises(InvalidParameterError, match="--socket needs a value"):
        cli_words.option_value("socket", "", "", [])


class Closing:
    closed = False

    def close(self):
        self.closed = True


def test_connected_closes_the_client():
    """The client is closed after the block, also when the block raises."""
    client = Closing()
    with pytest.raises(RuntimeError):
        with cli_words.connected(lambda socket, timeout: client, None, 1.0):
            raise RuntimeError("inside")
    assert client.closed


def test_connected_reports_an_unreachable_agent():
    """A factory that cannot connect becomes ServerUnreachable naming the cause."""
    def unreachable(socket, timeout):
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ServerUnreachableError, match="No such file"):
        with cli_words.connected(unreachable, "/nowhere.sock", 1.0):
            pass
