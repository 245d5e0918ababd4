"""Ours vs a Pipecat pipeline, side by side in one run: speech end -> first reply audio, same audio, same models.

    .venv/bin/python -m bench.pipecat_compare [--turns 21] [--silence-ms 500] [--pipecat 0.5:0,0.2:0.3,0.2:smart]

Both sides use the same model files (Silero VAD onnx, Whisper base CTranslate2 directory, Piper
`en_US-joe-medium`, from `python -m realtime.assets fetch`) and ONE shared LLM server: the embedded
SmolLM2 Ollama-API server, started as our `serve` starts it (niced); our server reaches it on /api/chat,
Pipecat's `OLLamaLLMService` on its OpenAI-compatible /v1/chat/completions. Same system prompt, greedy
decoding (temperature 0), at most 60 reply tokens, a fresh conversation every turn.

Pipecat runs in its own virtualenv (`--pipecat-python`, default ~/.cache/realtime/pipecat-venv, created
and filled with `pipecat-ai[whisper,piper]==1.14.0` from PyPI when missing), as a child process per
Pipecat configuration (bench/pipecat_pipeline.py). `--pipecat STOP:TIMEOUT,...` lists those
configurations: Silero `stop_secs`, then the speech-timeout turn stop's `user_speech_timeout` in seconds
or `smart` for Pipecat's default turn stop (the smart-turn v3 model). Pipecat's Whisper runs int8, as
ours (its default compute type would run these float16 files as float32 on a CPU). Our side is the real
server (`python -m realtime serve`) with `silence_duration_ms` = `--silence-ms`.

Every question (bench/voice_out.py's, Piper speech at 16 kHz with 0.6 s of silence before and 1.2 s
after, the same bytes for every side) is played at real-time pace in 20 ms frames to each side in turn;
the order of the sides rotates every round so drift in the machine's load hits all alike. Times are
after the real end of the speech (from its samples), on the one monotonic clock of this machine. Ours:
first `response.audio.delta` received; the split (final transcript, first LLM token) comes from the
server's `response.done` metrics, moved onto the true speech end by the first-audio difference.
Pipecat: the first TTSAudioRawFrame pushed, and the first VADUserStoppedSpeakingFrame, TranscriptionFrame,
LLMTextFrame and TTSStartedFrame (first sentence handed to Piper). The CPU that other processes use
during each turn is measured too: before each round the bench waits (up to `--quiet-wait` s) until they
use under 0.25 cores, and a round during which they used more is played again (`--retries`), within
`--max-wait` s of waiting in all; rounds still disturbed are kept, marked, and left out of a second table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.stats import markdown_table, percentile
from bench.voice_in import speech_bounds
from bench.voice_out import QUESTIONS
from realtime.assets import PIPER_VOICE, VAD_ONNX, WHISPER_DIR, default_cache_dir
from realtime.cli import EMBEDDED_MODEL_NAME, embedded_llm
from realtime.client import RealtimeClient
from realtime.config import load_settings
from tests.support.server import ServerProcess
from tests.support.speech import chunks, synthesize, words

RATE = 16_000
OUT_RATE = 24_000
FRAME_MS = 20
BEFORE_S, AFTER_S = 0.6, 1.2
PIPECAT_VERSION = "1.14.0"
PIPECAT_REQUIREMENT = f"pipecat-ai[whisper,piper]=={PIPECAT_VERSION}"
SYSTEM = "You are a helpful voice assistant. Answer briefly and clearly."
MAX_TOKENS = 60
STOP_AFTER_AUDIO_MS = 1500  # ours: cancel the reply once this much audio has arrived (as bench.voice_out)
SETTLE_S = 0.5  # idle time between turns
CHILD = Path(__file__).with_name("pipecat_pipeline.py")
WARMUP = "Hello, can you hear me?"
DISTURBED_CORES = 0.25  # a turn during which other processes used more CPU than this is counted as disturbed


@dataclass
class Side:
    """One contender: its name and its per-turn results (ms after speech end, texts)."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def col(self, key: str, *, clean: bool = False) -> list[float]:
        """The numeric values of `key` over the kept rounds (only the undisturbed ones if `clean`)."""
        rows = [r for r in self.rows if not (clean and r["disturbed"])]
        return [r[key] for r in rows if isinstance(r.get(key), int | float)]


# ---- the Pipecat side ----


def ensure_pipecat(python: Path) -> Path:
    """The Pipecat venv's python; creates the venv and installs pipecat-ai there when it is missing."""
    if python.exists():
        return python
    venv = python.parent.parent
    print(f"creating {venv} and installing {PIPECAT_REQUIREMENT} (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", PIPECAT_REQUIREMENT], check=True)
    return python


