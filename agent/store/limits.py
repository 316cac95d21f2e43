"""Resource count limits, checked in the transaction that inserts.

``ResourceLimits`` caps the keys, aliases and secrets of each keystore.
``versions`` caps the versions of one key. The CreateKeyVersion
operation checks it (``agent.keys.versions``), because automatic
rotation is not limited. The SQLite store calls ``check_count`` inside
the IMMEDIATE transaction of the insert, which holds the database's
write lock, so concurrent creates (from this agent or another on the
same file) cannot pass a limit together. A limit of None is no limit.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from agent.store.base import LimitError

KEYS = "keys"
ALIASES = "aliases"
SECRETS = "secrets"

# Each count takes the keystore as its one parameter.
_COUNT_SQL = {
    KEYS: "SELECT count(*) FROM keys WHERE keystore = ?",
    ALIASES: "SELECT count(*) FROM aliases JOIN keys USING (key_id) "
             "WHERE keys.keystore = ?",
    SECRETS: "SELECT count(*) FROM secrets WHERE keystore = ?",
}
_NOUNS = {KEYS: "keys", ALIASES: "aliases", SECRETS: "secrets"}

# Indexes that keep the counts cheap; appended to the store's migrations.
LIMITS_MIGRATION = """
    CREATE INDEX keys_by_keystore ON keys (keystore);
    CREATE INDEX secrets_by_keystore ON secrets (keystore);
"""


@dataclasses.dataclass(frozen=True)
class ResourceLimits:
    """The maximum keys, aliases and secrets per keystore, and versions per key."""

    keys: int | None = None
    aliases: int | None = None
    versions: int | None = None
    secrets: int | None = None


def check_count(conn: sqlite3.Connection, limits: ResourceLimits, kind: str,
                keystore: str) -> None:
    """Refuse one more resource of ``kind`` in ``keystore`` past its limit.

    Call it inside the write transaction, before the insert.

    Raises:
        LimitError: the keystore has reached the limit; the message is
            safe to show to the caller.
    """
    limit = getattr(limits, kind)
    if limit is None:
        return
    count = conn.execute(_COUNT_SQL[kind], (keystore,)).fetchone()[0]
    if count >= limit:
        raise LimitError(
            f"The keystore {keystore} has reached its limit of {limit} "
            f"{_NOUNS[kind]}; delete some, or raise [limits] {kind} in the agent "
            "configuration.")


def alias_keystore(conn: sqlite3.Connection, key_id: str) -> str | None:
    """Return the keystore of the key an alias is created for, or None."""
    row = conn.execute("SELECT keystore FROM keys WHERE key_id = ?",
                       (key_id,)).fetchone()
    return None if row is None else row[0]
