"""Run one shell command in a user's workspace, in a sandbox, streaming its output.

BubblewrapSandbox (default): `bwrap` with every namespace unshared (no network: only a loopback
device), a read-only /usr, a read-only tmpfs root, small size-capped tmpfs /tmp and /dev/shm, the
workspace the only writable host directory, no capabilities, no further user namespaces. Limits are
rlimits set by `prlimit` before bwrap starts (CPU seconds, address space, processes, file size, open
files, no core dumps). When the server runs as root, the command runs as a per-user unprivileged uid
(`setpriv`), because the kernel exempts uid 0 from RLIMIT_NPROC. The wall-clock timeout, the output
cap and cancellation kill the whole process group; bwrap's --die-with-parent and its PID namespace
take every process inside with it.

DockerSandbox: the same command in a throwaway container (no network, read-only root, limits), through
the Docker SDK, for hosts where the operator enables it (REALTIME_SANDBOX=docker).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import functools
import logging
import os
import shutil
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from realtime.errors import ServerError

log = logging.getLogger("realtime.tools.sandbox")

READ_SIZE = 4096
OutputSink = Callable[[str], Awaitable[None]]


class SandboxUnavailable(ServerError):
    code = "sandbox_unavailable"
    safe_message = "Commands cannot run on this server (no sandbox is available)."


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    cpu_time: int = 10  # seconds of CPU (RLIMIT_CPU)
    max_memory_size: int = 512 << 20  # address space (RLIMIT_AS)
    max_processes: int = 64  # RLIMIT_NPROC (per sandbox uid)
    max_file_size: int = 16 << 20  # RLIMIT_FSIZE: largest file a command can write
    max_open_files: int = 256
    max_tmp_size: int = 16 << 20  # /tmp and /dev/shm tmpfs sizes
    max_output_size: int = 64 << 10  # output kept and streamed; the rest is dropped with a note
    max_drain_size: int = 8 << 20  # output read (and dropped) past the cap before the command is killed
    wall_timeout: float | None = 30.0


@dataclass(slots=True)
class CommandResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    output: str
    output_size: int  # bytes the command wrote, including those dropped
    truncated: bool
    timed_out: bool

    def summary(self) -> str:
        """The result as the model reads it."""
        if self.timed_out:
            status = "killed: wall-clock timeout"
        elif self.signal is not None:
            why = " (CPU time limit)" if self.signal == signal.SIGXCPU else ""
            status = f"killed by signal {self.signal}{why}"
        else:
            status = f"exit code {self.exit_code}"
        note = f"\n[output truncated: {self.output_size} bytes, first {len(self.output.encode())} shown]"
        return f"{self.output}{note if self.truncated else ''}\n[{status}]"


class Sandbox(Protocol):
    limits: SandboxLimits

    async def run(
        self, workspace: Path, command: str, *, uid: int | None = None, on_output: OutputSink | None = None
    ) -> CommandResult: ...


class _Output:
    """Output kept so far (bounded), with what was seen past the cap counted, not kept."""

    def __init__(self, limits: SandboxLimits, on_output: OutputSink | None) -> None:
        self.limits = limits
        self.on_output = on_output
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.kept: list[str] = []
        self.kept_size = 0
        self.seen = 0

    async def feed(self, data: bytes) -> bool:
        """Take one read; False once the command wrote so much past the cap that it should be killed."""
        self.seen += len(data)
        room = self.limits.max_output_size - self.kept_size
        if room > 0:
            piece = data[:room]
            self.kept_size += len(piece)
            text = self.decoder.decode(piece, final=self.kept_size >= self.limits.max_output_size)
            if text:
                self.kept.append(text)
                if self.on_output is not None:
                    await self.on_output(text)
        return self.seen <= self.limits.max_output_size + self.limits.max_drain_size

    def result(self, code: int | None, timed_out: bool) -> CommandResult:
        self.kept.append(self.decoder.decode(b"", final=True))
        sig = -code if code is not None and code < 0 else None
        if sig is None and code is not None and code > 128 and code - 128 in (signal.SIGKILL, signal.SIGXCPU):
            sig = code - 128  # the shell inside reports its child's death by signal as 128+n
        return CommandResult(
            exit_code=None if sig is not None else code,
            signal=sig,
            output="".join(self.kept),
            output_size=self.seen,
            truncated=self.seen > self.limits.max_output_size,
            timed_out=timed_out,
        )


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill, read the pipe to its end (so its transport closes) and wait for the exit status."""
    _kill(proc)
    assert proc.stdout is not None
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(5):
            while await proc.stdout.read(65536):
                pass
    await proc.wait()