class PipecatChild:
    """bench/pipecat_pipeline.py under the Pipecat venv: one line per turn in, one RESULT line out."""

    def __init__(self, python: Path, llm_url: str, models: Path, stop_secs: float, timeout: str, log: Path):
        ending = "smart-turn v3" if timeout == "smart" else f"turn timeout {float(timeout):g}s"
        self.name = f"pipecat stop_secs={stop_secs:g} + {ending}"
        self.log_path = log
        cmd = [
            str(python),
            str(CHILD),
            "--llm-url",
            llm_url,
            "--model",
            EMBEDDED_MODEL_NAME,
            "--whisper-dir",
            str(models / WHISPER_DIR),
            "--vad-onnx",
            str(models / VAD_ONNX),
            "--piper-voice",
            str(models / PIPER_VOICE),
            "--system",
            SYSTEM,
            "--max-tokens",
            str(MAX_TOKENS),
            "--temperature",
            "0",
            "--stop-secs",
            str(stop_secs),
            "--turn-timeout",
            timeout,
        ]
        with log.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.info: dict[str, Any] = {}

    def _read(self, prefix: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited ({self.proc.poll()}):\n{tail}")
            if line.startswith(prefix + " "):
                return json.loads(line[len(prefix) + 1 :])

    def ready(self) -> None:
        self.info = self._read("READY")

    def turn(self, pcm: Path, speech_end_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"pcm": str(pcm), "speech_end_s": speech_end_s}) + "\n")
        self.proc.stdin.flush()
        return self._read("RESULT")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- our side ----


async def our_turn(server: ServerProcess, audio: np.ndarray, speech_end_s: float, silence_ms: int) -> dict[str, Any]:
    """One spoken question to a fresh session; the reply is cancelled after STOP_AFTER_AUDIO_MS of audio."""
    async with await RealtimeClient.connect(server.ws_url, server.token("bench")) as client:
        session = {
            "instructions": SYSTEM,
            "temperature": 0.0,
            "max_output_tokens": MAX_TOKENS,
            "input_audio_format": {"sample_rate": RATE},
            "output_audio_format": {"sample_rate": OUT_RATE},
            "input_audio_transcription": {"language": "en"},  # as Pipecat's Whisper service (Language.EN)
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
        }
        await client.send({"type": "session.update", "session": session})
        while (await client.recv())["type"] != "session.updated":
            pass
        started = time.monotonic()

        async def send_audio() -> None:
            for i, frame in enumerate(chunks(audio, RATE, FRAME_MS)):
                await client.send({"type": "input_audio_buffer.append", "audio": frame})
                await asyncio.sleep(max(0.0, started + (i + 1) * FRAME_MS / 1000 - time.monotonic()))

        sender = asyncio.create_task(send_audio())
        speech_end = started + speech_end_s
        first_audio = None
        transcript, first_piece, reply = "", None, ""
        cancelled = False
        while True:
            event = await client.recv()
            kind = event["type"]
            if kind == "response.audio.delta":
                first_audio = first_audio or time.monotonic()
                audio_ms = event["offset_ms"] + len(event["audio"]) * 500 // OUT_RATE
                if audio_ms >= STOP_AFTER_AUDIO_MS and not cancelled:
                    await client.send({"type": "response.cancel"})
                    cancelled = True
            elif kind == "conversation.item.input_audio_transcription.completed":
                transcript = event["transcript"]
            elif kind == "response.audio_transcript.delta" and first_piece is None:
                first_piece = event["delta"]
            elif kind == "response.text.delta":
                reply += event["delta"]
            elif kind == "response.done":
                metrics = event["response"]["metrics"]
                break
        await sender
    out: dict[str, Any] = {"transcript": transcript, "first_piece": first_piece, "reply": reply}
    if first_audio is not None:
        out["first_audio"] = (first_audio - speech_end) * 1000
        server_first_audio = metrics.get("speech_end_to_first_audio_ms")
        if server_first_audio is not None:  # the server's speech end is its VAD's estimate: move onto ours
            shift = out["first_audio"] - server_first_audio
            for name, key in (
                ("transcript_at", "speech_end_to_transcript_ms"),
                ("first_token", "speech_end_to_first_token_ms"),
            ):
                if metrics.get(key) is not None:
                    out[name] = metrics[key] + shift
    return out


# ---- the run ----


