"""Our voice-in path next to WhisperLive: same audio, model files and pacing (`python -m bench.whisperlive_compare`).

Why: WhisperLive (collabora/WhisperLive, PyPI `whisper-live`) is the open-source streaming Whisper server
people reach for; shared/notes/latency.md measured it once by hand. This runs both in one go on the
same machine so the figures are ratios taken under the same background load.

Both get, per client, the same microphone stream at real-time pace in `--chunk-ms` pieces (default 20 ms):
a lead-in of silence (the clients' phases spread over one utterance), then `--utterances` different
Piper sentences, each with 0.6 s of silence before and 1.5 s after, then `--tail` seconds of silence so a
slow final still has time to arrive (ours needs no tail: its stream ends 1.5 s after the last sentence
and it gets 5 s more to answer; WhisperLive's streams get the tail and 1 s more). Audio is 16 kHz:
PCM16 to ours (no resampling), float32 to WhisperLive (its default wire format). Both use the Whisper
base int8 CTranslate2 directory of this project (`~/.cache/realtime/models/whisper-base`), one CPU
thread per decode, language "en".

  ours          `python -m realtime serve` (tests/support/server.py), `create_response` off, Silero VAD
                endpointing, partials every REALTIME_PARTIAL_INTERVAL_MS, REALTIME_STT_WORKERS=1.
  WhisperLive   its `TranscriptionServer.run` as its run_server.py calls it by default: faster_whisper
                backend, custom model path (so one shared model, `single_model`), OMP_NUM_THREADS=1;
                client options as its own `Client` sends them by default (use_vad, same_output_threshold
                10, no_speech_thresh 0.45, send_last_n_segments 10), plus language "en".

Measured per utterance, on the audio clock of its stream (speech onset and end from the audio itself):
  onset → first text   ours: first transcription.partial with text; WhisperLive: first reply with a
                       segment whose time span falls in this utterance and has text (completed or not)
  end → final          ours: its last transcription.segment (text final, never changes); WhisperLive:
                       the last of its segments marked `completed` (WhisperLive never changes those)
  WER                  of the final text of each client's whole stream against its whole script
                       (ours: the turns' transcripts; WhisperLive: its completed segments in order),
                       errors over words of all clients: text never made final counts as deleted
A WhisperLive segment belongs to every utterance whose speech its time span overlaps (its times are
stream seconds; it sometimes merges two sentences into one segment).
"not final" counts utterances with no final text before the stream ended; their end → final counts
as ∞ in the percentiles. Ratios are ours / WhisperLive at p50.

What distorts it: the box is shared (the CPU of everything else during each phase is printed, and each
phase first waits up to `--quiet-wait` s for other processes to use < 0.25 core); the
clients run in this process (their CPU is printed); each system runs alone while measured (the other is
up but idle). WhisperLive decodes on 30 s padded windows (faster-whisper `transcribe`), so its cost per
decode does not shrink with short audio; that is its design, not a set-up choice.

Install the peer once, in its own virtualenv (never the project's; nothing of it is committed):

    python3 -m venv /tmp/wl-venv
    /tmp/wl-venv/bin/pip install torch==2.13.0          # the local CPU wheel; `torch` alone pulls CUDA
    /tmp/wl-venv/bin/pip install --no-deps whisper-live==0.10.0
    /tmp/wl-venv/bin/pip install faster-whisper==1.2.0 websockets fastapi uvicorn 'numpy<2.5' scipy tokenizers==0.20.3

(`--no-deps` because whisper-live also requires openvino, optimum, PyAudio, torchaudio, openai-whisper and
CUDA libraries, none of which its faster_whisper server path imports.) Then:

    .venv/bin/python -m bench.whisperlive_compare --whisperlive-python /tmp/wl-venv/bin/python \
        [--clients 1,2,4] [--utterances 5] [--tail 20] [--chunk-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.stats import markdown_table, percentile
from bench.voice_in import (
    DISTURBED_CORES,
    SENTENCES,
    Result,
    Utterance,
    build_stream,
    continuous_talker,
    cpu_seconds,
    load_average,
    machine_busy_seconds,
    start_server,
    wait_for_quiet,
)
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess, free_port
from tests.support.speech import synthesize, wer
from tests.support.speech import words as speech_words

RATE = 16_000
MODEL_DIR = Path.home() / ".cache/realtime/models/whisper-base"

# What WhisperLive's run_server.py does with its defaults (faster_whisper backend, custom model, single model).
LAUNCH = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
from whisper_live.server import TranscriptionServer
port, model, max_clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
TranscriptionServer().run(
    "127.0.0.1", port=port, backend="faster_whisper", faster_whisper_custom_model_path=model,
    single_model=True, max_clients=max_clients, max_connection_time=600,
)
"""