async def _supervise(
    argv: list[str], limits: SandboxLimits, on_output: OutputSink | None, env: dict[str, str] | None = None
) -> CommandResult:
    """Start argv in its own process group; stream, bound by the wall clock; kill on any way out."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env=env if env is not None else {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert proc.stdout is not None
    out = _Output(limits, on_output)
    timed_out = False
    try:
        async with asyncio.timeout(limits.wall_timeout):
            while data := await proc.stdout.read(READ_SIZE):
                if not await out.feed(data):
                    break
            await _reap(proc) if data else await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:  # timed out or cancelled: kill and reap before going on
            await asyncio.shield(_reap(proc))
    return out.result(proc.returncode, timed_out)


class BubblewrapSandbox:
    MOUNT_POINT = "/workspace"

    def __init__(self, limits: SandboxLimits | None = None, *, bwrap: str | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"

    @staticmethod
    def available() -> bool:
        tools = ["bwrap", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
        return all(shutil.which(tool) is not None for tool in tools)

    def argv(self, workspace: Path, command: str, *, uid: int | None = None) -> list[str]:
        lim = self.limits
        argv: list[str] = []
        if os.geteuid() == 0:
            if uid is None or uid == 0:
                raise SandboxUnavailable("A root server needs an unprivileged uid for the sandbox.")
            argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]
        argv += [
            "prlimit",
            f"--cpu={lim.cpu_time}:{lim.cpu_time + 1}",
            f"--as={lim.max_memory_size}",
            f"--nproc={lim.max_processes}",
            f"--fsize={lim.max_file_size}",
            f"--nofile={lim.max_open_files}",
            "--core=0",
            "--",
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for link in ("bin", "lib", "lib64", "sbin"):
            if Path("/", link).is_symlink():
                argv += ["--symlink", os.readlink(Path("/", link)), f"/{link}"]
            elif Path("/", link).is_dir():
                argv += ["--ro-bind", f"/{link}", f"/{link}"]
        for path in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"):
            argv += ["--ro-bind-try", path, path]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(lim.max_tmp_size),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            str(lim.max_tmp_size),
            "--tmpfs",
            "/tmp",
            "--bind",
            str(workspace),
            self.MOUNT_POINT,
            "--remount-ro",
            "/",
            "--chdir",
            self.MOUNT_POINT,
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/local/bin:/usr/bin:/bin",
            "--setenv",
            "HOME",
            self.MOUNT_POINT,
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--setenv",
            "PYTHONDONTWRITEBYTECODE",
            "1",
            "--",
            "/bin/sh",
            "-c",
            command,
        ]
        return argv

    async def run(
        self, workspace: Path, command: str, *, uid: int | None = None, on_output: OutputSink | None = None
    ) -> CommandResult:
        if not self.available():
            raise SandboxUnavailable()
        return await _supervise(self.argv(workspace, command, uid=uid), self.limits, on_output)


class DockerSandbox:
    """A throwaway container per command (`docker` Python SDK, imported only when chosen)."""

    def __init__(self, limits: SandboxLimits | None = None, *, image: str = "python:3.12-slim") -> None:
        self.limits = limits or SandboxLimits()
        self.image = image

    @staticmethod
    def available() -> bool:
        try:
            import docker  # optional dependency

            client = docker.from_env()
            try:
                client.ping()
            finally:
                client.close()
        except Exception:  # no SDK, no daemon, no permission: all mean "not available"
            return False
        return True

    def _container_args(self, workspace: Path, command: str, uid: int | None) -> dict[str, Any]:
        lim = self.limits
        return {
            "image": self.image,
            "command": ["/bin/sh", "-c", command],
            "network_disabled": True,
            "network_mode": "none",
            "read_only": True,
            "working_dir": "/workspace",
            "volumes": {str(workspace): {"bind": "/workspace", "mode": "rw"}},
            "tmpfs": {"/tmp": f"size={lim.max_tmp_size}"},
            "user": f"{uid}:{uid}" if uid else "65534:65534",
            "mem_limit": lim.max_memory_size,
            "memswap_limit": lim.max_memory_size,
            "pids_limit": lim.max_processes,
            "nano_cpus": 1_000_000_000,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "ulimits": [
                {"name": "cpu", "soft": lim.cpu_time, "hard": lim.cpu_time + 1},
                {"name": "fsize", "soft": lim.max_file_size, "hard": lim.max_file_size},
                {"name": "nofile", "soft": lim.max_open_files, "hard": lim.max_open_files},
            ],
        }

    async def run(
        self, workspace: Path, command: str, *, uid: int | None = None, on_output: OutputSink | None = None
    ) -> CommandResult:
        try:
            import docker
        except ImportError as exc:
            raise SandboxUnavailable() from exc
        try:
            client = await asyncio.to_thread(docker.from_env)
        except docker.errors.DockerException as exc:  # no daemon, no permission on its socket
            raise SandboxUnavailable() from exc
        try:
            return await self._run(client, workspace, command, uid, on_output)
        finally:
            client.close()

    async def _run(
        self, client: Any, workspace: Path, command: str, uid: int | None, on_output: OutputSink | None
    ) -> CommandResult:
        import docker

        lim = self.limits
        loop = asyncio.get_running_loop()
        args = self._container_args(workspace, command, uid)
        ulimits = [docker.types.Ulimit(**u) for u in args.pop("ulimits")]
        # Docker calls run in threads that a cancel cannot stop, so create and start are shielded and
        # awaited to their end even when the call is cancelled: otherwise a container created or started
        # after the cancel would be left behind. A container that fails to start is removed too.
        creating = loop.run_in_executor(None, functools.partial(client.containers.create, ulimits=ulimits, **args))
        try:
            container = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.to_thread((await creating).remove, force=True)
            raise
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

        stop = threading.Event()  # set when run() ends: the pump thread must then end too

        def put(item: bytes | None) -> None:
            """Hand one item to the loop, waiting while the queue is full, but never past `stop`."""
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not stop.is_set():
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    future.result(timeout=0.2)
                    return
            future.cancel()

        def pump() -> None:
            stream = container.logs(stream=True, follow=True)
            try:
                for data in stream:
                    if stop.is_set():
                        return
                    put(data)
            finally:
                stream.close()  # its socket, now rather than whenever the generator is collected
                put(None)

        reader: asyncio.Future[None] | None = None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        kept: list[str] = []
        kept_size = seen = 0
        timed_out = ended = False
        starting = loop.run_in_executor(None, container.start)
        status: dict[str, Any] = {}
        try:
            async with asyncio.timeout(lim.wall_timeout):  # the wall clock includes the container's start
                await asyncio.shield(starting)
                reader = loop.run_in_executor(None, pump)
                while (data := await queue.get()) is not None:
                    seen += len(data)
                    room = lim.max_output_size - kept_size
                    if room > 0:
                        kept_size += len(data[:room])
                        text = decoder.decode(data[:room])
                        kept.append(text)
                        if on_output is not None and text:
                            await on_output(text)
                    elif seen > lim.max_output_size + lim.max_drain_size:
                        break
                ended = True
        except TimeoutError:
            timed_out = True
        finally:
            with contextlib.suppress(Exception):
                await starting
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.kill)
            with contextlib.suppress(Exception):
                status = await asyncio.to_thread(container.wait, timeout=10)
            # The log stream ends with the container; read it to its end so the pump thread, which may be
            # waiting on the full queue, finishes (an executor thread is never left blocked).
            if reader is not None:
                with contextlib.suppress(TimeoutError):  # the pump thread ends with the log stream
                    async with asyncio.timeout(10):
                        while not ended:
                            ended = await queue.get() is None
                        await reader
            stop.set()
            if reader is not None:
                await asyncio.gather(reader, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.remove, force=True)
        code = status.get("StatusCode")
        # The container's exit status is the shell's: 128 + N means it died of signal N (SIGXCPU, SIGKILL...).
        died_of = code - 128 if isinstance(code, int) and 128 < code < 128 + signal.NSIG else None
        return CommandResult(
            exit_code=None if timed_out or died_of else code,
            signal=signal.SIGKILL if timed_out else died_of,
            output="".join(kept),
            output_size=seen,
            truncated=seen > lim.max_output_size,
            timed_out=timed_out,
        )


def make_sandbox(kind: str, limits: SandboxLimits) -> Sandbox | None:
    """The configured sandbox, or None when commands are disabled (`none`, or no sandbox available)."""
    if kind == "none":
        return None
    if kind == "docker":
        return DockerSandbox(limits)
    return BubblewrapSandbox(limits)
