"""Fixtures for the tool tests: real workspaces and the real bubblewrap sandbox."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.tools.sandbox import BubblewrapSandbox, SandboxLimits
from realtime.tools.workspace import Workspaces

needs_bwrap = pytest.mark.skipif(not BubblewrapSandbox.available(), reason="bubblewrap is not installed (./dev setup)")


@pytest.fixture
def workspaces() -> Iterator[Workspaces]:
    """Under /tmp itself: pytest's tmp_path is 0700, and the sandbox's uids must traverse to their directory."""
    base = Path(tempfile.mkdtemp(prefix="realtime-ws-", dir="/tmp"))
    base.chmod(0o711)
    yield Workspaces(base, max_file_size=64 << 10)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def sandbox() -> BubblewrapSandbox:
    return BubblewrapSandbox(
        SandboxLimits(cpu_time=2, max_processes=32, max_output_size=4096, max_drain_size=1 << 20, wall_timeout=5.0)
    )


async def processes_of(uid: int) -> list[str]:
    """The pids still owned by `uid` after up to 3 s (the kernel tears a PID namespace down asynchronously)."""
    deadline = time.monotonic() + 3.0
    while True:
        owned = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid]
        if not owned or time.monotonic() > deadline:
            return owned
        await asyncio.sleep(0.05)


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None
