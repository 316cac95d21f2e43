"""Command-line helpers shared by kmsctl's friendly commands."""

from __future__ import annotations

from collections.abc import Collection


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
