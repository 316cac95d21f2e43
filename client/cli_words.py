"""Command-line helpers shared by kmsctl's friendly commands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any

from client.errors import InvalidParameterError, ServerUnreachableError

# Builds a client from the --socket path (None for the default) and --timeout.
ClientFactory = Callable[[str | None, float], Any]


def find_subcommand(argv: list[str], commands: Collection[str],
                    options_with_values: Collection[str]) -> str | None:
    """Return the first word of ``argv`` that names one of ``commands``.

    Global options before the command are skipped: ``--name VALUE`` for a
    name in ``options_with_values``, ``--name=VALUE`` and ``-h``/``--help``.
    Any other first word means the command line runs something else, so
    the result is None.
    """
    position = 0
    while position < len(argv):
        token = argv[position]
        name = token[2:] if token.startswith("--") else ""
        if name in options_with_values:
            position += 2
        elif (token in ("-h", "--help")
              or name.partition("=")[0] in options_with_values):
            position += 1
        else:
            return token if token in commands else None
    return None


def option_value(name: str, equals: str, value: str, tokens: list[str]) -> str:
    """Return the value of ``--name``: after ``=``, else the next token.

    Raises:
        InvalidParameterError: the option is the last token.
    """
    if equals:
        return value
    if not tokens:
        raise InvalidParameterError(f"The option --{name} needs a value.")
    return tokens.pop(0)


def timeout_seconds(value: str) -> float:
    """Return a ``--timeout`` value as seconds.

    Raises:
        InvalidParameterError: it is not a positive, finite number.
    """
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise InvalidParameterError(
            f"--timeout must be a positive number of seconds, not {value!r}.")
    return seconds


@contextlib.contextmanager
def connected(factory: ClientFactory, socket: str | None,
              timeout: float) -> Iterator[Any]:
    """Yield a client from ``factory`` and close it afterwards.

    Raises:
        ServerUnreachableError: the factory could not connect.
    """
    try:
        client = factory(socket, timeout)
    except OSError as error:
        raise ServerUnreachableError(
            f"The agent socket cannot be reached: {error.strerror or error}.") from None
    try:
        yield client
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
