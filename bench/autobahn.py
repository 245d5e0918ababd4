"""The Autobahn TestSuite's websocket cases against our websocket layer: `python -m bench.autobahn`.

Why: /ws speaks our protocol, but every frame first passes uvicorn's sans-I/O websocket implementation
(with our handshake fix, realtime/ws_protocol.py) under the limits the server sets (uvicorn_config in
realtime/cli.py). The Autobahn cases need a peer that echoes each message back, so this serves a tiny
echo route through exactly that stack and drives it with `kosoku` (the Autobahn case files, run by a
Rust client; the original suite is Python 2 only). Options change the limits the way REALTIME_*
settings do: `--max-message-size 16777216` lets the 9.x cases' 16 MiB messages through, `--compression`
turns on permessage-deflate for 12.x/13.x. Results: a summary per case group, then every case that is
not OK with what happened; `--report DIR` also writes kosoku's HTML/JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Cases by what they exercise (Autobahn numbering): 9.x are 64 KiB-16 MiB messages (performance),
# 12.x/13.x permessage-deflate. Everything else is framing, fragmentation, UTF-8, close handling.
LARGE_MESSAGE_CASES = ["9.*"]
COMPRESSION_CASES = ["12.*", "13.*"]


def echo_app() -> object:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
                else:
                    await websocket.send_text(message.get("text") or "")

    return Starlette(routes=[WebSocketRoute("/", echo), WebSocketRoute("/{path:path}", echo)])


def serve_echo(port: int, max_message_size: int | None, compression: bool) -> None:
    """Our uvicorn configuration (realtime.cli.uvicorn_config) around the echo app, in the foreground."""
    import uvicorn

    from realtime.cli import uvicorn_config
    from realtime.config import load_settings

    overrides: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "ws_compression": compression,
        "log_level": "WARNING",
    }
    if max_message_size is not None:
        overrides["max_message_size"] = max_message_size
    settings = load_settings({}, **overrides)
    uvicorn.Server(uvicorn_config(echo_app(), settings)).run()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def echo_server(
    *, max_message_size: int | None = None, compression: bool = False, log: Path | None = None
) -> Iterator[str]:
    """The echo server as a child process (its output to `log`, if given); yields its host:port."""
    port = _free_port()
    cmd = [sys.executable, "-m", "bench.autobahn", "--serve", str(port)]
    if max_message_size is not None:
        cmd += ["--max-message-size", str(max_message_size)]
    if compression:
        cmd.append("--compression")
    out = log.open("wb") if log is not None else None
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out is not None:
            out.close()


async def run_cases(address: str, include: list[str] | None, exclude: list[str] | None, parallelism: int) -> list:
    """kosoku's results for the selected cases (failed ones included)."""
    from kosoku import FailureError, run_fuzzingclient

    try:
        return await run_fuzzingclient(f"ws://{address}", include, exclude, concurrency=parallelism)
    except FailureError as failure:
        return failure.results


def verdict(result: object) -> str:
    """The Autobahn verdict: the message behaviour, with the close behaviour when that is not OK."""
    behavior, close = result.behavior.value, result.behavior_close.value  # type: ignore[attr-defined]
    return behavior if close in ("OK", "INFORMATIONAL") else f"{behavior} / close {close}"


def summarise(results: list) -> str:
    by_group: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        by_group[r.case_id.split(".")[0]][verdict(r)] += 1
    labels = sorted({v for c in by_group.values() for v in c})
    lines = ["| group | cases | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for group in sorted(by_group, key=int):
        counts = by_group[group]
        lines.append(f"| {group} | {sum(counts.values())} | " + " | ".join(str(counts[v]) for v in labels) + " |")
    total = Counter(verdict(r) for r in results)
    lines.append(f"| all | {len(results)} | " + " | ".join(str(total[v]) for v in labels) + " |")
    return "\n".join(lines)


def details(results: list) -> str:
    out = []
    for r in results:
        if verdict(r) == "OK":
            continue
        out.append(
            f"{r.case_id:8} {verdict(r):13} close sent {r.local_close_code} got {r.remote_close_code} "
            f"({r.remote_close_reason or ''}) | {r.result} | {r.result_close}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autobahn", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-i", "--include", action="append", help="case id or glob (default: all)")
    parser.add_argument("-x", "--exclude", action="append", help="case id or glob to leave out")
    parser.add_argument("--max-message-size", type=int, help="like REALTIME_MAX_MESSAGE_SIZE (default 1 MiB)")
    parser.add_argument("--compression", action="store_true", help="like REALTIME_WS_COMPRESSION=on")
    parser.add_argument("-p", "--parallelism", type=int, default=2)
    parser.add_argument("--report", type=Path, help="write kosoku's report to this directory")
    args = parser.parse_args(argv)
    if args.serve:
        serve_echo(args.serve, args.max_message_size, args.compression)
        return 0
    started = time.monotonic()
    with echo_server(max_message_size=args.max_message_size, compression=args.compression) as address:
        results = asyncio.run(run_cases(address, args.include, args.exclude, args.parallelism))
    seconds = time.monotonic() - started
    if args.report:
        from kosoku._report import write_reports

        write_reports(results, str(args.report))
    print(summarise(results))
    print(details(results) or "every case OK")
    failed = [r for r in results if not r.passed]
    print(f"{len(results)} cases in {seconds:.0f} s; failed: {len(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
