"""Load and soak through the real server: many sessions on loopback, bounded in count and time.

    .venv/bin/python -m bench.load stream [--sessions 300] [--frame-ms 20] [--seconds 60]
    .venv/bin/python -m bench.load idle   [--sessions 1000] [--seconds 30]
    .venv/bin/python -m bench.load soak   [--sessions 200] [--streaming 100] [--seconds 600] [--churn 120]

What runs: the real server (`python -m realtime serve`, tests/support/server.py) with voice input on
(Silero VAD + Whisper base, as shipped), TTS off, no database, INFO log (its ERROR lines and tracebacks
are counted); `--respond` (default) answers committed
turns with the scripted fake LLM (tests/support/fake_ollama.py, model `echo`, text only), so the LLM
costs nothing and turns still produce responses. The clients run in `--clients` separate processes
(default 3), raw `websockets` + msgpack, every audio message pre-encoded once; their CPU is measured
and printed apart from the server's.

`--servers K` starts K server processes (each its own state, the same settings) and opens session i on
process i mod K, as a balancer that spreads sessions evenly would (docs/scaling.md; the balancer's own
cost is not in the figures); CPU, memory, file descriptors, tasks and the frame histogram are summed over
the processes. `--balancer nginx` puts nginx (bench/scale_out.py's configuration, round robin for new
sessions) in front: the clients connect to it, and its CPU is printed (it is part of "rest of the machine").

stream: every session sends `--frame-ms` of PCM16 at `--rate` on a real-time clock (default 24 kHz, the
protocol's default, and 20 ms: what our JS client sends, 480 samples, 1 KiB a message; `--rate 16000` is a
client sending the 16 kHz the VAD and Whisper use, which the server then does not resample). The clock of
each client process ticks every 5 ms and each session has a random slot in its frame period, so arrivals
are spread as independent browsers' would be; its first message is a random part of one VAD frame (32 ms),
so its VAD frames also fall due at a phase of their own (`--no-vad-phase`: sessions opened together then
complete their VAD frames in the same periods, 5 of every 8 at 20 ms messages, none in the other 3).
The audio is low noise (-50 dBFS), so the VAD judges every frame, and now and then real speech (Piper, a
short sentence): `--turns-per-min` spoken turns a minute across all sessions (Poisson), each a full turn
(VAD -> partial and final transcripts -> commit -> a response; the server's count of turns by what ended
them, the end-of-turn model or silence, is printed). Once a second each session also sends a protocol
`ping` right after an audio frame.
`--streaming K` makes only K of the sessions stream; the others stay connected and answer pings.

Two latency figures, both over the measurement window only (after `--warmup` s):
  frame p50/p90/p99 (server)  the `realtime_audio_frame_seconds` histogram (realtime/metrics.py), read from
      /metrics before and after: from the moment the session takes an `input_audio_buffer.append` message
      off the websocket to the moment its audio is resampled, buffered, its VAD probabilities are back from
      the shared batcher and fed to turn detection (taken in realtime/session.py: `_direct_frame` for a
      message taken as it arrives, `_handle_frame` for one that went through the reader; observed where
      the listener applies the batcher's answer, realtime/listener.py; it includes the wait for the
      VAD). The share taken
      directly is printed too. Bucket resolution: the figure is the upper bound of the bucket holding the
      percentile; the share of frames over 10 ms (the target's bound, a bucket bound) is exact. It does not
      include the time a message waits in the transport's queue before the reader takes it (none, for a
      message taken directly).
  ping p50/p99 (client)   the round trip of those pings: client send -> server socket -> the session's
      reader (behind the audio frames sent before it) -> the outbound queue -> client receive. This one
      includes the transport queue and both event loops' lag, the clients' too: an upper bound.

Lost messages: every server event carries `seq`; each client checks it rises by exactly 1 on every
connection (a gap or a repeat counts as lost). Also counted: pings without a pong by the end, `error`
events by code, and connections the server closed (by close code). All must be 0.

Memory and CPU: server RSS from /proc at 0 sessions (after a warm-up) and with N connected, divided by
N; the server's CPU (all its threads) over the window, per session; file descriptors (/proc/<pid>/fd)
and asyncio tasks (the `realtime_asyncio_tasks` gauge at /metrics) before, during and after.

idle: N sessions connect and do nothing but answer the server's pings (10 s) for `--seconds`.
soak: as stream, for `--seconds` (600 for the 10-minute soak), with samples of RSS, fds and tasks every
`--sample-every` s; `--churn S` closes each session cleanly on average every S seconds and opens a new
one, so leaks on the open/close path would show. Memory flat = the RSS slope over the second half (and
the last third) of the window. After the clients close, the bench waits (up to 120 s) for the server's
session count to reach 0 and prints how long it took: a server behind real time reads a close frame only
after the audio queued before it.

What distorts it: the box has 2 cores and is shared; clients and server compete for them (hence the
clients' CPU and the rest of the machine's are printed, and the load average). `--quiet-wait` waits for
other processes to calm down before measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.stats import markdown_table, percentile
from realtime.protocol.codec import Encoding, encode_frame

DEFAULT_RATE = 24_000
TICK_S = 0.005
SUBPROTOCOL = Encoding.MSGPACK.subprotocol
NOISE_DBFS = -50.0
VAD_FRAME = 512  # samples at 16 kHz: the server's VAD judges a session's audio in steps of this
SENTENCES = [
    "Please set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Turn off the lights in the kitchen.",
    "Add milk and bread to my list.",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- what the coordinator measures in /proc and /metrics ------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def balancer_cpu(proxy: Any) -> float:
    """CPU seconds of nginx so far: its master and its workers (the master's children), 0 without one."""
    if proxy is None or proxy.process is None:
        return 0.0
    master = proxy.process.pid
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Probe:
    """One look at the server: /proc and /metrics at one moment."""

    at: float
    rss: int
    fds: int
    tasks: float
    sessions: float
    cpu: float  # server CPU seconds so far
    busy: float  # the machine's busy CPU seconds so far
    clients_cpu: float
    frame_buckets: dict[float, float]  # le -> cumulative count
    frame_count: float
    direct: float  # audio appends taken as they came off the socket (realtime_audio_messages_direct)
    turns_ended: dict[str, float]  # spoken turns committed so far, by what ended them (realtime_spoken_turns)


def read_metrics(url: str) -> dict[str, Any]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, Any] = {"buckets": {}, "turns_ended": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "realtime_audio_frame_seconds_bucket":
                out["buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name == "realtime_audio_frame_seconds_count":
                out["frame_count"] = sample.value
            elif sample.name == "realtime_spoken_turns_total":
                out["turns_ended"][sample.labels["ended_by"]] = sample.value
            elif sample.name == "realtime_audio_messages_direct_total":
                out["direct"] = sample.value
            elif sample.name == "realtime_asyncio_tasks":
                out["tasks"] = sample.value
            elif sample.name == "realtime_sessions":
                out["sessions"] = sample.value
    return out


def probe(url: str, pid: int, client_pids: list[int]) -> Probe:
    m = read_metrics(url)
    clients = 0.0
    for p in client_pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            clients += cpu_seconds(p)
    return Probe(
        at=time.monotonic(),
        rss=rss_bytes(pid),
        fds=fd_count(pid),
        tasks=m.get("tasks", float("nan")),
        sessions=m.get("sessions", float("nan")),
        cpu=cpu_seconds(pid),
        busy=machine_busy_seconds(),
        clients_cpu=clients,
        frame_buckets=m["buckets"],
        frame_count=m.get("frame_count", 0.0),
        direct=m.get("direct", 0.0),
        turns_ended=m["turns_ended"],
    )


def probe_all(servers: list[tuple[str, int]], client_pids: list[int]) -> Probe:
    """One look at every server process (url, pid), summed as if they were one server."""
    parts = [probe(url, pid, client_pids if i == 0 else []) for i, (url, pid) in enumerate(servers)]
    causes = {k for part in parts for k in part.turns_ended}
    buckets: dict[float, float] = {}
    for part in parts:
        for le, count in part.frame_buckets.items():
            buckets[le] = buckets.get(le, 0.0) + count
    return Probe(
        at=parts[0].at,
        rss=sum(p.rss for p in parts),
        fds=sum(p.fds for p in parts),
        tasks=sum(p.tasks for p in parts),
        sessions=sum(p.sessions for p in parts),
        cpu=sum(p.cpu for p in parts),
        busy=parts[-1].busy,
        clients_cpu=parts[0].clients_cpu,
        frame_buckets=buckets,
        frame_count=sum(p.frame_count for p in parts),
        direct=sum(p.direct for p in parts),
        turns_ended={k: sum(p.turns_ended.get(k, 0.0) for p in parts) for k in causes},
    )


def bucket_percentile(before: Probe, after: Probe, p: float) -> float:
    """The upper bound (s) of the histogram bucket holding percentile p of the frames between two probes."""
    count = after.frame_count - before.frame_count
    if count <= 0:
        return float("nan")
    for le in sorted(after.frame_buckets):
        if after.frame_buckets[le] - before.frame_buckets.get(le, 0.0) >= p / 100 * count:
            return le
    return float("inf")


def share_over(before: Probe, after: Probe, bound: float) -> float:
    """The fraction of the frames between two probes that took longer than `bound` (a bucket bound, s)."""
    count = after.frame_count - before.frame_count
    if count <= 0 or bound not in after.frame_buckets:
        return float("nan")
    return 1 - (after.frame_buckets[bound] - before.frame_buckets.get(bound, 0.0)) / count


# ---- audio, encoded once ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audio:
    noise: list[bytes]  # pre-encoded append messages, cycled
    speech: list[list[bytes]]  # one list of pre-encoded append messages per sentence
    lead_in: bytes  # PCM16 noise, one VAD frame long: each session's first message carries a random part


def prepare_audio(frame_ms: int, speech: bool, rate: int = DEFAULT_RATE) -> Audio:
    step = rate * frame_ms // 1000
    rng = np.random.default_rng(7)
    level = 10 ** (NOISE_DBFS / 20) * 32768
    noise_pcm = (rng.standard_normal(step * 50) * level).astype("<i2")

    def encode(pcm: np.ndarray) -> list[bytes]:
        frames = []
        for i in range(0, len(pcm) - step + 1, step):
            wire = {"type": "input_audio_buffer.append", "audio": pcm[i : i + step].astype("<i2").tobytes()}
            frames.append(encode_frame(wire, Encoding.MSGPACK))
        return frames

    spoken: list[list[bytes]] = []
    if speech:
        from tests.support.speech import synthesize

        for text in SENTENCES:
            voiced = synthesize(text, rate).astype(np.int32)
            # the speech over the same noise floor, then 1.2 s of it: the turn ends inside the utterance
            tail = len(voiced) + int(1.2 * rate)
            mix = (rng.standard_normal(tail) * level).astype(np.int32)
            mix[: len(voiced)] += voiced
            spoken.append(encode(np.clip(mix, -32768, 32767)))
    lead_in = noise_pcm[: -(-VAD_FRAME * rate // 16_000)].tobytes()
    return Audio(noise=encode(noise_pcm), speech=spoken, lead_in=lead_in)


# ---- the clients (run in worker processes) ------------------------------------------------------------


@dataclass
class WorkerConfig:
    mode: str
    ws_urls: list[str]  # per token: the server process its session opens on
    tokens: list[str]
    streaming: list[bool]  # per token: streams audio (else: connected, answering pings only)
    audio: Audio
    frame_ms: int
    rate: int
    turns_per_min_each: float  # per session
    respond: bool
    partials: bool
    turn_model: bool  # turn_detection.turn_model: the end-of-turn model at each pause
    vad_phase: bool  # each session's VAD frames at a random phase (else every session's fall due together)
    churn_s: float | None
    probe_every_s: float
    seed: int


@dataclass
class WorkerStats:
    sessions: int = 0
    connect_failures: int = 0
    frames: int = 0
    frames_in_window: int = 0
    pings: int = 0
    pongs: int = 0
    unanswered: int = 0
    rtt_ms: list[float] = field(default_factory=list)
    seq_gaps: int = 0
    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    server_closes: Counter[str] = field(default_factory=Counter)
    utterances: int = 0
    speech_started: int = 0
    turns_committed: int = 0
    responses: int = 0
    reconnects: int = 0
    tick_late_ms: list[float] = field(default_factory=list)
    gap_examples: list[str] = field(default_factory=list)
    open_failures: Counter[str] = field(default_factory=Counter)


class OpenFailed(Exception):
    """The server answered the open with something else than the session (too_many_sessions, ...)."""


class ClientSession:
    """One session of the load: its link, the audio it is playing, and what it saw."""

    def __init__(
        self, cfg: WorkerConfig, url: str, token: str, streaming: bool, stats: WorkerStats, rng: random.Random
    ) -> None:
        self.cfg, self.url, self.token, self.streaming, self.stats, self.rng = cfg, url, token, streaming, stats, rng
        self.ws: ClientConnection | None = None
        self.receiver: asyncio.Task[None] | None = None
        self.last_seq = 0
        self.closing = False
        self.slot = rng.randrange(max(1, round(cfg.frame_ms / 1000 / TICK_S)))
        self.noise_at = rng.randrange(len(cfg.audio.noise))
        self.lead_in = self._lead_in(random.Random(f"{cfg.seed}:{token}"))  # its own draws: turns unchanged
        self.utterance: list[bytes] | None = None
        self.utterance_at = 0
        self.next_turn_at = self._next_turn(time.monotonic())
        self.next_probe_at = time.monotonic() + rng.random() * cfg.probe_every_s
        self.close_at = self._next_close(time.monotonic())
        self.pending_pings: set[int] = set()
        self.measuring = False

    def _lead_in(self, rng: random.Random) -> bytes | None:
        """The first message: a random part of one VAD frame of noise, so that this session's VAD frames fall
        due at a phase of their own, as an independent browser's do. Sessions opened together and sending
        equal messages would otherwise complete their frames in the same periods (at 20 ms messages and 32 ms
        frames, in 5 of every 8 periods and none in the other 3): every session's frame due at once."""
        if not self.cfg.vad_phase:
            return None
        pcm = self.cfg.audio.lead_in
        samples = rng.randrange(1, len(pcm) // 2 + 1)
        wire = {"type": "input_audio_buffer.append", "audio": pcm[: 2 * samples]}
        return encode_frame(wire, Encoding.MSGPACK)

    def _next_turn(self, now: float) -> float:
        rate = self.cfg.turns_per_min_each / 60
        return now + self.rng.expovariate(rate) if rate > 0 and self.cfg.audio.speech else float("inf")

    def _next_close(self, now: float) -> float:
        churn = self.cfg.churn_s
        return now + self.rng.expovariate(1 / churn) if churn else float("inf")

    async def open(self) -> None:
        self.ws = await connect(
            self.url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            ping_interval=None,
            compression=None,
            open_timeout=60,
            max_size=1 << 22,
        )
        self.last_seq = 0
        try:
            await self._expect(self.ws, "session.created")
            if self.cfg.mode != "idle" and self.streaming:
                td = {"type": "server_vad", "create_response": self.cfg.respond, "turn_model": self.cfg.turn_model}
                session = {
                    "turn_detection": td,
                    "input_audio_transcription": {"partials": self.cfg.partials},
                    "input_audio_format": {"sample_rate": self.cfg.rate},
                }
                update = {"type": "session.update", "session": session}
                await self.ws.send(encode_frame(update, Encoding.MSGPACK))
                await self._expect(self.ws, "session.updated")
        except BaseException:
            ws, self.ws = self.ws, None
            self.closing = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
            raise
        self.receiver = asyncio.get_running_loop().create_task(self._receive(self.ws), name="receiver")
        self.closing = False  # only now: frames and pings go out once the session is set up

    async def _expect(self, ws: ClientConnection, kind: str) -> None:
        """Read up to the event `kind` (answering pings on the way); anything else first is a failure."""
        while True:
            event = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 60))
            self._check_seq(event)
            if event.get("type") == kind:
                return
            if event.get("type") == "ping":
                await ws.send(encode_frame({"type": "pong", "ts": event["ts"]}, Encoding.MSGPACK))
                continue
            code = event.get("error", {}).get("code") if event.get("type") == "error" else None
            raise OpenFailed(f"{event.get('type')} {code or ''}".strip())

    def _check_seq(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if seq != self.last_seq + 1:
            self.stats.seq_gaps += 1
            if len(self.stats.gap_examples) < 10:
                self.stats.gap_examples.append(f"{self.last_seq}->{seq} {event.get('type')}")
        if isinstance(seq, int):
            self.last_seq = seq
        self.stats.events += 1

    async def _receive(self, ws: ClientConnection) -> None:
        stats = self.stats
        try:
            async for data in ws:
                event = msgpack.unpackb(data)
                self._check_seq(event)
                kind = event.get("type")
                if kind == "ping":
                    await ws.send(encode_frame({"type": "pong", "ts": event["ts"]}, Encoding.MSGPACK))
                elif kind == "pong":
                    ts = event["ts"]
                    if ts in self.pending_pings:
                        self.pending_pings.discard(ts)
                        stats.pongs += 1
                        if self.measuring:
                            stats.rtt_ms.append((time.monotonic_ns() // 1000 - ts) / 1000)
                elif kind == "error":
                    stats.errors[event["error"]["code"]] += 1
                elif kind == "input_audio_buffer.speech_started":
                    stats.speech_started += 1
                elif kind == "conversation.item.created" and event["item"]["role"] == "user":
                    stats.turns_committed += 1
                elif kind == "response.done":
                    stats.responses += 1
        except ConnectionClosed:
            pass
        if not self.closing:
            code = ws.close_code
            stats.server_closes[str(code)] += 1

    def next_frame(self, now: float) -> bytes:
        audio = self.cfg.audio
        if self.lead_in is not None:
            frame, self.lead_in = self.lead_in, None
            return frame
        if self.utterance is None and now >= self.next_turn_at:
            self.utterance = audio.speech[self.rng.randrange(len(audio.speech))]
            self.utterance_at = 0
            self.stats.utterances += 1
        if self.utterance is not None:
            frame = self.utterance[self.utterance_at]
            self.utterance_at += 1
            if self.utterance_at == len(self.utterance):
                self.utterance = None
                self.next_turn_at = self._next_turn(now)
            return frame
        frame = audio.noise[self.noise_at]
        self.noise_at = (self.noise_at + 1) % len(audio.noise)
        return frame

    async def send_frame(self, now: float) -> None:
        ws = self.ws
        if ws is None or self.closing:
            return
        try:
            await ws.send(self.next_frame(now))
            self.stats.frames += 1
            self.stats.frames_in_window += self.measuring
            if now >= self.next_probe_at:
                self.next_probe_at = now + self.cfg.probe_every_s
                ts = time.monotonic_ns() // 1000
                self.pending_pings.add(ts)
                self.stats.pings += 1
                await ws.send(encode_frame({"type": "ping", "ts": ts}, Encoding.MSGPACK))
        except ConnectionClosed:
            return

    async def close(self) -> None:
        self.closing = True
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
        if self.receiver is not None:
            await asyncio.gather(self.receiver, return_exceptions=True)
        self.stats.unanswered += len(self.pending_pings)
        self.pending_pings.clear()


async def _run_worker(cfg: WorkerConfig, go: Any, measuring: Any, stop: Any, results: Any, index: int) -> None:
    stats = WorkerStats()
    rng = random.Random(cfg.seed)
    sessions = [
        ClientSession(cfg, url, t, on, stats, rng)
        for url, t, on in zip(cfg.ws_urls, cfg.tokens, cfg.streaming, strict=True)
    ]
    gate = asyncio.Semaphore(16)

    async def open_one(s: ClientSession) -> None:
        async with gate:
            try:
                await s.open()
                stats.sessions += 1
            except Exception as exc:
                stats.connect_failures += 1
                stats.open_failures[str(exc) if isinstance(exc, OpenFailed) else type(exc).__name__] += 1

    await asyncio.gather(*(open_one(s) for s in sessions))
    results.put(("ready", index, stats.sessions, stats.connect_failures))
    await asyncio.to_thread(go.wait)
    live = [s for s in sessions if s.ws is not None]
    if cfg.mode != "idle":
        ticker = asyncio.get_running_loop().create_task(_tick(cfg, live, measuring, stop, stats), name="ticker")
        await asyncio.to_thread(stop.wait)
        await ticker
    else:
        await _idle(live, measuring, stop)
    await asyncio.sleep(2.0)  # pongs still on their way
    await asyncio.gather(*(s.close() for s in sessions))
    results.put(("done", index, stats))


async def _idle(sessions: list[ClientSession], measuring: Any, stop: Any) -> None:
    while not stop.is_set():
        for s in sessions:
            s.measuring = measuring.is_set()
        await asyncio.sleep(0.2)


async def _tick(cfg: WorkerConfig, sessions: list[ClientSession], measuring: Any, stop: Any, st: WorkerStats) -> None:
    """One clock for all of this process's sessions: every 5 ms, the sessions whose slot it is send a frame."""
    slots = max(1, round(cfg.frame_ms / 1000 / TICK_S))
    by_slot: list[list[ClientSession]] = [[] for _ in range(slots)]
    for s in sessions:
        by_slot[s.slot].append(s)
    started = time.monotonic()
    tick = 0
    reopen: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        due = started + tick * TICK_S
        now = time.monotonic()
        await asyncio.sleep(max(0.0, due - now))  # yields even when late, so the receivers run
        now = time.monotonic()
        on = measuring.is_set()
        if on:
            st.tick_late_ms.append((now - due) * 1000)
        for s in by_slot[tick % slots]:
            s.measuring = on
            if now >= s.close_at and s.utterance is None and s.ws is not None:
                s.close_at = float("inf")  # now, not in the task: a late ticker may pass here again first
                task = asyncio.get_running_loop().create_task(_reopen(s), name="reopen")
                reopen.add(task)
                task.add_done_callback(reopen.discard)
                continue
            if s.streaming:
                await s.send_frame(now)
        tick += 1
    await asyncio.gather(*reopen, return_exceptions=True)


async def _reopen(s: ClientSession) -> None:
    """Churn: close cleanly (the session ends), open a new one for the same user."""
    s.closing = True  # no more frames or pings; the pongs on their way still count
    for _ in range(40):
        if not s.pending_pings:
            break
        await asyncio.sleep(0.05)
    await s.close()
    try:
        await s.open()
        s.stats.reconnects += 1
    except Exception as exc:
        s.stats.connect_failures += 1
        s.stats.open_failures[str(exc) if isinstance(exc, OpenFailed) else type(exc).__name__] += 1
    s.close_at = s._next_close(time.monotonic())


def worker_main(cfg: WorkerConfig, go: Any, measuring: Any, stop: Any, results: Any, index: int) -> None:
    _raise_fd_limit()
    asyncio.run(_run_worker(cfg, go, measuring, stop, results, index))


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- the coordinator ----------------------------------------------------------------------------------


def merge(stats: list[WorkerStats]) -> WorkerStats:
    total = WorkerStats()
    for s in stats:
        for name in (
            "sessions",
            "connect_failures",
            "frames",
            "frames_in_window",
            "pings",
            "pongs",
            "unanswered",
            "seq_gaps",
            "events",
            "utterances",
            "speech_started",
            "turns_committed",
            "responses",
            "reconnects",
        ):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        total.rtt_ms += s.rtt_ms
        total.tick_late_ms += s.tick_late_ms
        total.errors.update(s.errors)
        total.open_failures.update(s.open_failures)
        total.gap_examples += s.gap_examples[: 10 - len(total.gap_examples)]
        total.server_closes.update(s.server_closes)
    return total


def wait_for_quiet(own: list[int], max_wait_s: float, threshold: float = 0.3) -> float:
    """Wait (at most max_wait_s) until other processes use < threshold cores over 3 s; their last use."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, own0, t0 = machine_busy_seconds(), sum(map(cpu_seconds, own)), time.monotonic()
        time.sleep(3.0)
        other = (machine_busy_seconds() - busy0 - (sum(map(cpu_seconds, own)) - own0)) / (time.monotonic() - t0)
        if other < threshold or time.monotonic() > deadline:
            return other


def start_server(args: argparse.Namespace, workdir: Path, llm_url: str, jwt_secret: str) -> Any:
    from tests.support.server import ServerProcess

    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "REALTIME_VOICE": "on" if args.mode != "idle" or args.idle_voice else "off",
        "REALTIME_TTS_ENGINE": "off",
        "REALTIME_DATABASE_URL": "none",
        "REALTIME_MAX_SESSIONS": str(args.sessions + 50),
        "REALTIME_OLLAMA_URL": llm_url,
        "REALTIME_LLM_MODEL": "echo",
        "REALTIME_LOG_LEVEL": "INFO",
        "REALTIME_JWT_SECRET": jwt_secret,  # one key for all processes: a token opens a session on any
    }
    return ServerProcess(env, workdir / "state", workdir / "server.log").start(timeout=180)


def warm_up(server: Any) -> None:
    """A few sessions opened and closed, so one-time allocations are not counted as per-session memory."""
    from realtime.client import RealtimeClient

    async def one(i: int) -> None:
        async with await RealtimeClient.connect(server.ws_url, server.token(f"warm{i}")) as client:
            await client.send({"type": "ping", "ts": 1})
            await client.recv()

    async def all_of_them() -> None:
        await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(all_of_them())


def wait_sessions(url: str, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        sessions = read_metrics(url).get("sessions", float("nan"))
        if sessions == count or time.monotonic() > deadline:
            return sessions
        time.sleep(0.2)


def run(args: argparse.Namespace) -> int:
    _raise_fd_limit()
    mode = args.mode
    workdir = Path(tempfile.mkdtemp(prefix=f"load-{mode}-"))
    fake = None
    llm_url = "http://127.0.0.1:9"
    if args.respond and mode != "idle":
        from tests.support.fake_ollama import FakeOllama
        from tests.support.server import free_port

        fake = FakeOllama(free_port()).start()
        llm_url = fake.url
    print(f"[load] {mode}: {args.sessions} sessions, load average {load_average()}", flush=True)
    audio = prepare_audio(args.frame_ms, speech=mode != "idle" and args.turns_per_min > 0, rate=args.rate)
    secret = os.urandom(32).hex()
    servers = [
        start_server(args, workdir / f"server{k}" if args.servers > 1 else workdir, llm_url, secret)
        for k in range(args.servers)
    ]
    proxy = None
    if args.balancer == "nginx":
        from bench.scale_out import Nginx, nginx_binary
        from tests.support.server import free_port

        binary = nginx_binary()
        if binary is None:
            raise SystemExit("nginx is not installed: apt-get install nginx-light")
        nodes = {f"node{k}": server.port for k, server in enumerate(servers)}
        proxy = Nginx(binary, free_port(), nodes, workdir / "nginx").start()
        print(f"[load] nginx pid {proxy.process.pid} on {proxy.ws_url}, round robin over {len(servers)}", flush=True)
    pids = [server.process.pid for server in servers]
    ends = [(server.url, server.process.pid) for server in servers]
    for server in servers:
        print(f"[load] server pid {server.process.pid}, log {server.log_path}", flush=True)
    ctx = mp.get_context("spawn")
    go, measuring, stop = ctx.Event(), ctx.Event(), ctx.Event()
    results: Any = ctx.Queue()
    workers: list[Any] = []
    try:
        for server in servers:
            warm_up(server)
        time.sleep(1.0)
        zero = probe_all(ends, [])
        ttl = args.seconds + args.warmup + 3600
        # session i opens on process i mod K: a balancer that spreads sessions evenly (its own cost not counted)
        homes = [servers[i % len(servers)] for i in range(args.sessions)]
        tokens = [home.token(f"load{i}", ttl=ttl) for i, home in enumerate(homes)]
        urls = [home.ws_url if proxy is None else proxy.ws_url for home in homes]  # nginx: round robin
        streaming = args.streaming if args.streaming is not None else args.sessions
        flags = [i < streaming for i in range(args.sessions)]
        each = args.turns_per_min / max(1, streaming)
        for w in range(args.clients):
            cfg = WorkerConfig(
                mode=mode,
                ws_urls=urls[w :: args.clients],
                tokens=tokens[w :: args.clients],
                streaming=flags[w :: args.clients],
                audio=audio,
                frame_ms=args.frame_ms,
                rate=args.rate,
                turns_per_min_each=each,
                respond=args.respond,
                partials=args.partials,
                turn_model=args.turn_model,
                vad_phase=args.vad_phase,
                churn_s=args.churn if mode == "soak" else None,
                probe_every_s=args.probe_every,
                seed=1000 + w,
            )
            proc = ctx.Process(target=worker_main, args=(cfg, go, measuring, stop, results, w), daemon=True)
            proc.start()
            workers.append(proc)
        client_pids = [p.pid for p in workers]
        opened_at = time.monotonic()
        ready = [results.get(timeout=600) for _ in workers]
        connected = sum(r[2] for r in ready)
        print(f"[load] {connected} sessions open in {time.monotonic() - opened_at:.1f}s", flush=True)
        time.sleep(2.0)
        full = probe_all(ends, client_pids)
        if args.quiet_wait > 0:
            other = wait_for_quiet([*pids, *client_pids], args.quiet_wait)
            print(f"[load] other processes use {other:.2f} cores; load average {load_average()}", flush=True)
        go.set()
        time.sleep(args.warmup if mode != "idle" else 0.0)
        measuring.set()
        start = probe_all(ends, client_pids)
        load_at_start = load_average()
        balancer_at = balancer_cpu(proxy)
        samples = [start]
        deadline = start.at + args.seconds
        while time.monotonic() < deadline:
            time.sleep(min(args.sample_every, max(0.0, deadline - time.monotonic())))
            samples.append(probe_all(ends, client_pids))
            if mode == "soak":
                s = samples[-1]
                print(
                    f"[soak] t={s.at - start.at:5.0f}s rss={s.rss / 2**20:7.1f} MiB fds={s.fds} "
                    f"tasks={s.tasks:.0f} sessions={s.sessions:.0f} load {load_average()}",
                    flush=True,
                )
        end = samples[-1]
        load_at_end = load_average()
        balancer_cores = (balancer_cpu(proxy) - balancer_at) / (end.at - start.at)
        measuring.clear()
        stop.set()
        done = [results.get(timeout=300) for _ in workers]
        for proc in workers:
            proc.join(timeout=30)
        stats = merge([d[2] for d in done])
        closed_at = time.monotonic()
        left = sum(wait_sessions(server.url, 0, 120) for server in servers)
        drain_s = time.monotonic() - closed_at
        time.sleep(1.0)
        after = probe_all(ends, [])
    finally:
        stop.set()
        go.set()
        for proc in workers:
            if proc.is_alive():
                proc.kill()
        if proxy is not None:
            proxy.stop()
        codes = [server.stop() for server in servers]
        if fake is not None:
            fake.stop()
    problems = sum(
        1 for server in servers for line in server.log_text().splitlines() if " ERROR " in line or "Traceback" in line
    )
    report(args, stats, zero, full, start, end, after, samples, (left, drain_s), problems, (load_at_start, load_at_end))
    if proxy is not None:
        print(f"[load] nginx CPU over the window: {balancer_cores:.2f} cores (in 'rest of the machine')", flush=True)
    for server, code in zip(servers, codes, strict=True):
        print(f"[load] server exit code {code}; log {server.log_path}", flush=True)
    lost = stats.seq_gaps + stats.unanswered + sum(stats.server_closes.values()) + sum(stats.errors.values())
    return 1 if lost or stats.connect_failures or problems else 0


def _ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f}"


def _ended_by(first: Probe, last: Probe) -> str:
    """The spoken turns committed between two probes, by what ended them (the end-of-turn model, silence...)."""
    counts = {k: v - first.turns_ended.get(k, 0.0) for k, v in last.turns_ended.items()}
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()) if v) or "none"


def report(
    args: argparse.Namespace,
    st: WorkerStats,
    zero: Probe,
    full: Probe,
    start: Probe,
    end: Probe,
    after: Probe,
    samples: list[Probe],
    left: tuple[float, float],
    log_problems: int,
    loads: tuple[str, str],
) -> None:
    n = st.sessions
    window = end.at - start.at
    server_cores = (end.cpu - start.cpu) / window
    clients_cores = (end.clients_cpu - start.clients_cpu) / window
    other_cores = (end.busy - start.busy) / window - server_cores - clients_cores
    per_session_kb = (full.rss - zero.rss) / max(1, n) / 1024
    rows = [
        ["sessions connected / failed", f"{n} / {st.connect_failures} {dict(st.open_failures) or ''}"],
        [
            "mode, window",
            f"{args.mode}, {window:.0f} s" + (f" after {args.warmup:.0f} s warm-up" if args.warmup else ""),
        ],
        ["load average (start / end)", f"{loads[0]} / {loads[1]}"],
        ["server processes (sessions spread evenly; CPU, memory and frames summed)", str(args.servers)],
    ]
    if args.mode != "idle":
        frames = end.frame_count - start.frame_count
        rows += [
            ["streaming sessions", str(args.streaming if args.streaming is not None else n)],
            [
                "frame size",
                f"{args.frame_ms} ms PCM16 {args.rate / 1000:g} kHz ({args.rate * args.frame_ms // 1000 * 2} B)",
            ],
            [
                "frames sent / handled in window (clients / server)",
                f"{st.frames_in_window} / {frames:.0f} ({frames / window:.0f}/s)",
            ],
            [
                "frame p50 / p90 / p99 / max bucket (server histogram, ≤)",
                " / ".join(_ms(bucket_percentile(start, end, p)) for p in (50, 90, 99, 100)) + " ms",
            ],
            ["frames over 10 ms (server histogram)", f"{100 * share_over(start, end, 0.01):.2f} %"],
            [
                "appends taken off the socket directly (not through the reader)",
                f"{100 * (end.direct - start.direct) / max(frames, 1):.1f} %",
            ],
            [
                "ping RTT p50 / p99 / max (client, behind the audio)",
                f"{percentile(st.rtt_ms, 50):.1f} / {percentile(st.rtt_ms, 99):.1f} / "
                f"{max(st.rtt_ms, default=0):.1f} ms ({len(st.rtt_ms)} pings)",
            ],
            ["client tick lateness p99 (clients keeping real time?)", f"{percentile(st.tick_late_ms, 99):.1f} ms"],
            [
                "utterances sent / speech_started / turns committed / responses",
                f"{st.utterances} / {st.speech_started} / {st.turns_committed} / {st.responses}",
            ],
            ["turns ended by (server, whole run)", _ended_by(zero, after)],
        ]
        if args.mode == "soak":
            rows.append(["churn: sessions closed and reopened", str(st.reconnects)])
    rows += [
        [
            "server CPU (all threads), per session",
            f"{server_cores:.2f} cores, {server_cores / max(1, n) * 100:.3f} % of a core",
        ],
        ["clients CPU / rest of the machine", f"{clients_cores:.2f} / {other_cores:.2f} cores"],
        ["server RSS at 0 / N sessions", f"{zero.rss / 2**20:.1f} / {full.rss / 2**20:.1f} MiB"],
        ["RSS per session", f"{per_session_kb:.0f} KB"],
        ["RSS end of window / after all closed", f"{end.rss / 2**20:.1f} / {after.rss / 2**20:.1f} MiB"],
        ["fds 0 / N / end / after", f"{zero.fds} / {full.fds} / {end.fds} / {after.fds}"],
        [
            "asyncio tasks 0 / N / end / after",
            f"{zero.tasks:.0f} / {full.tasks:.0f} / {end.tasks:.0f} / {after.tasks:.0f}",
        ],
        [
            "lost: seq gaps / pings unanswered / server closes",
            f"{st.seq_gaps} / {st.unanswered} of {st.pings} / {dict(st.server_closes) or 0}",
        ],
        ["error events", str(dict(st.errors) or 0)],
        ["seq gaps, first ones (last seen -> got)", ", ".join(st.gap_examples) or "none"],
        ["server sessions left after the clients closed", f"{left[0]:.0f} (waited {left[1]:.1f} s)"],
        ["server log ERROR lines / tracebacks", str(log_problems)],
    ]
    if args.mode == "soak" and len(samples) >= 4:
        half = samples[len(samples) // 2 :]
        xs = [(s.at - start.at) / 60 for s in half]
        slope = statistics.linear_regression(xs, [s.rss / 2**20 for s in half]).slope
        third = samples[2 * len(samples) // 3 :]
        last = statistics.linear_regression([(s.at - start.at) / 60 for s in third], [s.rss / 2**20 for s in third])
        rows.append(["RSS slope, second half / last third", f"{slope:+.2f} / {last.slope:+.2f} MiB/min"])
        rows.append(
            [
                "RSS min / max over the window",
                f"{min(s.rss for s in samples) / 2**20:.1f} / {max(s.rss for s in samples) / 2**20:.1f} MiB",
            ]
        )
        rows.append(
            [
                "fds min / max, tasks min / max",
                f"{min(s.fds for s in samples)} / {max(s.fds for s in samples)}, "
                f"{min(s.tasks for s in samples):.0f} / {max(s.tasks for s in samples):.0f}",
            ]
        )
    print(markdown_table(["figure", "value"], rows), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["stream", "idle", "soak"])
    parser.add_argument("--sessions", type=int, help="default: 300 stream, 1000 idle, 200 soak")
    parser.add_argument("--seconds", type=float, help="measurement window; default: 60 stream, 30 idle, 600 soak")
    parser.add_argument("--warmup", type=float, default=10.0, help="streaming before the window (s)")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio per append message (ms)")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE, help="sample rate the clients send (Hz)")
    parser.add_argument("--streaming", type=int, help="how many of the sessions stream (default: all)")
    parser.add_argument("--turns-per-min", type=float, default=6.0, help="spoken turns a minute, all sessions")
    parser.add_argument("--respond", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--vad-phase",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each session's VAD frames at a random phase (--no-vad-phase: all due together, the worst case)",
    )
    parser.add_argument(
        "--turn-model", action=argparse.BooleanOptionalAction, default=True, help="the end-of-turn model at pauses"
    )
    parser.add_argument("--churn", type=float, default=120.0, help="soak: mean seconds between reopens")
    parser.add_argument("--clients", type=int, default=3, help="client processes")
    parser.add_argument("--servers", type=int, default=1, help="server processes, sessions spread evenly over them")
    parser.add_argument(
        "--balancer", choices=["none", "nginx"], default="none", help="nginx: the clients connect through it"
    )
    parser.add_argument("--probe-every", type=float, default=1.0, help="seconds between pings per session")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds between /proc samples")
    parser.add_argument("--quiet-wait", type=float, default=0.0, help="wait up to this long for a quiet box")
    parser.add_argument("--idle-voice", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    defaults = {"stream": (300, 60.0), "idle": (1000, 30.0), "soak": (200, 600.0)}[args.mode]
    args.sessions = args.sessions or defaults[0]
    args.seconds = args.seconds or defaults[1]
    if args.mode == "idle":
        args.warmup = 0.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
