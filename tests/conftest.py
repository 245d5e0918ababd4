"""Shared fixtures: the real server as a child process, the real embedded LLM, a fake external upstream."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from db import EmbeddedPostgres
from db.embedded import _processes_in
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess, free_port


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    """A scriptable external Ollama stand-in (see tests/support/fake_ollama.py)."""
    upstream = FakeOllama(free_port()).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def local_ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded Ollama-compatible endpoint on the real SmolLM2 model; yields its URL."""
    from tests.support.local_ollama import start_local_ollama

    with start_local_ollama() as proc:
        yield proc.url


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers with extra REALTIME_* settings; all are stopped at the end of the run."""
    started: list[ServerProcess] = []

    def start(extra_env: dict[str, str] | None = None, **env: str) -> ServerProcess:
        base = tmp_path_factory.mktemp("server")
        variables = {f"REALTIME_{k.upper()}": str(v) for k, v in env.items()} | (extra_env or {})
        proc = ServerProcess(variables, base / "state", base / "server.log")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory, local_ollama: str) -> ServerProcess:
    """The server on the real embedded model (SmolLM2 through the Ollama protocol)."""
    return server_factory(ollama_url=local_ollama, llm_model="smollm2:135m", max_output_tokens="48")


@pytest.fixture(scope="session")
def fake_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    """The server on the scriptable fake upstream (for faults and exact-output cases)."""
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off")


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


# ---- PostgreSQL: one real server for the whole run ------------------------------------------------

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The run's PostgreSQL server. Fault tests stop() and start() it on the same data directory."""
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = EmbeddedPostgres(pgdata)
    server.start()
    try:
        yield server
    finally:
        postmaster = server.pid
        server.stop()
        leaked = _processes_in(pgdata)
        shutil.rmtree(pgdata, ignore_errors=True)
        if postmaster is not None:
            _wait_reaped(postmaster)
    assert not leaked, f"PostgreSQL processes outlived the run: {leaked}"


def _wait_reaped(pid: int, timeout: float = 5.0) -> None:
    """The stopped postmaster is not our child: init reaps it, in this sandbox up to ~2 s later. Waiting
    keeps a `pgrep postgres` right after the run from listing its zombie."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


async def create_database(server: EmbeddedPostgres) -> str:
    """A new empty database on the server; its URL."""
    name = f"test_{next(_databases)}"
    con = await asyncpg.connect(server.url)
    try:
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    return server.url_for(name)
