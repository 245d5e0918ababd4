"""What a speaking session keeps for resume, clients that answer pings against clients that do not:
`python -m bench.replay_memory`.

Why: every event a session sends is kept (as its msgpack frame) so that a client whose link drops can
resume without losing any. Bounded by `REALTIME_REPLAY_BUFFER_EVENTS` (4 096) and `_BYTES` (8 MiB), that
is up to ~85 s of 24 kHz reply audio per session: 2.4 GB at 300 talking sessions, and millions of buffer
entries for the garbage collector to walk. A `pong` to a server `ping` proves the client received every
event up to that ping (docs/protocol.md §5.7), so the server releases them; this bench measures how much
that leaves.

What it does: the real server (`python -m realtime serve`: Piper speaking, the scripted fake LLM's model
`story`, ~96 words, ~35 s of speech, at ~40 words/s), `--sessions` clients each asking for the story with
24 kHz speech and reading it to the end at the server's real-time pace, first as clients that answer the
server's pings (every `--ping-interval` s, the default 10 s), then as clients that do not (they send a
ping of their own every 5 s, which keeps the link alive and acknowledges nothing). The gauges
`realtime_replay_buffer_events` / `_bytes` at /metrics are sampled every 0.5 s during each reply; it
prints per session the peak and mean kept, and what was kept at the end of the reply.

    .venv/bin/python -m bench.replay_memory [--sessions 4] [--ping-interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.stats import markdown_table
from realtime.client import RealtimeClient

RATE = 24_000
QUESTION = {
    "type": "conversation.item.create",
    "item": {"role": "user", "content": [{"type": "input_text", "text": "a story"}]},
}


async def replay_gauges(http: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(events, bytes) kept for resume by all sessions."""
    text = (await http.get(url + "/metrics")).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values["realtime_replay_buffer_events"], values["realtime_replay_buffer_bytes"]


async def listen(client: RealtimeClient, answering: bool) -> float:
    """Read one spoken reply to its end; the seconds of audio it carried."""
    audio = 0
    last_ping = time.monotonic()
    while True:
        event = await client.recv()
        if event["type"] == "response.audio.delta":
            audio += len(event["audio"])
        elif event["type"] == "response.done":
            return audio / 2 / RATE
        if not answering and time.monotonic() - last_ping > 5.0:
            await client.send({"type": "ping", "ts": 1})  # liveness without acknowledging anything
            last_ping = time.monotonic()


async def one_mode(url: str, ws_url: str, token: Any, sessions: int, answering: bool) -> dict[str, Any]:
    clients = [
        await RealtimeClient.connect(ws_url, token(f"replay{i}"), auto_pong=answering, recv_timeout=120)
        for i in range(sessions)
    ]
    samples: list[tuple[float, float]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            for client in clients:
                speak = {"model": "story", "output_audio_format": {"type": "pcm16", "sample_rate": RATE}}
                await client.send({"type": "session.update", "session": speak})
                await client.recv_until("session.updated")
                await client.send(QUESTION)
                await client.send({"type": "response.create"})
            readers = asyncio.gather(*(listen(c, answering) for c in clients))
            while not readers.done():
                samples.append(await replay_gauges(http, url))
                await asyncio.wait({readers}, timeout=0.5)
            seconds = readers.result()
            end = await replay_gauges(http, url)
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for _ in range(50):  # the sessions end with their clean close: nothing kept after
            if (await replay_gauges(http, url))[0] == 0:
                break
            await asyncio.sleep(0.1)
    events, nbytes = zip(*samples, strict=True)
    return {
        "mode": "answer pings" if answering else "never answer",
        "audio_s": statistics.mean(seconds),
        "peak_kb": max(nbytes) / sessions / 1024,
        "mean_kb": statistics.mean(nbytes) / sessions / 1024,
        "peak_events": max(events) / sessions,
        "end_kb": end[1] / sessions / 1024,
        "end_events": end[0] / sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--ping-interval", type=float, default=10.0, help="the server's REALTIME_PING_INTERVAL")
    args = parser.parse_args()

    from tests.support.fake_ollama import FakeOllama
    from tests.support.server import ServerProcess, free_port

    fake = FakeOllama(free_port()).start()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        env = {
            "REALTIME_OLLAMA_URL": fake.url,
            "REALTIME_LLM_MODEL": "story",
            "REALTIME_VOICE": "off",
            "REALTIME_DATABASE_URL": "none",
            "REALTIME_LOG_LEVEL": "WARNING",
            "REALTIME_PING_INTERVAL": str(args.ping_interval),
            "REALTIME_PING_TIMEOUT": str(max(30.0, 3 * args.ping_interval)),
        }
        server = ServerProcess(env, Path(tmp) / "state", Path(tmp) / "server.log").start(timeout=180)
        try:
            rows = [
                asyncio.run(one_mode(server.url, server.ws_url, server.token, args.sessions, answering))
                for answering in (True, False)
            ]
        finally:
            server.stop()
            fake.stop()
    print(f"{args.sessions} sessions, server pings every {args.ping_interval:g} s; kept for resume, per session:")
    header = ["client", "reply audio", "peak", "mean", "peak events", "at the reply's end"]
    print(
        markdown_table(
            header,
            [
                [
                    r["mode"],
                    f"{r['audio_s']:.1f} s",
                    f"{r['peak_kb']:.0f} KB",
                    f"{r['mean_kb']:.0f} KB",
                    f"{r['peak_events']:.0f}",
                    f"{r['end_kb']:.0f} KB ({r['end_events']:.0f} events)",
                ]
                for r in rows
            ],
        )
    )


if __name__ == "__main__":
    main()
