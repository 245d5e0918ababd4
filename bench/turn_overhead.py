"""Server overhead per text turn: `python -m bench.turn_overhead`.

Why: the server sits between the LLM and the user; whatever it adds to a token is latency the user hears
(the issue's target: p99 ≤ 5 ms at 50 sessions). The figure is the time from the fake upstream taking a
timestamp just before it writes a turn's last token (model `stamp-<n>`, tests/support/fake_ollama.py) to
a client reading the `response.text.delta` that carries it. The baseline, measured in the same run, is
the same stream read by the server's own LLM client (`OllamaChat`) straight from the upstream, so the
difference is what the websocket server adds.

Load: sessions start turns at a fixed total rate (default 100 turns/s, i.e. at 50 sessions each one
streams ~44 deltas/s, like a fast local LLM that never stops), with jittered gaps so they do not move in
lockstep. Back to back (`--rate 0`) the latency of a saturated closed loop is queueing that grows with the
session count (Little's law), not overhead; that mode shows capacity (turns/s) instead. Baseline and
server take turns in blocks (default 5 each), so slow changes in the machine's background load hit both.

Processes: the server is `python -m realtime serve`; the fake upstream runs in a child process and the
clients in this one. `time.perf_counter_ns()` is CLOCK_MONOTONIC on Linux, one clock for all processes,
so stamps compare across them. Keeping the upstream out of the clients' process means the two never wait
on one GIL (`--upstream thread` runs it in a thread instead, as the tests do). What the figure still holds
of the client: its loop's delay (a probe in the same loop, printed beside the figures) and its reading of
the deltas queued ahead of the stamped one (its CPU per turn is printed; `--tokens 0` leaves no queue).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import httpx

from bench.stats import markdown_table, percentile
from realtime.client import RealtimeClient
from realtime.protocol.client_events import ConversationItemCreate, InputText, ResponseCreate
from realtime.stages.llm import ChatDelta, ChatRequest, OllamaChat
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess, free_port

QUESTION = "hi"
INSTRUCTIONS = "You are a helpful voice assistant. Answer briefly and clearly."
BASELINE = "direct HTTP (baseline)"
SERVER = "through the server"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Turn = Callable[[], Awaitable[float | None]]  # one turn; returns the stamped token's latency in ms


@dataclass
class Phase:
    """One measured configuration: latencies (ms), the clients' loop lag (ms), and what it cost."""

    path: str
    sessions: int
    latency_ms: list[float] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the phase

    def cpu(self, name: str) -> float | None:
        """Cores busy in a process while the phase ran."""
        return self.cpu_s[name] / self.wall_s if name in self.cpu_s else None


def _serve_upstream(port: int, stop: ProcessEvent) -> None:
    """Child process: the fake upstream, until told to stop."""
    upstream = FakeOllama(port).start()
    stop.wait()
    upstream.stop()


@contextlib.contextmanager
def upstream_running(mode: str) -> Iterator[tuple[str, int | None]]:
    """The fake upstream in a child process (default) or a thread of this one; yields (url, its pid)."""
    port = free_port()
    if mode == "thread":
        upstream = FakeOllama(port).start()
        try:
            yield upstream.url, None
        finally:
            upstream.stop()
        return
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_serve_upstream, args=(port, stop), name="fake-ollama", daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/api/version", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not proc.is_alive():
            proc.kill()
            raise RuntimeError("the fake upstream did not start")
        time.sleep(0.05)
    try:
        yield url, proc.pid
    finally:
        stop.set()
        proc.join(timeout=10)


def _cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all its threads); this process when pid is None."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _stamp_ms(delta: str, received_ns: int) -> float:
    """Milliseconds from the upstream's stamp ("@<perf_counter_ns>", the end of a delta: tokens that arrive
    together are one delta) to `received_ns`."""
    return (received_ns - int(delta[delta.index("@") + 1 :])) / 1e6


async def _probe_loop_lag(out: list[float], interval: float) -> None:
    """How long a callback that becomes ready now waits for this loop (as a socket read's callback would)."""
    loop = asyncio.get_running_loop()

    def record(queued_ns: int) -> None:
        out.append((time.perf_counter_ns() - queued_ns) / 1e6)

    while True:
        await asyncio.sleep(interval)
        loop.call_soon(record, time.perf_counter_ns())


