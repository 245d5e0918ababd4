"""Fixtures for the tool tests: real workspaces and the real sandboxes (bubblewrap; Docker where a daemon
answers and the image is present: no test pulls from a registry)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from realtime.tools.sandbox import BubblewrapSandbox, DockerSandbox, Sandbox, SandboxLimits
from realtime.tools.workspace import Workspaces

needs_bwrap = pytest.mark.skipif(not BubblewrapSandbox.available(), reason="bubblewrap is not installed (./dev setup)")
needs_docker = pytest.mark.skipif(
    not DockerSandbox.available(), reason="no Docker daemon answers (or the `docker` SDK is not installed)"
)
# The Docker sandbox's image in tests: it must already be on the daemon (docs/security.md says how to make one).
DOCKER_IMAGE = os.environ.get("REALTIME_TEST_SANDBOX_IMAGE", "python:3.12-slim")
SANDBOX_KINDS = [pytest.param("bubblewrap", marks=needs_bwrap), pytest.param("docker", marks=needs_docker)]
TEST_LIMITS = SandboxLimits(
    cpu_time=2, max_processes=32, max_output_size=4096, max_drain_size=1 << 20, wall_timeout=5.0
)


@pytest.fixture(scope="module")
def tools_dir() -> Iterator[Path]:
    """The servers' REALTIME_TOOLS_DIR, one per test module, under /tmp for the same reason as below."""
    base = Path(tempfile.mkdtemp(prefix="realtime-tools-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workspaces() -> Iterator[Workspaces]:
    """Under /tmp itself: pytest's tmp_path is 0700, and the sandbox's uids must traverse to their directory."""
    base = Path(tempfile.mkdtemp(prefix="realtime-ws-", dir="/tmp"))
    base.chmod(0o711)
    yield Workspaces(base, max_file_size=64 << 10)
    shutil.rmtree(base, ignore_errors=True)


SandboxFactory = Callable[[SandboxLimits], Sandbox]


@pytest.fixture(params=SANDBOX_KINDS)
def make_sandbox(request: pytest.FixtureRequest) -> SandboxFactory:
    """Makes sandboxes of one kind (each test runs once per kind)."""
    if request.param == "bubblewrap":
        return BubblewrapSandbox
    import docker  # present: needs_docker checked it

    try:
        client = docker.from_env()
        try:
            client.images.get(DOCKER_IMAGE)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        pytest.skip(f"the Docker image {DOCKER_IMAGE} is not on the daemon (REALTIME_TEST_SANDBOX_IMAGE names another)")
    return lambda limits: DockerSandbox(limits, image=DOCKER_IMAGE)


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    return make_sandbox(TEST_LIMITS)


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
