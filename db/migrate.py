"""Versioned plain-SQL migrations: db/migrations/NNNN_name.sql, each applied once, in order, in a transaction.

Applied versions are recorded in `schema_migrations` with a checksum of the file. A session-level
advisory lock serialises concurrent runs (two servers starting at once): the second waits, then finds
nothing left to do. An applied file that was edited since, or a recorded version this code does not
know (an older release on a newer database), stops the run with MigrationError before anything changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from db.errors import MigrationError

log = logging.getLogger("db.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key: the bytes "rtvoice" as a number, so it is unlikely to meet another application's.
LOCK_KEY = int.from_bytes(b"rtvoice", "big")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_init.sql"
    sql: str
    checksum: str  # sha256 of the file's text


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a misnamed .sql file or a repeated version is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql (lower case)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} is also {found[version].name}")
        sql = path.read_text(encoding="utf-8")
        found[version] = Migration(version, path.name, sql, hashlib.sha256(sql.encode()).hexdigest())
    return [found[v] for v in sorted(found)]


async def apply_migrations(
    con: asyncpg.Connection, migrations: list[Migration], *, lock_timeout: float = 60.0, sql_timeout: float = 600.0
) -> list[str]:
    """Apply the pending migrations on `con`; the names of those applied (empty when up to date).

    `lock_timeout` bounds the wait for another run's lock, `sql_timeout` each migration's SQL.
    """
    try:
        # asyncpg's own per-statement timeout, which also sends the server a cancel request
        await con.execute("SELECT pg_advisory_lock($1)", LOCK_KEY, timeout=lock_timeout)
    except TimeoutError as exc:
        raise MigrationError(f"another migration held the lock for over {lock_timeout} s") from exc
    try:
        await con.execute(_CREATE_TABLE)
        recorded = {r["version"]: r for r in await con.fetch("SELECT version, name, checksum FROM schema_migrations")}
        _check_history(recorded, migrations)
        applied: list[str] = []
        for migration in migrations:
            if migration.version in recorded:
                continue
            async with con.transaction():
                await con.execute(migration.sql, timeout=sql_timeout)
                await con.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %s", migration.name)
            applied.append(migration.name)
        return applied
    finally:
        # A broken link has released the lock with the session already.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await con.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _check_history(recorded: dict[int, asyncpg.Record], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    unknown = sorted(v for v in recorded if v not in known)
    if unknown:
        names = ", ".join(recorded[v]["name"] for v in unknown)
        raise MigrationError(f"the database has migrations this code does not know ({names}); is it older?")
    for version, row in recorded.items():
        if row["checksum"] != known[version].checksum:
            raise MigrationError(f"{known[version].name} changed after it was applied; add a new migration instead")