class Quota:
    """Sessions keep starting turns until the phase has enough samples (or its time is up)."""

    def __init__(self, samples: int, max_seconds: float, sessions: int) -> None:
        self.samples = samples
        self.max_seconds = max_seconds
        self.deadline = 0.0
        self.waiting = sessions  # sessions still in their warm-up turns
        self.all_waiting = asyncio.Event()
        self.start = asyncio.Event()
        self.full = asyncio.Event()

    def warmed_up(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_waiting.set()

    def go(self) -> None:
        self.deadline = time.monotonic() + self.max_seconds
        self.start.set()

    def more(self, have: int) -> bool:
        if have >= self.samples:
            self.full.set()
        return not self.full.is_set() and time.monotonic() < self.deadline

    async def pause(self, seconds: float) -> None:
        """Sleep between turns, but wake as soon as the block has its samples (so its wall time is exact)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.full.wait()


async def _session(turn: Turn, interval: float, warmup: int, quota: Quota, out: list[float]) -> None:
    """One session: warm-up turns, then turns every `interval` s on average (jittered; 0: back to back)."""
    for _ in range(warmup):
        await turn()
    quota.warmed_up()
    await quota.start.wait()
    loop = asyncio.get_running_loop()
    rng = random.Random()
    next_at = loop.time() + rng.uniform(0, interval)
    while True:
        await quota.pause(next_at - loop.time())
        if not quota.more(len(out)):
            return
        ms = await turn()
        if ms is not None:
            out.append(ms)
        quota.more(len(out))
        next_at = max(next_at + rng.uniform(0.5, 1.5) * interval, loop.time())


def direct_turn(chat: OllamaChat, model: str) -> Turn:
    """Baseline: the server's own upstream client, reading the stream in this process."""
    messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": QUESTION}]
    request = ChatRequest(model=model, messages=messages)

    async def turn() -> float | None:
        ms = None
        async for chunk in chat.stream_chat(request):
            if isinstance(chunk, ChatDelta) and "@" in chunk.content:
                ms = _stamp_ms(chunk.content, time.perf_counter_ns())
        return ms

    return turn


def server_turn(client: RealtimeClient) -> Turn:
    """One text turn through the server; the sample is taken as the stamped delta is read."""

    async def turn() -> float | None:
        await client.send(ConversationItemCreate("user", (InputText(QUESTION),)))
        await client.send(ResponseCreate())
        ms = None
        while True:
            event = await client.recv()
            received = time.perf_counter_ns()
            if event["type"] == "response.text.delta" and "@" in event["delta"]:
                ms = _stamp_ms(event["delta"], received)
            elif event["type"] == "response.done":
                if event["response"]["status"] != "completed":
                    raise RuntimeError(f"turn did not complete: {event['response']}")
                return ms

    return turn


async def _measure(
    phase: Phase, turns: list[Turn], samples: int, warmup: int, args: argparse.Namespace, pids: dict[str, int | None]
) -> None:
    """One block of a phase: `samples` more turns at the configured rate; adds to the phase's figures."""
    loop = asyncio.get_running_loop()
    quota = Quota(samples, args.max_seconds, len(turns))
    interval = len(turns) / args.rate if args.rate else 0.0
    latency: list[float] = []
    tasks = [
        loop.create_task(_session(t, interval, warmup, quota, latency), name=f"session-{i}")
        for i, t in enumerate(turns)
    ]
    warming = loop.create_task(quota.all_waiting.wait())
    await asyncio.wait([warming, *tasks], return_when=asyncio.FIRST_COMPLETED)
    warming.cancel()
    for task in tasks:
        if task.done():
            task.result()  # a session that failed its warm-up ends the benchmark here
    probe = loop.create_task(_probe_loop_lag(phase.loop_lag_ms, 0.001), name="loop-lag-probe")
    cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    quota.go()
    try:
        await asyncio.gather(*tasks)
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
    phase.wall_s += time.perf_counter() - t0
    phase.latency_ms += latency
    for name, pid in pids.items():
        phase.cpu_s[name] = phase.cpu_s.get(name, 0.0) + _cpu_seconds(pid) - cpu0[name]


async def run(args: argparse.Namespace) -> list[Phase]:
    """Per session count: baseline and server blocks alternate, so both meet the same background noise."""
    model = f"stamp-{args.tokens}"
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp, upstream_running(args.upstream) as (url, up_pid):
        env = {"REALTIME_OLLAMA_URL": url, "REALTIME_LLM_MODEL": model, "REALTIME_LOG_LEVEL": "WARNING"}
        env |= {"REALTIME_VOICE": "off", "REALTIME_TTS_ENGINE": "off"}  # the text path only: no speech in or out
        env |= {"REALTIME_EVENT_LOOP": args.loop}
        server = ServerProcess(env, Path(tmp) / "state", Path(tmp) / "server.log").start()
        try:
            assert server.process is not None
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(limits=limits) as http:
                chat = OllamaChat(url, http)
                for n in args.sessions:
                    clients = [await RealtimeClient.connect(server.ws_url, server.token(f"bench{i}")) for i in range(n)]
                    try:
                        for client in clients:
                            await client.send({"type": "session.update", "session": {"model": model}})
                            await client.recv_until("session.updated")
                        base, via = Phase(BASELINE, n), Phase(SERVER, n)
                        direct = [direct_turn(chat, model) for _ in range(n)]
                        through = [server_turn(c) for c in clients]
                        pids: dict[str, int | None] = {"bench": None, "server": server.process.pid}
                        if up_pid is not None:
                            pids["upstream"] = up_pid
                        for block in range(args.blocks):
                            samples = args.samples * (block + 1) // args.blocks - args.samples * block // args.blocks
                            warmup = args.warmup if block == 0 else 0
                            await _measure(base, direct, samples, warmup, args, pids)
                            await _measure(via, through, samples, warmup, args, pids)
                        phases += [base, via]
                    finally:
                        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        finally:
            server.stop()
    return phases


def _ms(samples: list[float], ps: tuple[int, ...] = (50, 90, 99)) -> list[str]:
    return [f"{percentile(samples, p):.2f}" for p in ps]


def report(phases: list[Phase]) -> str:
    by_sessions: dict[int, dict[str, Phase]] = {}
    for ph in phases:
        by_sessions.setdefault(ph.sessions, {})[ph.path] = ph
    rows = []
    for n, pair in by_sessions.items():
        base, via = pair[BASELINE], pair[SERVER]
        for ph in (base, via):
            turns_per_s = len(ph.latency_ms) / ph.wall_s
            busy = [ph.cpu(k) for k in ("server", "upstream", "bench")]
            cpu = " / ".join("–" if c is None else f"{c * 100:.0f}" for c in busy)
            per_turn = " / ".join(
                "–" if k == "server" and ph is base else f"{ph.cpu_s[k] / len(ph.latency_ms) * 1000:.2f}"
                for k in ("server", "bench")
            )
            rows.append(
                [str(n), ph.path, str(len(ph.latency_ms)), *_ms(ph.latency_ms), *_ms(ph.loop_lag_ms, (50, 99))]
                + [f"{turns_per_s:.0f}", cpu, per_turn]
            )
        cells = []
        for p in (50, 90, 99):
            b, v = percentile(base.latency_ms, p), percentile(via.latency_ms, p)
            cells.append(f"**{v - b:.2f}** (×{v / b:.1f})")
        rows.append([str(n), "server adds: difference (ratio)", "", *cells, "", "", "", "", ""])
    header = ["sessions", "path", "samples", "p50 ms", "p90 ms", "p99 ms", "client loop lag p50 ms"]
    header += ["client loop lag p99 ms", "turns/s", "CPU % server / upstream / bench", "CPU ms per turn server / bench"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,50", help="comma-separated concurrent session counts")
    parser.add_argument("--samples", type=int, default=1500, help="measured turns per configuration")
    parser.add_argument("--rate", type=float, default=100.0, help="turns/s over all sessions (0: back to back)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens before the stamped one (model stamp-<n>)")
    parser.add_argument("--blocks", type=int, default=5, help="alternating baseline/server blocks per count")
    parser.add_argument(
        "--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="the server's REALTIME_EVENT_LOOP"
    )
    parser.add_argument("--warmup", type=int, default=2, help="turns per session before measuring")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="bound on each block")
    parser.add_argument("--upstream", choices=("process", "thread"), default="process")
    args = parser.parse_args(argv)
    args.sessions = [int(s) for s in args.sessions.split(",")]
    print(
        f"turn overhead: sessions {args.sessions}, {args.samples} samples each, {args.rate:g} turns/s, "
        f"model stamp-{args.tokens}, upstream in a {args.upstream}; load average {_loadavg()}",
        flush=True,
    )
    t0 = time.perf_counter()
    phases = asyncio.run(run(args))
    print(report(phases))
    print(f"took {time.perf_counter() - t0:.0f} s; load average {_loadavg()}")
    return 0


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
