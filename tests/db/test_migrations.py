"""Migrations: applied from empty, each once (re-runs and concurrent runs are no-ops), each in a
transaction, and refused when the files and the recorded history disagree."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from db import Database, EmbeddedPostgres, MigrationError
from db.migrate import MIGRATIONS_DIR, load_migrations
from tests.db.conftest import FAST_HASHER, create_database

TABLES = {"users", "conversations", "messages", "ws_tickets", "schema_migrations"}
SHIPPED = [(m.version, m.name) for m in load_migrations()]
NEXT = f"{len(SHIPPED) + 1:04d}"  # the version a test's extra migration takes, after the shipped ones


async def _fresh(postgres: EmbeddedPostgres) -> Database:
    return await Database.connect(await create_database(postgres), password_hasher=FAST_HASHER)


async def _tables(db: Database) -> set[str]:
    async with db.connection() as con:
        rows = await con.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def _recorded(db: Database) -> list[tuple[int, str]]:
    async with db.connection() as con:
        rows = await con.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(r["version"], r["name"]) for r in rows]


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


async def test_from_empty_then_rerun_is_a_noop(postgres: EmbeddedPostgres) -> None:
    """A new database gets every migration once; a second run applies nothing."""
    db = await _fresh(postgres)
    try:
        names = [m.name for m in load_migrations()]
        assert names[0] == "0001_init.sql"
        assert await db.migrate() == names
        assert await _tables(db) >= TABLES
        assert await db.migrate() == []
        assert [name for _, name in await _recorded(db)] == names
    finally:
        await db.close()


async def test_concurrent_runs_apply_each_migration_once(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    """Two pools migrating one database at once both succeed, and each migration is applied exactly once."""
    directory = _copy_migrations(tmp_path)
    # a slow second migration keeps the first runner inside the lock while the other waits for it
    (directory / f"{NEXT}_slow.sql").write_text("SELECT pg_sleep(0.3); CREATE TABLE slow_marker (id int);")
    url = await create_database(postgres)
    first = await Database.connect(url, password_hasher=FAST_HASHER)
    second = await Database.connect(url, password_hasher=FAST_HASHER)
    try:
        results = await asyncio.gather(first.migrate(directory), second.migrate(directory))
        applied = [name for result in results for name in result]
        assert sorted(applied) == [name for _, name in SHIPPED] + [f"{NEXT}_slow.sql"]
        assert [] in results  # the loser found nothing left to do
        assert await _recorded(first) == [*SHIPPED, (int(NEXT), f"{NEXT}_slow.sql")]
    finally:
        await first.close()
        await second.close()


async def test_failing_migration_leaves_nothing_behind(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    """A migration that fails half-way is rolled back whole and not recorded; the earlier ones stay."""
    directory = _copy_migrations(tmp_path)
    (directory / f"{NEXT}_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT no_such_function();")
    db = await _fresh(postgres)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await db.migrate(directory)
        assert "half_done" not in await _tables(db)
        assert await _recorded(db) == SHIPPED
        (directory / f"{NEXT}_broken.sql").write_text("CREATE TABLE half_done (id int);")
        assert await db.migrate(directory) == [f"{NEXT}_broken.sql"]
    finally:
        await db.close()


async def test_edited_or_unknown_migration_is_refused(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    """An applied file edited since, or a recorded version missing from the files, stops migrate()."""
    directory = _copy_migrations(tmp_path)
    (directory / f"{NEXT}_extra.sql").write_text("CREATE TABLE extra (id int);")
    db = await _fresh(postgres)
    try:
        await db.migrate(directory)
        (directory / f"{NEXT}_extra.sql").write_text("CREATE TABLE extra (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await db.migrate(directory)
        (directory / f"{NEXT}_extra.sql").unlink()
        with pytest.raises(MigrationError, match="does not know"):
            await db.migrate(directory)
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_a.sql": "", "0001_b.sql": ""}, "version 1 is also"),
        ({"1_short.sql": ""}, "NNNN_name.sql"),
        ({"0001_Upper.sql": ""}, "NNNN_name.sql"),
    ],
)
def test_bad_migration_files_are_refused(tmp_path: Path, files: dict[str, str], message: str) -> None:
    """Repeated versions and misnamed files are errors, not silently skipped."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)
