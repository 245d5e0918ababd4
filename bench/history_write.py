"""Stored history under load: 50 sessions' messages through the real HistoryWriter into a real PostgreSQL,
and the embedded database's start-up time.

Each simulated session submits a user message and an assistant message (with reasoning and timings)
per turn, a turn every `--interval` seconds (jittered), as the session code does; the figure is the time
from `submit()` to the row being committed, and the sustained throughput when all sessions submit as
fast as they can.

    .venv/bin/python -m bench.history_write [--sessions 50] [--turns 40]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from bench.stats import markdown_table, percentile
from db import Database, EmbeddedPostgres
from realtime.history import HistoryWriter, MessageRecord


def startup_times(runs: int) -> tuple[list[float], list[float], list[float]]:
    """(new cluster: initdb + start, start of an existing cluster, stop), seconds per run."""
    new, warm, stop = [], [], []
    for _ in range(runs):
        pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-")) / "data"
        server = EmbeddedPostgres(pgdata)
        t = time.perf_counter()
        server.start()
        new.append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter()
            server.stop()
            stop.append(time.perf_counter() - t)
            t = time.perf_counter()
            server.start()
            warm.append(time.perf_counter() - t)
        server.stop()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
    return new, warm, stop


async def load(db: Database, sessions: int, turns: int, interval: float) -> tuple[list[float], float]:
    writer = HistoryWriter(db, max_queue=100_000)
    await writer.start()
    users = [await db.users.create(f"bench{uuid.uuid4().hex[:10]}", "benchmark password") for _ in range(sessions)]
    latencies: list[float] = []
    submitted: dict[str, float] = {}

    def stored(record: MessageRecord) -> None:
        latencies.append(time.perf_counter() - submitted.pop(record.key))

    async def session(user_id: str) -> None:
        conversation = str(uuid.uuid4())
        for turn in range(turns):
            if interval:
                await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            for role, text in (("user", f"question {turn}"), ("assistant", f"answer {turn} " * 20)):
                key = f"{conversation}:{turn}:{role}"
                submitted[key] = time.perf_counter()
                writer.submit(
                    MessageRecord(
                        user_id=user_id,
                        conversation_id=conversation,
                        key=key,
                        role=role,
                        content=text,
                        reasoning="thinking " * 10 if role == "assistant" else "",
                        timings={"first_token_ms": 80, "total_ms": 900},
                        on_stored=stored,
                    )
                )

    started = time.perf_counter()
    await asyncio.gather(*(session(str(u.id)) for u in users))
    await writer.aclose(drain_timeout=300)
    elapsed = time.perf_counter() - started
    assert writer.lost == 0, f"{writer.lost} records lost"
    return latencies, elapsed


async def main_async(args: argparse.Namespace) -> None:
    new, warm, stop = startup_times(args.startup_runs)
    print(
        markdown_table(
            ["embedded PostgreSQL", "runs", "p50 s", "max s"],
            [
                [name, str(len(v)), f"{percentile(v, 50):.3f}", f"{max(v):.3f}"]
                for name, v in (("new cluster (initdb + start)", new), ("start existing", warm), ("stop", stop))
            ],
        )
    )
    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-")) / "data"
    server = EmbeddedPostgres(pgdata)
    url = server.start()
    try:
        db = await Database.connect(url, max_size=10)
        await db.migrate()
        rows = []
        loads = ((f"paced (a turn per ~{args.interval:.1f} s each)", args.interval), ("flat out", 0.0))
        for label, interval in loads:
            latencies, elapsed = await load(db, args.sessions, args.turns, interval)
            rows.append(
                [
                    label,
                    str(args.sessions),
                    str(len(latencies)),
                    f"{percentile(latencies, 50) * 1000:.1f} / {percentile(latencies, 99) * 1000:.1f}",
                    f"{len(latencies) / elapsed:.0f}",
                ]
            )
        await db.close()
    finally:
        server.stop()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
    print(markdown_table(["load", "sessions", "messages", "submit→stored p50 / p99 ms", "messages/s"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--startup-runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
