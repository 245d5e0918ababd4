"""What a full replay buffer costs the garbage collector: `python -m bench.replay_gc`.

Why: every session keeps its last events for resume (up to `REALTIME_REPLAY_BUFFER_EVENTS`, 4096). A voice
session fills that in minutes: each 40-50 ms of reply audio is one `response.audio.delta`. Until 2026-12-05
the buffer held the `ServerEvent` objects (an event, its field map, a tuple: three objects the collector
tracks); now it holds the msgpack frame (bytes, which it does not track). A full collection walks every
tracked object of every session at once, stalling them all, so this is a floor under the server's tail
latency once sessions have talked for a while.

What it does: after freezing the start-up heap (as the server does), fills `--sessions` buffers of
`--events` events each, the server's mix for a spoken reply (one `response.audio.transcript.delta` per 8
audio deltas of 40 ms at 24 kHz, 1 920 bytes each), both ways, with the real event constructors and codec;
then times `gc.collect()` `--runs` times for each (p50 / p90) and reports the tracked objects and the
Python heap (tracemalloc) per event. The two layouts are built and measured in the same process, one
after the other, so the ratio is the figure to read.

    .venv/bin/python -m bench.replay_gc [--sessions 300] [--events 4096] [--runs 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections import deque
from typing import Any

from bench.stats import markdown_table, percentile
from realtime.protocol import server_events as ev
from realtime.protocol.codec import Encoding, encode_frame

AUDIO_BYTES = 1_920  # 40 ms of 24 kHz PCM16


def event(n: int) -> ev.ServerEvent:
    if n % 9 == 8:
        return ev.audio_transcript_delta("resp_1", "item_1", " word", n * 40)
    return ev.audio_delta("resp_1", "item_1", n, n * 40, bytes(AUDIO_BYTES))  # each chunk its own bytes


def as_objects(sessions: int, events: int) -> list[deque[Any]]:
    """The old layout: (seq, event, size) per event."""
    return [deque((n + 1, e, 128 + 1_920) for n in range(events) for e in (event(n),)) for _ in range(sessions)]


def as_frames(sessions: int, events: int) -> list[deque[Any]]:
    """The layout now: the event's msgpack frame."""
    return [
        deque(encode_frame(event(n).to_wire(n + 1), Encoding.MSGPACK) for n in range(events)) for _ in range(sessions)
    ]


def measure(build: Any, sessions: int, events: int, runs: int) -> dict[str, float]:
    gc.collect()
    tracked_before = len(gc.get_objects())
    tracemalloc.start()
    buffers = build(sessions, events)
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    gc.collect()  # young objects settle into the oldest generation, as in a running server
    tracked = len(gc.get_objects()) - tracked_before
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - start) * 1000)
    del buffers
    gc.collect()
    total = sessions * events
    return {
        "p50": statistics.median(times),
        "p90": percentile(times, 90),
        "tracked": tracked / total,
        "heap": heap / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--events", type=int, default=4096, help="events kept per session (the default bound)")
    parser.add_argument("--runs", type=int, default=7, help="full collections timed per layout")
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as the server does after start-up: only what sessions keep is walked
    rows = []
    results = {}
    for name, build in (("events as objects (before)", as_objects), ("msgpack frames (now)", as_frames)):
        r = measure(build, args.sessions, args.events, args.runs)
        results[name] = r
        rows.append([name, f"{r['p50']:.1f} / {r['p90']:.1f} ms", f"{r['tracked']:.2f}", f"{r['heap']:.0f} B"])
    print(f"{args.sessions} sessions x {args.events} events kept for resume; full collection (gc.collect()) times")
    print(
        markdown_table(
            ["replay buffer holds", "full collection p50 / p90", "tracked objects per event", "heap per event"], rows
        )
    )
    before, now = results.values()
    print(f"full collection, before / now (p50): {before['p50'] / max(now['p50'], 1e-6):.0f}x")


if __name__ == "__main__":
    main()