def prepare_audio(texts: list[str], folder: Path) -> list[tuple[str, np.ndarray, Path, float]]:
    """(text, int16 audio, its raw file, speech end in s) for each text: the bytes every side gets."""
    out = []
    for i, text in enumerate(texts):
        speech = synthesize(text, RATE)
        _, end_s = speech_bounds(speech, RATE)
        audio = np.concatenate(
            [np.zeros(int(BEFORE_S * RATE), np.int16), speech, np.zeros(int(AFTER_S * RATE), np.int16)]
        )
        path = folder / f"q{i:02d}.pcm"
        audio.astype("<i2").tofile(path)
        out.append((text, audio, path, BEFORE_S + end_s))
    return out


def parse_configs(raw: str) -> list[tuple[float, str]]:
    """ "0.5:0,0.2:smart" -> [(0.5, "0"), (0.2, "smart")]: VAD stop_secs, then seconds or "smart"."""
    configs = []
    for item in raw.split(","):
        stop, _, timeout = item.partition(":")
        if timeout != "smart":
            float(timeout or 0)
        configs.append((float(stop), timeout or "0"))
    return configs


class CpuMeter:
    """CPU used by other processes (not this one nor its descendants) between two reads, in cores."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
        own = 0.0
        for proc in [self._me, *self._me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                c = proc.cpu_times()
                own += c.user + c.system
        return time.monotonic(), busy, own

    def others(self) -> float:
        now, busy, own = self._sample()
        then, busy0, own0 = self._last
        self._last = (now, busy, own)
        return max(0.0, (busy - busy0) - (own - own0)) / max(now - then, 1e-6)


async def run(args: argparse.Namespace) -> None:
    models = Path(os.environ.get("REALTIME_MODELS_DIR") or default_cache_dir() / "models")
    python = ensure_pipecat(args.pipecat_python)
    work = Path(tempfile.mkdtemp(prefix="bench-pipecat-"))
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.turns)]
    audio = prepare_audio([WARMUP, *texts], work)
    ours = Side(f"ours silence_duration_ms={args.silence_ms}")
    load_before = os.getloadavg()
    settings = load_settings()
    with embedded_llm(settings) as llm_url:
        children = [
            PipecatChild(python, llm_url, models, stop, timeout, work / f"pipecat-{i}.log")
            for i, (stop, timeout) in enumerate(parse_configs(args.pipecat))
        ]
        server = ServerProcess(
            {
                "REALTIME_OLLAMA_URL": llm_url,
                "REALTIME_LLM_MODEL": EMBEDDED_MODEL_NAME,
                "REALTIME_EMBEDDED_LLM": "never",
                "REALTIME_LOG_LEVEL": "WARNING",
            },
            work / "state",
            work / "server.log",
        )
        try:
            server.start(timeout=120)
            for child in children:
                await asyncio.to_thread(child.ready)
            pipecats = [Side(child.name) for child in children]
            sides: list[tuple[Side, Any]] = [(ours, None), *zip(pipecats, children, strict=True)]
            meter, budget = CpuMeter(), QuietBudget(args.quiet_wait, args.max_wait)
            for i, (text, samples, pcm, end_s) in enumerate(audio):
                order = sides[i % len(sides) :] + sides[: i % len(sides)]
                for attempt in range(args.retries + 1):
                    await budget.wait(meter)
                    played = []
                    for side, child in order:
                        meter.others()
                        if child is None:
                            row = await our_turn(server, samples, end_s, args.silence_ms)
                        else:
                            row = await asyncio.to_thread(child.turn, pcm, end_s)
                        row["others_cpu"] = meter.others()
                        played.append((side, row))
                        if args.verbose:
                            print(f"{side.name}: {json.dumps(row)}", file=sys.stderr)
                        await asyncio.sleep(SETTLE_S)
                    disturbed = any(row["others_cpu"] > DISTURBED_CORES for _, row in played)
                    if i == 0 or not disturbed or attempt == args.retries or budget.spent:
                        break
                    budget.redone += 1  # other work ran meanwhile: play the round again
                if i > 0:  # the first question warms every side up
                    for side, row in played:
                        side.rows.append({"question": text, "disturbed": disturbed, **row})
        finally:
            server.stop()
            for child in children:
                child.stop()
    load_after = os.getloadavg()
    report(ours, pipecats, clean=False)
    if any(r["disturbed"] for r in ours.rows):
        print("\nThe same, undisturbed rounds only:\n")
        report(ours, pipecats, clean=True)
    print()
    for side in (ours, *pipecats):
        others = [r["others_cpu"] for r in side.rows]
        busy = sum(o > DISTURBED_CORES for o in others)
        print(
            f"{side.name}: other processes used {statistics.mean(others):.2f} cores on average during its turns; "
            f"{busy} of {len(others)} kept turns above {DISTURBED_CORES} cores"
        )
    print(f"rounds played again for load: {budget.redone}; waited {budget.waited:.0f} s for quiet in all")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
    for child in children:
        print(f"{child.name}: {json.dumps(child.info)}")
    if args.json:
        results = {s.name: s.rows for s in (ours, *pipecats)}
        args.json.write_text(json.dumps({"load": [load_before, load_after], "results": results}, indent=1))


class QuietBudget:
    """Waits before rounds until other processes go quiet, within a per-round and a whole-run limit."""

    def __init__(self, per_round: float, total: float) -> None:
        self.per_round, self.total = per_round, total
        self.waited = 0.0
        self.redone = 0

    @property
    def spent(self) -> bool:
        return self.waited >= self.total

    async def wait(self, meter: CpuMeter) -> None:
        started = time.monotonic()
        meter.others()
        limit = min(self.per_round, max(0.0, self.total - self.waited))
        while time.monotonic() - started < limit:
            await asyncio.sleep(1.0)
            if meter.others() < DISTURBED_CORES:
                break
        self.waited += max(0.0, time.monotonic() - started - 1.0)


def fmt(values: list[float]) -> str:
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}" if values else "-"


def report(ours: Side, pipecats: list[Side], *, clean: bool) -> None:
    """The figures table and the ratio table, over all kept rounds or the undisturbed ones only."""
    header = [
        "side",
        "turns",
        "speech end→first audio p50 / p95 ms",
        "→VAD stop",
        "→final transcript",
        "→first LLM token",
        "→first sentence to TTS",
        "same transcript as ours",
    ]
    rows = []
    for side in (ours, *pipecats):
        col = lambda key, side=side: side.col(key, clean=clean)  # noqa: E731
        pairs = [(a, b) for a, b in zip(ours.rows, side.rows, strict=True) if not (clean and a["disturbed"])]
        same = sum(words(a["transcript"]) == words(b["transcript"]) for a, b in pairs)
        rows.append(
            [
                side.name,
                str(len(col("first_audio"))),
                fmt(col("first_audio")),
                fmt(col("vad_stop")),
                fmt(col("transcript_at")),
                fmt(col("first_token")),
                fmt(col("tts_start")),
                "-" if side is ours else f"{same}/{len(pairs)}",
            ]
        )
    print(markdown_table(header, rows))
    print()
    ratio_rows = []
    mine = ours.col("first_audio", clean=clean)
    for side in pipecats:
        theirs = side.col("first_audio", clean=clean)
        if mine and theirs:
            p50 = percentile(mine, 50) / percentile(theirs, 50)
            p95 = percentile(mine, 95) / percentile(theirs, 95)
            paired = [
                a["first_audio"] / b["first_audio"]
                for a, b in zip(ours.rows, side.rows, strict=True)
                if "first_audio" in a and "first_audio" in b and not (clean and a["disturbed"])
            ]
            ratio_rows.append(
                [
                    f"ours / {side.name}",
                    f"{p50:.2f}",
                    f"{p95:.2f}",
                    f"{statistics.median(paired):.2f}",
                    "yes" if p50 <= 0.7 else "no",
                ]
            )
    header = ["first-audio ratio", "of p50s", "of p95s", "median of per-round ratios", "p50 ≤ 0.7×"]
    print(markdown_table(header, ratio_rows))
    missing = {s.name: len(s.rows) - len(s.col("first_audio")) for s in (ours, *pipecats)}
    print(f"\nturns without audio (all kept rounds): {missing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=21, help="measured turns per side (after one warm-up)")
    parser.add_argument("--silence-ms", type=int, default=500, help="our turn_detection.silence_duration_ms")
    parser.add_argument(
        "--pipecat",
        default="0.5:0,0.2:0.3,0.2:smart",
        help="Pipecat configurations STOP_SECS:USER_SPEECH_TIMEOUT (seconds, or 'smart' for Pipecat's default "
        "smart-turn v3), comma-separated (default: 0.5:0,0.2:0.3,0.2:smart)",
    )
    parser.add_argument("--pipecat-python", type=Path, default=default_cache_dir() / "pipecat-venv" / "bin" / "python")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="at most this long (s) before a round for other load to pass"
    )
    parser.add_argument("--max-wait", type=float, default=900.0, help="at most this long (s) of such waits in all")
    parser.add_argument("--retries", type=int, default=2, help="times a disturbed round is played again")
    parser.add_argument("--json", type=Path, default=None, help="also write every turn's figures here")
    parser.add_argument("--verbose", action="store_true", help="print each turn's figures as they come")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
