"""CLI: `python -m realtime.local_ollama --model-path P [--name N] [--host H] [--port P] [--threads N] [--ctx N]`.

Prints `local-ollama listening on http://HOST:PORT` to stderr once the socket accepts connections,
shuts down gracefully on SIGTERM or SIGINT and then exits with status 0. `--test-mode` (for tests only,
never passed by the voice server) lets a test script tool calls (scripted.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from realtime.local_ollama.app import create_app
from realtime.local_ollama.engine import FOREVER, Engine, EngineConfig

log = logging.getLogger("realtime.local_ollama")


class _Server(uvicorn.Server):
    """Announces itself once listening; exits 0 after a graceful shutdown on SIGTERM/SIGINT.

    (uvicorn would re-raise the signal after shutting down, so the process would die of it.)
    Open streams are ended with an error line first, so shutdown does not wait out long replies.
    """

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self._engine = engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._engine.abort_all("the server is shutting down")
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"local-ollama listening on http://{self.config.host}:{port}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m realtime.local_ollama",
        description="Serve one GGUF model over the Ollama HTTP API (llama-cpp-python).",
    )
    parser.add_argument("--model-path", type=Path, required=True, help="the GGUF file to serve")
    parser.add_argument("--name", default="smollm2:135m", help="the model name clients ask for")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: one per CPU)")
    parser.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=300.0,
        help="seconds an idle model stays loaded (negative: forever; default 300, as Ollama)",
    )
    parser.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the model at start (default) or on the first request",
    )
    parser.add_argument(
        "--yield-file",
        type=Path,
        default=None,
        help="a voice server's pause file (realtime/local_ollama/yield_gate.py): generation waits between "
        "tokens while the server holds it",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument(
        "--test-mode",
        action="store_true",
        help="tests only: accept `tools`, and answer requests carrying them with the tool calls a test "
        "POSTs to /_test/tool_calls (all other replies come from the model); never for real use",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.ctx < 64:
        parser.error("--ctx must be at least 64")
    return args


def serve(args: argparse.Namespace) -> bool:
    """Run until a signal; False if the server never started (port taken, model failed to load)."""
    config = EngineConfig(
        model_path=args.model_path,
        name=args.name,
        n_threads=args.threads,
        n_ctx=args.ctx,
        preload=args.preload,
        keep_alive=FOREVER if args.keep_alive < 0 else args.keep_alive,
        yield_file=args.yield_file,
    )
    app = create_app(config, test_mode=args.test_mode)
    server = _Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=args.access_log,
            lifespan="on",
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=64 << 10,
        ),
        app.state.engine,
    )
    asyncio.run(server.serve())
    return server.started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model_path.is_file():
        log.error("model file not found: %s", args.model_path)
        return 2
    return 0 if serve(args) else 3


if __name__ == "__main__":
    sys.exit(main())
