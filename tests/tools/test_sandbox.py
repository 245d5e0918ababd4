"""The real sandboxes refuse escapes: other workspaces, the host, the network, and every limit. Each test
runs against bubblewrap and against Docker (skipped, with the reason, where no daemon answers)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from realtime.tools.sandbox import BubblewrapSandbox, CommandResult, Sandbox, SandboxLimits
from realtime.tools.workspace import Workspaces
from tests.tools.conftest import SandboxFactory, processes_of

REPO = Path(__file__).resolve().parents[2]


async def run(sandbox: Sandbox, workspaces: Workspaces, command: str, user: str = "alice") -> CommandResult:
    ws = workspaces.for_user(user)
    return await sandbox.run(ws.root, command, uid=Workspaces.sandbox_uid(user))


async def test_runs_python_in_the_workspace(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """A file written through the workspace runs in the sandbox, which sees it at /workspace."""
    script = "print([n for n in range(2, 30) if all(n % d for d in range(2, n))])\n"
    workspaces.for_user("alice").write("primes.py", script)
    result = await run(sandbox, workspaces, "python3 primes.py && pwd")
    assert result.exit_code == 0
    assert result.output == "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]\n/workspace\n"


async def test_writes_stay_in_the_workspace(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """What a command writes lands in the user's directory; the host paths it names are not there."""
    command = "echo hi > out.txt; echo x > /etc/evil; echo x > /usr/evil; echo x > /evil; true"
    result = await run(sandbox, workspaces, command)
    assert workspaces.for_user("alice").read("out.txt") == ("hi\n", False)
    assert "Read-only file system" in result.output or "No such file" in result.output
    assert not os.path.lexists("/usr/evil") and not os.path.lexists("/evil")  # noqa: ASYNC240


async def test_other_users_workspace_is_invisible(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """Bob's command cannot find or read Alice's files, by path, by `..`, or through /proc."""
    alice = workspaces.for_user("alice")
    alice.write("secret.txt", "alice-secret")
    probe = (
        f"cat {alice.root}/secret.txt; cat ../{alice.root.name}/secret.txt; "
        "cat /proc/1/root/../*/secret.txt; find / -name secret.txt 2>/dev/null; "
        f"ls {workspaces.base} ..; true"
    )
    result = await run(sandbox, workspaces, probe, user="bob")
    assert "alice-secret" not in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("/") and line.endswith("secret.txt")]


