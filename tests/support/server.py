"""Start the real server (`python -m realtime serve`) as a child process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from realtime.auth import TokenAuthority
from realtime.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret-" + "x" * 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, env: dict[str, str], state_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.env = {
            **os.environ,
            "REALTIME_HOST": "127.0.0.1",
            "REALTIME_PORT": str(self.port),
            "REALTIME_STATE_DIR": str(state_dir),
            "REALTIME_JWT_SECRET": TEST_SECRET,
            "REALTIME_EMBEDDED_LLM": "never",
            "REALTIME_DATABASE_URL": "none",
            "REALTIME_LOG_LEVEL": "INFO",
            **env,
        }
        self.log_path = log_path
        self._log = None
        self.process: subprocess.Popen[bytes] | None = None
        self.authority = TokenAuthority(load_settings(self.env))

    async def metric(self, name: str) -> float:
        """One sample of the server's /metrics, by its name (the first, whatever its labels)."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(self.url + "/metrics")).text
        families = text_string_to_metric_families(text)
        return next(s.value for f in families for s in f.samples if s.name == name)

    def token(self, user: str = "alice", *, ttl: float = 600, admin: bool = False) -> str:
        return self.authority.issue(user, ttl=ttl, admin=admin)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; log: {self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        elif self.process is not None:
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
