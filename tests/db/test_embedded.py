"""The embedded PostgreSQL: first start (initdb), stop, start again on the same cluster, and recovery from
what a crash leaves behind (a stale postmaster.pid, a still-running server) without leaking a process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from db import EmbeddedPostgres
from db.embedded import _processes_in


@pytest.fixture(scope="module")
def pgdata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory of this module's own (the run's shared server is left alone)."""
    path = tmp_path_factory.mktemp("embedded") / "data"
    yield path
    assert not _processes_in(path), "a test left a PostgreSQL server running"


async def _select_one(url: str) -> int:
    con = await asyncpg.connect(url)
    try:
        return await con.fetchval("SELECT 1")
    finally:
        await con.close()


async def test_start_stop_and_start_again(pgdata: Path) -> None:
    """start() creates the cluster and answers queries; stop() ends every server process; start() reuses it."""
    server = EmbeddedPostgres(pgdata)
    url = await asyncio.to_thread(server.start)
    try:
        assert (pgdata / "PG_VERSION").exists()
        assert url.startswith("postgresql://postgres")
        assert await _select_one(url) == 1
        assert await asyncio.to_thread(server.start) == url  # already started: same server
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running and not _processes_in(pgdata)
    await asyncio.to_thread(server.stop)  # idempotent

    with EmbeddedPostgres(pgdata) as again:
        assert again.url == url
        assert await _select_one(again.url) == 1
    assert not _processes_in(pgdata)


async def test_stale_pidfile_with_reused_pid(pgdata: Path) -> None:
    """A postmaster.pid naming a live process that is not PostgreSQL (a reused pid) does not block start()."""
    with EmbeddedPostgres(pgdata):
        pidfile = (pgdata / "postmaster.pid").read_text().splitlines()
    pidfile[0] = str(os.getpid())  # this Python process: alive, and certainly not a postmaster
    (pgdata / "postmaster.pid").write_text("\n".join(pidfile) + "\n")
    with EmbeddedPostgres(pgdata) as server:
        assert server.pid != os.getpid()
        assert await _select_one(server.url) == 1
    assert not _processes_in(pgdata)


async def test_restart_after_postmaster_killed(pgdata: Path) -> None:
    """After a SIGKILL of the postmaster (lock files left behind), start() recovers the cluster and its data."""
    server = EmbeddedPostgres(pgdata)
    url = await asyncio.to_thread(server.start)
    con = await asyncpg.connect(url)
    await con.execute("CREATE TABLE IF NOT EXISTS kept (n int); INSERT INTO kept VALUES (42)")
    await con.close()
    assert server.pid is not None
    postmaster = psutil.Process(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while postmaster.is_running() and postmaster.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    survivor = EmbeddedPostgres(pgdata)  # a new process's view: nothing known but the directory
    url = await asyncio.to_thread(survivor.start)
    try:
        con = await asyncpg.connect(url)
        assert await con.fetchval("SELECT n FROM kept") == 42
        await con.close()
    finally:
        await asyncio.to_thread(survivor.stop)
        await asyncio.to_thread(server.stop)  # its server is gone already: nothing to do, no error
    assert not _processes_in(pgdata)


async def test_adopts_a_server_left_running(pgdata: Path) -> None:
    """A server left running by an earlier process (never stopped) is adopted by start() and stopped by stop()."""
    first = EmbeddedPostgres(pgdata)
    await asyncio.to_thread(first.start)
    leftover = first.pid
    first._server = None  # forget it, as a process that died without stopping would

    second = EmbeddedPostgres(pgdata)
    await asyncio.to_thread(second.start)
    assert second.pid == leftover
    await asyncio.to_thread(second.stop)
    assert not _processes_in(pgdata)
