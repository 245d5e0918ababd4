"""Command line: `serve` (the server, starting the embedded LLM when no Ollama answers) and `token`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from realtime.auth import TokenAuthority
from realtime.config import Settings, load_settings
from realtime.errors import ConfigError
from realtime.local_ollama.yield_gate import YieldGate
from realtime.protocol.codec import Encoding
from realtime.server import WS_PATH, Realtime, create_app
from realtime.ws_protocol import RealtimeH11Protocol, RealtimeWebSocketProtocol

log = logging.getLogger("realtime.cli")

EMBEDDED_MODEL_NAME = "smollm2:135m"
EMBEDDED_START_TIMEOUT = 120.0


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per LLM request is noise


def ollama_answers(url: str, timeout: float = 1.5) -> bool:
    try:
        resp = httpx.get(url.rstrip("/") + "/api/version", timeout=timeout)
        return resp.status_code == 200 and isinstance(resp.json().get("version"), str)
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _child_setup(nice: int) -> Callable[[], None]:
    def setup() -> None:
        """In the child, before exec: lower its priority, and get SIGTERM if the server dies (Linux prctl)."""
        with contextlib.suppress(Exception):
            os.nice(nice)
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal it handled once it has shut down; exit cleanly so cleanup runs."""
    raise SystemExit(0)


@contextlib.contextmanager
def embedded_llm(settings: Settings, yield_file: Path | None = None) -> Iterator[str]:
    """Run the Ollama-compatible endpoint on the local GGUF as a child process; yield its base URL.

    With `yield_file` (a YieldGate's file) it pauses between tokens when the server asks."""
    model_path = settings.llm_gguf_path
    if not model_path.is_file():
        raise ConfigError(f"embedded LLM model not found at {model_path}; run ./dev setup (or set REALTIME_MODELS_DIR)")
    host = settings.embedded_llm_host
    port = settings.embedded_llm_port if _port_free(host, settings.embedded_llm_port) else free_port(host)
    cmd = [
        sys.executable,
        "-m",
        "realtime.local_ollama",
        "--model-path",
        str(model_path),
        "--name",
        EMBEDDED_MODEL_NAME,
        "--host",
        host,
        "--port",
        str(port),
        "--ctx",
        str(settings.embedded_llm_context),
    ]
    if settings.embedded_llm_threads:
        cmd += ["--threads", str(settings.embedded_llm_threads)]
    if yield_file is not None:
        cmd += ["--yield-file", str(yield_file)]
    url = f"http://{host}:{port}"
    log.info("no Ollama at %s: starting the embedded LLM endpoint at %s", settings.ollama_url, url)
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup(settings.embedded_llm_nice))
    try:
        deadline = time.monotonic() + EMBEDDED_START_TIMEOUT
        while not ollama_answers(url, timeout=1.0):
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded LLM endpoint exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded LLM endpoint did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _yield_file(settings: Settings) -> Iterator[Path]:
    """A fresh pause file for this server and its LLM (one per server process), removed at exit."""
    path = Path(settings.state_dir) / f"llm-yield.{os.getpid()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    YieldGate(path, create=True).close()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


class _Server(uvicorn.Server):
    """uvicorn would drop every websocket with 1012 at once; we first close sessions ourselves (1001, flushed)."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        rt = getattr(self._app.state, "realtime", None)
        if rt is not None:
            await rt.close_all()
        await super().shutdown(sockets)


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """uvicorn with explicit websocket limits (its defaults allow 16 MiB messages and a 32-deep queue), and a
    deadline for request headers (it has none)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        loop=settings.event_loop,
        # h11 (the handshake limits and answers are tested against it), with a deadline for the request
        http=functools.partial(RealtimeH11Protocol, handshake_timeout=settings.handshake_timeout),  # type: ignore[arg-type]
        ws=RealtimeWebSocketProtocol,
        ws_max_size=settings.max_message_size,
        ws_max_queue=settings.ws_max_queue,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.transport_ping_interval,
        ws_ping_timeout=settings.transport_ping_timeout,
        lifespan="on",
        log_level=settings.log_level.lower(),
        access_log=False,  # access lines would log the ?access_token= of browser clients
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings) -> int:
    with contextlib.ExitStack() as stack:
        mode = settings.embedded_llm
        if mode == "always" or (mode == "auto" and not ollama_answers(settings.ollama_url)):
            yield_file = stack.enter_context(_yield_file(settings)) if settings.embedded_llm_yield_ms else None
            url = stack.enter_context(embedded_llm(settings, yield_file))
            if settings.llm_model != EMBEDDED_MODEL_NAME:
                log.warning(
                    "model %r is not served by the embedded endpoint; using %s", settings.llm_model, EMBEDDED_MODEL_NAME
                )
            settings = dataclasses.replace(
                settings,
                ollama_url=url,
                llm_model=EMBEDDED_MODEL_NAME,
                model_devices=(*settings.model_devices, "llm=cpu"),  # llama.cpp here runs on the CPU
                embedded_llm_yield_file=yield_file,
            )
        elif mode == "never" and not ollama_answers(settings.ollama_url):
            log.warning("no Ollama answers at %s; responses will fail until it does", settings.ollama_url)
        authority = TokenAuthority(settings)
        base = f"{settings.host}:{settings.port}"

        async def banner(rt: Realtime) -> None:
            """Once up: a dev account (so its history is stored) and a token for it."""
            subject = "dev"
            if rt.db is not None:
                user = await rt.db.users.get_by_username("dev")
                if user is None:
                    user = await rt.db.users.create("dev", secrets.token_urlsafe(24), role="admin")
                subject = str(user.id)
            token = authority.issue(subject, ttl=24 * 3600, admin=True)
            print(
                f"\nrealtime server: http://{base}  websocket: ws://{base}{WS_PATH}\n"
                f"LLM: {settings.llm_model} at {settings.ollama_url}\n"
                f"database: {'none' if rt.db is None else settings.database_url}\n"
                f"dev token (24 h): {token}\n"
                f"browser app: http://{base}/static/?token={token}\n"
                f"try: npx wscat -c ws://{base}{WS_PATH} -s {Encoding.JSON.subprotocol} "
                f"-H 'Authorization: Bearer {token}'\n",
                flush=True,
            )

        app = create_app(settings, on_ready=banner)
        server = _Server(uvicorn_config(app, settings), app)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="realtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_token = sub.add_parser("token", help="print a signed access token for local use")
    p_token.add_argument("--user", default="dev")
    p_token.add_argument("--ttl", type=float, default=3600.0, help="seconds")
    p_token.add_argument("--admin", action="store_true")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    if args.command == "token":
        print(TokenAuthority(settings).issue(args.user, ttl=args.ttl, admin=args.admin))
        return 0
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    return serve(settings)