async def test_host_files_are_invisible(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """The host's /etc, /root, /home, the server's code and its environment are not in the sandbox."""
    repo = REPO
    result = await run(
        sandbox, workspaces, f"cat /etc/shadow /etc/passwd; ls /root /home {repo} /work; env; cat /proc/1/environ; true"
    )
    assert Path("/etc/passwd").read_text() not in result.output  # a container image has a passwd of its own
    if isinstance(sandbox, BubblewrapSandbox):
        assert "root:" not in result.output  # bubblewrap shows no /etc/passwd at all
    assert "REALTIME" not in result.output and "realtime" not in result.output.lower().replace("realtime", "", 0)
    assert str(repo) + "/realtime" not in result.output
    assert "No such file" in result.output


async def test_symlink_out_leads_nowhere(sandbox: Sandbox, workspaces: Workspaces, tmp_path: Path) -> None:
    """A symlink to a host path resolves inside the sandbox's own filesystem, where the target is absent."""
    secret = tmp_path / "host-secret"
    secret.write_text("host-secret-text")
    result = await run(sandbox, workspaces, f"ln -s {secret} s; cat s; ln -s / root; cat root{secret}; true")
    assert "host-secret-text" not in result.output
    with pytest.raises(Exception, match="symlink"):
        workspaces.for_user("alice").read("s")


async def test_no_network(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """No interface but loopback: outside addresses and DNS are unreachable."""
    script = (
        "import socket\n"
        "for addr in [('1.1.1.1', 53), ('127.0.0.1', 22), ('8.8.8.8', 443)]:\n"
        "    try:\n"
        "        socket.create_connection(addr, timeout=1); print('CONNECTED', addr)\n"
        "    except OSError as e: print('refused', e.errno)\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
        "except OSError: print('no dns')\n"
        "print(open('/proc/net/dev').read())\n"
    )
    workspaces.for_user("alice").write("net.py", script)
    result = await run(sandbox, workspaces, "python3 net.py")
    assert "CONNECTED" not in result.output and "RESOLVED" not in result.output
    assert "eth" not in result.output and "no dns" in result.output


async def test_host_loopback_services_are_unreachable(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """A service listening on the host's 127.0.0.1 (say, the embedded LLM or the database) is not reachable."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        script = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\n"
            "except OSError as e: print('refused', e.errno)\n"
        )
        workspaces.for_user("alice").write("probe.py", script)
        result = await run(sandbox, workspaces, "python3 probe.py")
    finally:
        server.close()
        await server.wait_closed()
    assert "CONNECTED" not in result.output and "refused" in result.output


async def test_runs_unprivileged(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """No capabilities, no new privileges (setuid binaries do nothing), no new user namespaces, and
    (under a root server) a per-user non-root uid."""
    result = await run(
        sandbox,
        workspaces,
        "grep -E 'Cap|NoNewPrivs' /proc/self/status; unshare -U true && echo NESTED; cat /proc/self/uid_map; "
        "id -u; su -c 'echo SU' root </dev/null; mount -t tmpfs x /tmp && echo MOUNTED; true",
    )
    assert "NESTED" not in result.output and "SU" not in result.output.split() and "MOUNTED" not in result.output
    assert "NoNewPrivs:\t1" in result.output
    for line in result.output.splitlines():
        if line.startswith("CapEff") or line.startswith("CapPrm"):
            assert line.split()[1] == "0000000000000000"
    if os.geteuid() == 0:
        assert f"{Workspaces.sandbox_uid('alice')}" in result.output.split()


async def test_fork_bomb_is_contained(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """A fork bomb hits the process limit and dies with the sandbox; nothing of it survives."""
    started = time.monotonic()
    result = await run(sandbox, workspaces, "bomb() { bomb | bomb & }; bomb; sleep 1; echo alive")
    assert time.monotonic() - started < 10
    assert "fork" in result.output.lower()  # sh: Cannot fork
    if os.geteuid() == 0:
        assert await processes_of(Workspaces.sandbox_uid("alice")) == []


async def test_huge_output_is_truncated(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """Endless output is cut at the cap with a note, and the command is killed once it floods past it."""
    streamed: list[str] = []

    async def sink(text: str) -> None:
        streamed.append(text)

    ws = workspaces.for_user("alice")
    result = await sandbox.run(ws.root, "yes", uid=Workspaces.sandbox_uid("alice"), on_output=sink)
    assert result.truncated and result.signal is not None
    assert len(result.output.encode()) == sandbox.limits.max_output_size
    assert "".join(streamed) == result.output
    assert "output truncated" in result.summary()


async def test_big_file_is_limited(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """A file past RLIMIT_FSIZE cannot be written; /tmp is a small tmpfs."""
    limit = sandbox.limits.max_file_size
    result = await run(
        sandbox,
        workspaces,
        f"head -c {limit + 4096} /dev/zero > big; ls -l big; "
        f"head -c {sandbox.limits.max_tmp_size + 4096} /dev/zero > /tmp/t",
    )
    assert os.stat(workspaces.for_user("alice").root / "big").st_size <= limit
    assert "File size limit exceeded" in result.output or "File too large" in result.output
    assert "No space left" in result.output or result.exit_code != 0


async def test_memory_is_limited(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """Allocating past the memory limit fails inside the sandbox (bubblewrap: RLIMIT_AS; Docker: the
    container's cgroup limit, since an address-space rlimit stops runc's own Go runtime from starting)."""
    result = await run(sandbox, workspaces, "python3 -c 'x = bytearray(2 << 30); print(\"GOT\")'")
    assert "GOT" not in result.output
    if isinstance(sandbox, BubblewrapSandbox):
        assert "MemoryError" in result.output  # RLIMIT_AS: the allocation itself fails
    else:
        assert result.signal == signal.SIGKILL  # Docker: the cgroup's memory limit, the OOM killer


async def test_endless_loop_hits_the_cpu_limit(make_sandbox: SandboxFactory, workspaces: Workspaces) -> None:
    """A busy loop is killed by RLIMIT_CPU (before a generous wall clock, even on a loaded machine)."""
    sandbox = make_sandbox(SandboxLimits(cpu_time=1, wall_timeout=60.0))
    result = await run(sandbox, workspaces, "python3 -c 'while True: pass'")
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL) and not result.timed_out
    assert "CPU time limit" in result.summary() or result.signal == signal.SIGKILL


async def test_sleeping_command_hits_the_wall_clock(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """A command that sleeps (no CPU) is killed at the wall-clock timeout, with its output so far."""
    started = time.monotonic()
    result = await run(sandbox, workspaces, "echo before; sleep 60; echo after")
    # Killing and removing a container takes longer than killing a process group (seconds, on vfs storage).
    margin = 3 if isinstance(sandbox, BubblewrapSandbox) else 8
    assert result.timed_out and time.monotonic() - started < sandbox.limits.wall_timeout + margin
    assert result.output == "before\n" and "timeout" in result.summary()


async def test_output_streams_as_it_is_produced(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """Each line reaches the sink when printed, not when the command ends."""
    arrivals: list[tuple[float, str]] = []

    async def sink(text: str) -> None:
        arrivals.append((time.monotonic(), text))

    ws = workspaces.for_user("alice")
    await sandbox.run(ws.root, "echo one; sleep 1; echo two", uid=Workspaces.sandbox_uid("alice"), on_output=sink)
    assert arrivals[0][1] == "one\n" and arrivals[-1][1].endswith("two\n")
    assert arrivals[-1][0] - arrivals[0][0] >= 0.9  # the first line came when printed, not with the second


async def test_cancel_kills_the_command(sandbox: Sandbox, workspaces: Workspaces) -> None:
    """Cancelling the running call kills every process of the command at once."""
    ws = workspaces.for_user("alice")
    task = asyncio.create_task(
        sandbox.run(ws.root, "sleep 30 & sleep 30; echo done > late.txt", uid=Workspaces.sandbox_uid("alice"))
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < (2 if isinstance(sandbox, BubblewrapSandbox) else 8)  # as above
    await asyncio.sleep(0.3)
    assert not (ws.root / "late.txt").exists()
    if os.geteuid() == 0:
        assert await processes_of(Workspaces.sandbox_uid("alice")) == []
