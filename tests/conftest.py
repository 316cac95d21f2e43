"""HSM fixtures: one SoftHSM2 token directory for the whole test session.

SoftHSM2 reads SOFTHSM2_CONF once per process, so every token a pytest
process uses lives in one directory. The session fixture ``softhsm``
creates it and sets SOFTHSM2_CONF before any test loads the module;
``make_token`` adds tokens with new labels there. Without softhsm2-util or
the module, HSM tests are skipped, or fail when CI=true. Mark HSM tests
with ``@pytest.mark.hsm``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from agent.keystore import KeystoreSettings
from agent.keystore.softhsm import TokenInfo, find_softhsm_module, init_token


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "demonstration: shows a failure mode of a dependency; skipped when the "
        "failure does not show",
    )


@dataclasses.dataclass
class SoftHsm:
    """The session's SoftHSM2 directory, module and default token."""

    module: str
    directory: Path
    token: TokenInfo
    _labels: itertools.count = dataclasses.field(default_factory=itertools.count)

    def make_token(self, prefix: str = "test") -> TokenInfo:
        """Create a token with a new label in the session's directory."""
        return init_token(self.directory, f"{prefix}-{next(self._labels)}")

    def settings(self, token: TokenInfo | None = None, **overrides) -> KeystoreSettings:
        """Return pkcs11 keystore settings for ``token`` (default token if None)."""
        token = token or self.token
        fields = {
            "name": "test",
            "type": "pkcs11",
            "module": self.module,
            "token_label": token.label,
            "pin_file": token.pin_file,
            "pin_env": None,
            "softhsm2_conf": token.conf_path,
        }
        fields.update(overrides)
        return KeystoreSettings(**fields)


def _softhsm_missing_reason() -> str | None:
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not on PATH (install the softhsm2 package)"
    if find_softhsm_module() is None:
        return "the SoftHSM2 module libsofthsm2.so was not found"
    return None


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> SoftHsm:
    """Create the session's SoftHSM2 directory with one token, or skip."""
    reason = _softhsm_missing_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SoftHSM2 is required under CI: {reason}")
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("softhsm")
    os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
    token = init_token(directory, "kms-test")
    return SoftHsm(find_softhsm_module(), directory, token)


@pytest.fixture
def make_token(softhsm) -> Callable[..., TokenInfo]:
    """Return a factory of fresh tokens in the session's directory."""
    return softhsm.make_token


@pytest.fixture
def hsm_settings(softhsm) -> Callable[..., KeystoreSettings]:
    """Return a factory of keystore settings for the session's tokens."""
    return softhsm.settings