class WhisperLiveProcess:
    """WhisperLive's websocket server in a child process of its own virtualenv's Python."""

    def __init__(self, python: str, model_dir: Path, max_clients: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._args = [python, "-c", LAUNCH, str(self.port), str(model_dir), str(max_clients)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> WhisperLiveProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self._args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"WhisperLive exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"WhisperLive did not start: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class WlUtterance:
    utterance: Utterance
    first_text_at: float | None = None
    completed: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (start, end, text) -> arrival


def overlapping(tracked: list[WlUtterance], start: float, end: float) -> list[WlUtterance]:
    """The utterances a segment's time span covers: overlap with their speech of ≥ 0.3 s (or half of a short
    one); a segment covering none belongs to the utterance its midpoint falls in."""
    out = [
        t
        for t in tracked
        if min(end, t.utterance.end_s) - max(start, t.utterance.onset_s)
        >= min(0.3, (t.utterance.end_s - t.utterance.onset_s) / 2)
    ]
    if out:
        return out
    mid = (start + end) / 2
    return [next((t for t in reversed(tracked) if mid >= t.utterance.start_s), tracked[0])]


async def whisperlive_talker(
    url: str, uid: str, texts: list[str], lead_s: float, chunk_ms: int, tail_s: float
) -> tuple[list[Result], str]:
    """One WhisperLive client: its options message, then float32 audio at real-time pace, then END_OF_AUDIO."""
    audio, utterances = build_stream(texts, lead_s, RATE, tail_s)
    tracked = [WlUtterance(u) for u in utterances]
    floats = audio.astype(np.float32) / 32768
    step = RATE * chunk_ms // 1000
    options = {
        "uid": uid,
        "language": "en",
        "task": "transcribe",
        "model": "base",  # replaced by the server's custom model path
        "use_vad": True,
        "send_last_n_segments": 10,
        "no_speech_thresh": 0.45,
        "clip_audio": False,
        "same_output_threshold": 10,
        "enable_translation": False,
    }
    async with connect(url, max_size=None, ping_interval=None, open_timeout=30) as ws:
        await ws.send(json.dumps(options))
        async with asyncio.timeout(60):
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("message") == "SERVER_READY":
                    break
                if reply.get("status") in ("WAIT", "ERROR"):
                    raise RuntimeError(f"WhisperLive refused the client: {reply}")
        t0 = time.monotonic()

        async def send_audio() -> None:
            for i in range(0, len(floats), step):
                await ws.send(floats[i : i + step].tobytes())
                await asyncio.sleep(max(0.0, t0 + (i + step) / RATE - time.monotonic()))
            await ws.send(b"END_OF_AUDIO")

        sender = asyncio.create_task(send_audio(), name=f"wl-send-{uid}")
        finals: dict[tuple[str, str, str], float] = {}  # every completed segment, each once
        deadline = t0 + len(floats) / RATE + 1.0
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        message = await ws.recv()
                except (TimeoutError, ConnectionClosed):  # or the server closed after END_OF_AUDIO
                    break
                now = time.monotonic()
                for seg in json.loads(message).get("segments", []):
                    text = seg.get("text", "").strip()
                    if not text:
                        continue
                    key = (seg["start"], seg["end"], text)
                    if seg.get("completed"):
                        finals.setdefault(key, now)
                    for t in overlapping(tracked, float(seg["start"]), float(seg["end"])):
                        if t.first_text_at is None:
                            t.first_text_at = now
                        if seg.get("completed"):
                            t.completed.setdefault(key, now)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    results = []
    for t in tracked:
        u, r = t.utterance, t.utterance.result
        if t.first_text_at is not None:
            r.first_partial_ms = (t.first_text_at - t0 - u.onset_s) * 1000
        if t.completed:
            r.final_ms = (max(t.completed.values()) - t0 - u.end_s) * 1000
            r.transcript = " ".join(text for (_, _, text) in sorted(t.completed, key=lambda k: float(k[0])))
        results.append(r)
    return results, " ".join(text for (_, _, text) in sorted(finals, key=lambda k: float(k[0])))


@dataclass
class Phase:
    system: str
    clients: int
    results: list[Result]
    wer_pct: float  # of each client's whole final text against its whole script, weighted by words
    server_cores: float
    client_cores: float
    other_cores: float


def assignments(clients: int, per_client: int) -> list[list[str]]:
    return [[SENTENCES[(i * per_client + k) % len(SENTENCES)] for k in range(per_client)] for i in range(clients)]


def period_s() -> float:
    return statistics.mean(0.6 + len(synthesize(t, RATE)) / RATE + 1.5 for t in SENTENCES)


async def run_phase(
    system: str, clients: int, args: argparse.Namespace, ours: ServerProcess, wl: WhisperLiveProcess
) -> Phase:
    """`clients` talkers on one system, and what CPU each party used meanwhile."""
    period = period_s()
    pid = ours.process.pid if system == "ours" else wl.process.pid  # type: ignore[union-attr]
    cpu0, client0, busy0, wall0 = cpu_seconds(pid), time.process_time(), machine_busy_seconds(), time.monotonic()
    jobs = []
    for i, texts in enumerate(assignments(clients, args.utterances)):
        lead = i * period / clients
        if system == "ours":
            jobs.append(continuous_talker(ours, f"talker{i}", texts, lead, "en", rate=RATE, chunk_ms=args.chunk_ms))
        else:
            jobs.append(
                whisperlive_talker(wl.url, f"talker{i}-{time.time_ns()}", texts, lead, args.chunk_ms, args.tail)
            )
    outcomes = await asyncio.gather(*jobs)
    wall = time.monotonic() - wall0
    results = [r for out, _ in outcomes for r in out]
    errors = words = 0.0
    for out, extra in outcomes:  # ours: (results, errors seen); WhisperLive: (results, all its final text)
        reference = " ".join(r.text for r in out)
        hypothesis = " ".join(r.transcript for r in out) if system == "ours" else str(extra)
        n = len(speech_words(reference))
        errors += wer(reference, hypothesis) * n
        words += n
    server = (cpu_seconds(pid) - cpu0) / wall
    client = (time.process_time() - client0) / wall
    busy = (machine_busy_seconds() - busy0) / wall
    return Phase(system, clients, results, errors / words * 100, server, client, max(0.0, busy - server - client))


def p50_p95(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 95)


def ms(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.0f}"


def finals(results: list[Result]) -> list[float]:
    return [r.final_ms if r.final_ms is not None else math.inf for r in results]


def firsts(results: list[Result]) -> list[float]:
    return [r.first_partial_ms if r.first_partial_ms is not None else math.inf for r in results]


def ratio(a: float, b: float) -> str:
    if math.isfinite(a) and math.isinf(b):
        return "≈0 (theirs ∞)"
    return f"{a / b:.2f}" if math.isfinite(a) and math.isfinite(b) and b > 0 else "n/a"


async def main_async(args: argparse.Namespace) -> None:
    for text in SENTENCES:
        synthesize(text, RATE)
    logs = Path(tempfile.mkdtemp(prefix="bench-wl-"))
    upstream = FakeOllama(free_port()).start()
    ours = start_server(upstream.url, 1, {"REALTIME_TTS_ENGINE": "off"})
    wl = WhisperLiveProcess(args.whisperlive_python, args.model_dir, max(args.clients) + 2, logs / "whisperlive.log")
    phases: list[Phase] = []
    try:
        wl.start()
        # warm-up, not measured: WhisperLive loads its shared model on the first client
        await asyncio.gather(
            continuous_talker(ours, "warmup", SENTENCES[:1], 0.0, "en", rate=RATE, tail_s=1.0),
            whisperlive_talker(wl.url, f"warmup-{time.time_ns()}", SENTENCES[:1], 0.0, args.chunk_ms, 1.0),
        )
        for index, clients in enumerate(args.clients):
            order = ["ours", "whisperlive"] if index % 2 == 0 else ["whisperlive", "ours"]
            for system in order:
                pids = [p.pid for p in (ours.process, wl.process) if p is not None]
                await wait_for_quiet(pids, args.quiet_wait)
                phases.append(await run_phase(system, clients, args, ours, wl))
                print(f"done: {system}, {clients} clients", flush=True)
    finally:
        wl.stop()
        ours.stop()
        upstream.stop()
    print()
    print(f"WhisperLive log: {wl.log_path}; load average at the end {load_average()}; nproc {os.cpu_count()}")
    print()
    rows = []
    by_key = {(p.system, p.clients): p for p in phases}
    for p in sorted(phases, key=lambda p: (p.clients, p.system != "ours")):
        res = p.results
        first = p50_p95(firsts(res))
        final = p50_p95(finals(res))
        rows.append(
            [
                str(p.clients),
                p.system,
                str(len(res)),
                f"{ms(first[0])} / {ms(first[1])}",
                f"{ms(final[0])} / {ms(final[1])}",
                str(sum(r.final_ms is None for r in res)),
                f"{p.wer_pct:.1f}",
                f"{p.server_cores:.2f} / {p.client_cores:.2f} / {p.other_cores:.2f}"
                + (" *" if p.other_cores > DISTURBED_CORES else ""),
            ]
        )
    print(
        markdown_table(
            [
                "clients",
                "system",
                "utterances",
                "onset→first text p50/p95 ms",
                "end→final p50/p95 ms",
                "not final",
                "WER of finals %",
                "CPU cores: server / clients / other",
            ],
            rows,
        )
    )
    print(f"\n\\* disturbed: other processes used more than {DISTURBED_CORES} core during the phase\n")
    rows = []
    base = {s: by_key.get((s, args.clients[0])) for s in ("ours", "whisperlive")}
    for clients in args.clients:
        o, w = by_key[("ours", clients)], by_key[("whisperlive", clients)]
        of, wf = p50_p95(finals(o.results))[0], p50_p95(finals(w.results))[0]
        op = percentile(firsts(o.results), 50)
        wp = percentile(firsts(w.results), 50)
        o_wer, w_wer = o.wer_pct, w.wer_pct
        bo, bw = base["ours"], base["whisperlive"]
        rows.append(
            [
                str(clients),
                ratio(op, wp),
                ratio(of, wf),
                f"{o_wer - w_wer:+.1f}",
                ratio(of, p50_p95(finals(bo.results))[0]) if bo else "n/a",
                ratio(wf, p50_p95(finals(bw.results))[0]) if bw else "n/a",
            ]
        )
    print(
        markdown_table(
            [
                "clients",
                "first text p50, ours / WhisperLive",
                "final p50, ours / WhisperLive",
                "WER ours − WhisperLive (points)",
                f"ours: final p50 / at {args.clients[0]} client(s)",
                f"WhisperLive: final p50 / at {args.clients[0]} client(s)",
            ],
            rows,
        )
    )
    if args.verbose:
        for p in phases:
            for r in p.results:
                print(f"{p.system} {p.clients} {r.first_partial_ms} {r.final_ms} | {r.transcript}")


def ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisperlive-python", default="/tmp/wl-venv/bin/python", help="python of the peer's venv")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="CTranslate2 Whisper directory (both)")
    parser.add_argument("--clients", type=ints, default=[1, 2, 4], help="concurrent clients per phase")
    parser.add_argument("--utterances", type=int, default=5, help="sentences per client")
    parser.add_argument("--tail", type=float, default=20.0, help="WhisperLive: silence after the last sentence (s)")
    parser.add_argument("--chunk-ms", type=int, default=20, help="audio per websocket message, both systems")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="wait up to this long (s) for a quiet box")
    parser.add_argument("--verbose", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
