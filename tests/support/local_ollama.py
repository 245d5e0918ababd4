"""Start the Ollama-compatible endpoint (`python -m realtime.local_ollama`) as a child process.

    with start_local_ollama(ctx=512, preload=False) as server:
        ollama.Client(host=server.url).list()

Keyword flags become CLI options: `model_path=P` -> `--model-path P`, `preload=False` -> `--no-preload`.
The model defaults to the embedded SmolLM2 GGUF in the asset cache, served as `smollm2:135m`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from realtime.assets import LLM_GGUF, default_cache_dir

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def default_model_path() -> Path:
    return default_cache_dir() / "models" / LLM_GGUF


class LocalOllamaProcess:
    """A running endpoint: `.url`, `.process`, `.stop()`; a context manager that stops it on exit."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path

    def log_text(self) -> str:
        """Everything the child wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it lingers; removes the log; returns the exit status. Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> LocalOllamaProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_local_ollama(port: int | None = None, **flags: object) -> LocalOllamaProcess:
    """Launch the CLI on `port` (a free one if None) and wait until GET /api/version answers."""
    port = port or _free_port()
    flags.setdefault("model_path", default_model_path())
    cmd = [sys.executable, "-m", "realtime.local_ollama", "--host", "127.0.0.1", "--port", str(port)]
    cmd += _cli_flags(flags)
    log = tempfile.NamedTemporaryFile(prefix="local-ollama-", suffix=".log", delete=False)  # noqa: SIM115
    with log:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = LocalOllamaProcess(f"http://127.0.0.1:{port}", process, Path(log.name))
    try:
        _wait_until_answering(server)
    except BaseException:
        server.stop()
        raise
    return server


def _cli_flags(flags: dict[str, object]) -> list[str]:
    args: list[str] = []
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            args.append(option)
        elif value is False:
            args.append("--no-" + option[2:])
        elif value is not None:
            args += [option, str(value)]
    return args


def _wait_until_answering(server: LocalOllamaProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"local-ollama exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/api/version", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            tail = server.log_text()[-3000:]
            raise RuntimeError(f"local-ollama did not answer within {START_TIMEOUT:.0f} s:\n{tail}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
