"""Create SoftHSM2 tokens for development, the installer and tests.

``init_token(DIR, LABEL)`` writes DIR/softhsm2.conf with the tokens in
DIR/tokens and initialises a token there with random PINs. The user PIN
goes to DIR/pin (mode 0600), which every token in DIR shares. The SO PIN
is discarded, so a lost user PIN means creating a new token.
``python -m agent.keystore.softhsm DIR LABEL`` does the same, and does
nothing when the token exists already.

softhsm2-util accepts PINs only as arguments, which ``ps`` shows while it
runs. So the token is created with throwaway PINs, and a child process
reads the real ones from a pipe and sets them with C_SetPIN.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

_CONF_TEMPLATE = """\
# SoftHSM2 configuration written by kms-agent.
directories.tokendir = {tokendir}
objectstore.backend = file
log.level = ERROR
slots.removable = false
"""

_LABEL_LINE = re.compile(r"^\s*Label:\s*(.*?)\s*$", re.MULTILINE)


class TokenSetupError(RuntimeError):
    """A SoftHSM2 token could not be created; the message names the cause."""


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """The paths of a token's SoftHSM2 configuration and user PIN file."""

    conf_path: Path
    pin_file: Path
    label: str


def find_softhsm_module() -> str | None:
    """Return the path of the SoftHSM2 PKCS#11 module, or None if not found."""
    for candidate in _MODULE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


def init_token(directory: Path, label: str) -> TokenInfo:
    """Create the token ``label`` in ``directory`` unless it exists.

    Raises:
        TokenSetupError: SoftHSM2 is missing, the token exists without a
            PIN file, or softhsm2-util or the PIN change failed.
    """
    directory = directory.absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "tokens").mkdir(mode=0o700, exist_ok=True)
    conf_path = directory / "softhsm2.conf"
    if not conf_path.exists():
        content = _CONF_TEMPLATE.format(tokendir=directory / "tokens")
        conf_path.write_text(content, encoding="utf-8")
    info = TokenInfo(conf_path, directory / "pin", label)
    if label in _token_labels(conf_path):
        if not info.pin_file.exists():
            raise TokenSetupError(
                f"token {label!r} exists in {directory} but its PIN file "
                f"{info.pin_file} is missing"
            )
        return info
    pin = _read_or_create_pin(info.pin_file)
    _create_token(info, pin)
    return info


def _softhsm2_util(conf_path: Path, *arguments: str) -> str:
    executable = shutil.which("softhsm2-util")
    if executable is None:
        raise TokenSetupError(
            "softhsm2-util is not on PATH; install SoftHSM2 (package softhsm2)"
        )
    env = dict(os.environ, SOFTHSM2_CONF=str(conf_path))
    result = subprocess.run([executable, *arguments], env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        # The arguments may contain the throwaway PINs: name only the first.
        raise TokenSetupError(
            f"softhsm2-util {arguments[0]} failed: {result.stderr.strip()}"
        )
    return result.stdout


def _token_labels(conf_path: Path) -> set[str]:
    output = _softhsm2_util(conf_path, "--show-slots")
    return {label for label in _LABEL_LINE.findall(output) if label}


def _read_or_create_pin(pin_file: Path) -> str:
    if pin_file.exists():
        return pin_file.read_text(encoding="utf-8").strip()
    pin = secrets.token_urlsafe(24)
    temporary = pin_file.with_name(f".{pin_file.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(pin + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, pin_file)
    except FileExistsError:
        # Another process created the file first: use its PIN.
        return pin_file.read_text(encoding="utf-8").strip()
    finally:
        temporary.unlink(missing_ok=True)
    return pin


def _create_token(info: TokenInfo, pin: str) -> None:
    module = find_softhsm_module()
    if module is None:
        raise TokenSetupError("the SoftHSM2 module libsofthsm2.so was not found")
    throwaway_pin = secrets.token_hex(16)
    throwaway_so_pin = secrets.token_hex(16)
    _softhsm2_util(info.conf_path, "--init-token", "--free", "--label", info.label,
                   "--pin", throwaway_pin, "--so-pin", throwaway_so_pin)
    request = {
        "module": module,
        "label": info.label,
        "old_pin": throwaway_pin,
        "new_pin": pin,
        "old_so_pin": throwaway_so_pin,
        "new_so_pin": secrets.token_urlsafe(24),
    }
    try:
        _change_pins(info.conf_path, request)
    except TokenSetupError:
        # A token left with the throwaway PINs must not be used.
        _softhsm2_util(info.conf_path, "--delete-token", "--token", info.label)
        raise


def _change_pins(conf_path: Path, request: dict) -> None:
    # The child loads SoftHSM2 itself: a module loaded in this process
    # would tie it to one SOFTHSM2_CONF and clash with the keystore loader.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = dict(os.environ, SOFTHSM2_CONF=str(conf_path), PYTHONPATH=python_path)
    code = "from agent.keystore.softhsm import _change_pins_child; _change_pins_child()"
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(request),
                            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TokenSetupError(
            f"changing the PINs of token {request['label']!r} failed: "
            f"{result.stderr.strip()[-500:]}"
        )


def _change_pins_child() -> None:
    """Set the PINs named in the JSON request on stdin (child process only)."""
    import pkcs11

    request = json.loads(sys.stdin.read())
    token = pkcs11.lib(request["module"]).get_token(token_label=request["label"])
    with token.open(rw=True, so_pin=request["old_so_pin"]) as session:
        session.set_pin(request["old_so_pin"], request["new_so_pin"])
    with token.open(rw=True, user_pin=request["old_pin"]) as session:
        session.set_pin(request["old_pin"], request["new_pin"])


def main(argv: list[str] | None = None) -> int:
    """Create a SoftHSM2 token from the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.keystore.softhsm",
        description="Create a SoftHSM2 token for kms-agent unless it exists.",
    )
    parser.add_argument("directory", type=Path,
                        help="directory for softhsm2.conf, tokens/ and the PIN file")
    parser.add_argument("label", help="token label")
    arguments = parser.parse_args(argv)
    try:
        info = init_token(arguments.directory, arguments.label)
    except (TokenSetupError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"token {info.label!r} ready: softhsm2_conf = {info.conf_path}, "
          f"pin_file = {info.pin_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
