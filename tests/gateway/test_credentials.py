"""The credentials file, the nonce cache and the [gateway] settings."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from agent.gateway.credentials import (
    CredentialsError, CredentialsFile, load_credentials, parse_credentials,
)
from agent.gateway.replay import NonceCache
from agent.gateway.settings import GATEWAY_KEYS, DEFAULT_LISTEN, gateway_config
from tests.gateway.harness import client_private_key, public_pem

SECRET = "s" * 16


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


# --- credentials -------------------------------------------------------------


def test_access_key_parsed():
    """An access key table gives its principal and secret."""
    parsed = parse_credentials({"access_keys": {
        "LTAIabcd": {"principal": "app", "secret": SECRET}}})
    key = parsed.access_keys["LTAIabcd"]
    assert key.principal == "app"
    assert key.secret == SECRET
    assert SECRET not in repr(key)


def test_client_key_window_parsed():
    """A client key is valid only inside its window."""
    parsed = parse_credentials({"client_keys": {"KAAP.x1": {
        "principal": "app", "public_key": public_pem(client_private_key()),
        "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}}})
    key = parsed.client_keys["KAAP.x1"]
    utc = datetime.timezone.utc
    assert key.valid_at(datetime.datetime(2026, 6, 1, tzinfo=utc))
    assert not key.valid_at(datetime.datetime(2025, 6, 1, tzinfo=utc))
    assert not key.valid_at(datetime.datetime(2027, 1, 1, tzinfo=utc))


@pytest.mark.parametrize("raw, problem", [
    ({"tokens": {}}, "unknown table"),
    ({"access_keys": {"LTAIabcd": {"principal": "app", "secret": "short"}}},
     "at least 16"),
    ({"access_keys": {"a b": {"principal": "app", "secret": SECRET}}}, "an id is"),
    ({"access_keys": {"LTAIabcd": {"secret": SECRET}}}, "principal"),
    ({"access_keys": {"LTAIabcd": {"principal": "app", "secret": SECRET,
                                   "colour": "red"}}}, "unknown field"),
    ({"client_keys": {"KAAP.x1": {"principal": "app", "public_key": "junk"}}},
     "RSA public key"),
    ({"client_keys": {"KAAP.x1": {"principal": "app",
                                  "public_key": public_pem(client_private_key()),
                                  "not_after": "tomorrow"}}}, "UTC time"),
])
def test_invalid_entries_rejected(raw, problem):
    """Each malformed entry raises CredentialsError naming the problem."""
    with pytest.raises(CredentialsError, match=problem):
        parse_credentials(raw)


def test_readable_file_rejected(tmp_path):
    """A credentials file readable by group is refused."""
    path = write(tmp_path / "c.toml", "", mode=0o640)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials(path)


def test_file_reread_after_change(tmp_path):
    """A change on disk is picked up at the next look."""
    path = write(tmp_path / "c.toml", "")
    credentials = CredentialsFile(path)
    assert credentials.current().access_keys == {}
    write(path, f'[access_keys.LTAIabcd]\nprincipal = "app"\nsecret = "{SECRET}"\n')
    assert "LTAIabcd" in credentials.current().access_keys


def test_broken_reload_keeps_previous(tmp_path):
    """A file that stops parsing keeps the last good credentials."""
    path = write(tmp_path / "c.toml",
                 f'[access_keys.LTAIabcd]\nprincipal = "app"\nsecret = "{SECRET}"\n')
    credentials = CredentialsFile(path)
    credentials.current()
    write(path, "[access_keys.LTAIabcd\n")
    assert "LTAIabcd" in credentials.current().access_keys
    assert "invalid TOML" in credentials.error


def test_missing_file_means_no_credentials(tmp_path):
    """No file means no credentials and no error."""
    credentials = CredentialsFile(tmp_path / "absent.toml")
    assert credentials.current().client_keys == {}
    assert credentials.error is None


# --- nonce cache -------------------------------------------------------------


def test_nonce_seen_twice_refused():
    """A nonce is accepted once per key."""
    cache = NonceCache(lambda: 0.0)
    assert cache.check_and_add("k1", "n")
    assert not cache.check_and_add("k1", "n")
    assert cache.check_and_add("k2", "n")


def test_nonce_expires_after_window():
    """A nonce is forgotten after the window."""
    now = [0.0]
    cache = NonceCache(lambda: now[0], window=10)
    cache.check_and_add("k", "n")
    now[0] = 11.0
    assert cache.check_and_add("k", "n")
    assert len(cache) == 1


def test_nonce_cache_bounded():
    """The cache forgets its oldest nonce when full."""
    cache = NonceCache(lambda: 0.0, max_entries=2)
    for nonce in ("a", "b", "c"):
        cache.check_and_add("k", nonce)
    assert len(cache) == 2
    assert cache.check_and_add("k", "a")


# --- settings ----------------------------------------------------------------


def settings(**values):
    defaults = {key: default for key, (_, default) in GATEWAY_KEYS.items()}
    return gateway_config({**defaults, **values}, Path("/etc/kms"), Path("/var/kms"))


def test_settings_defaults():
    """The gateway is off and listens on loopback by default."""
    config = settings()
    assert not config.enabled
    assert config.listen == DEFAULT_LISTEN
    assert config.credentials_file == Path("/var/kms/gateway-credentials.toml")


def test_unix_socket_only():
    """A Unix socket alone turns the TCP listener off."""
    config = settings(unix_socket="gw.sock")
    assert config.listen is None
    assert config.unix_socket == Path("/etc/kms/gw.sock")


@pytest.mark.parametrize("values, problem", [
    ({"listen": "0.0.0.0:443"}, "not a loopback address"),
    ({"listen": "localhost:80"}, "not HOST:PORT"),
    ({"listen": "127.0.0.1:70000"}, "outside 0..65535"),
    ({"tls_cert": "c.pem"}, "both tls_cert and tls_key"),
    ({"unix_socket_mode": "0666"}, "within 0770"),
    ({"max_body_bytes": 10}, "outside"),
])
def test_invalid_settings_rejected(values, problem):
    """Invalid values raise ValueError naming the key."""
    with pytest.raises(ValueError, match=problem):
        settings(**values)


def test_public_address_with_tls():
    """A public address is allowed with TLS."""
    assert settings(listen="0.0.0.0:443", tls=True).listen == ("0.0.0.0", 443)
