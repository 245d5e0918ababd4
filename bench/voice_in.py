"""Voice-in latency and accuracy through the real server: synthesized speech streamed at real-time pace.

For each utterance (Piper speech with 0.6 s of silence before and 1.5 s after, 20 ms frames sent on a
real-time clock) it records, against the audio clock:
  onset -> first partial       first transcription.partial with any text
  end -> final                 the segment event carrying the utterance's last words (text final)
  end -> committed             transcription.completed (after the turn's silence_duration_ms)
and the WER of the committed transcript, next to offline faster-whisper `transcribe()` (beam 5) on
the same audio with the same model files. `--clients N` runs N talkers at once (staggered), one group
of N sessions after another, each utterance answered by the fake echo LLM and spoken back (TTS).

`--sweep 1,2,4,8,12` asks a different question: how many people can talk to one server at once before
the voice-in path gets slow. For each N it keeps N sessions open, each streaming its microphone without
a break (utterance after utterance: 0.6 s of silence, the sentence, 1.5 s of silence; the talkers'
phases spread evenly over one utterance, so about half of them are speaking at any moment), with
`create_response` off, so the CPU goes to VAD and Whisper only, as when the LLM and TTS run elsewhere.
Each N gets at least `--min-utterances` (N talkers × max(2, ceil(min / N)) sentences each, all different
where the 24 sentences allow; at least 2 because a session's first turn also detects the language). A
turn is matched to the utterance it came from by its `speech_started` audio_start_ms on the session's
audio clock. `--stt-workers 1,2` runs one server per value, side by
side, and takes turns between them at every N, so drift in the box's background load hits both. The
table also gives CPU: the server's, this process's (the talkers' clients), and the rest of the machine
(other processes). Before each phase it waits (up to `--quiet-wait` s) until other processes use less
than 0.25 core; a phase during which they used more is marked disturbed (*).

    .venv/bin/python -m bench.voice_in [--clients 1] [--rounds 1]
    .venv/bin/python -m bench.voice_in --sweep 1,2,4,8,12 --stt-workers 1,2 [--min-utterances 20]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.stats import markdown_table, percentile
from realtime.client import RealtimeClient
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess, free_port
from tests.support.speech import chunks, synthesize, wer

RATE = 24_000
BEFORE_S, AFTER_S = 0.6, 1.5
FRAME_MS = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

SENTENCES = [
    "Please remind me to call my sister tomorrow morning at nine.",
    "How many kilometers is it from Berlin to Munich by train?",
    "I would like to order a large pizza with mushrooms and olives.",
    "Can you explain how photosynthesis works in simple terms?",
    "Turn off the lights in the kitchen and lock the front door.",
    "What time does the museum open on Sunday?",
    "My favorite season is autumn because of the colorful leaves.",
    "Set a timer for twenty minutes.",
    "The meeting has been moved to Thursday afternoon.",
    "Could you recommend a good book about the history of science?",
    "It is raining heavily, so take an umbrella with you.",
    "Add eggs, milk and bread to my shopping list.",
    "Which planet in our solar system has the most moons?",
    "She plays the violin in the city orchestra every weekend.",
    "Translate good morning into Spanish.",
    "We need to finish the report before the end of the month.",
    "How do I reset the password for my email account?",
    "The train to the airport leaves every fifteen minutes.",
    "Tell me a short joke about computers.",
    "Is it safe to swim in the lake during the summer?",
    "The children built a sandcastle on the beach yesterday.",
    "What is the difference between a virus and a bacterium?",
    "Please play some relaxing music in the living room.",
    "I forgot my keys at the office again.",
]


def speech_bounds(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """Where speech really starts and ends inside Piper's output (20 ms RMS above -40 dBFS)."""
    step = rate // 50
    frames = audio[: len(audio) // step * step].astype(np.float32).reshape(-1, step) / 32768
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > 0.01)[0]
    return loud[0] * 0.02, (loud[-1] + 1) * 0.02


@dataclass
class Result:
    text: str
    duration_s: float
    first_partial_ms: float | None = None
    final_ms: float | None = None
    committed_ms: float | None = None
    transcript: str = ""
    events: list[str] = field(default_factory=list)


async def talk(server: ServerProcess, text: str, start_delay: float) -> Result:
    await asyncio.sleep(start_delay)
    speech = synthesize(text, RATE)
    onset_s, end_s = speech_bounds(speech, RATE)
    audio = np.concatenate([np.zeros(int(BEFORE_S * RATE), np.int16), speech, np.zeros(int(AFTER_S * RATE), np.int16)])
    result = Result(text=text, duration_s=end_s - onset_s)
    async with await RealtimeClient.connect(server.ws_url, server.token(f"talker{id(text) % 97}")) as client:
        await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": RATE}}})
        await client.recv()
        t0 = time.monotonic()
        onset_at, end_at = t0 + BEFORE_S + onset_s, t0 + BEFORE_S + end_s

        async def send_audio() -> None:
            for i, frame in enumerate(chunks(audio, RATE, FRAME_MS)):
                await client.send({"type": "input_audio_buffer.append", "audio": frame})
                await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_MS / 1000 - time.monotonic()))

        sender = asyncio.create_task(send_audio())
        last_segment_at = None
        while True:
            event = await client.recv()
            now = time.monotonic()
            kind = event["type"]
            if kind.endswith(".partial") and result.first_partial_ms is None:
                if (event["stable"] + event["unstable"]).strip():
                    result.first_partial_ms = (now - onset_at) * 1000
            elif kind.endswith(".segment"):
                last_segment_at = now
            elif kind.endswith(".completed"):
                result.committed_ms = (now - end_at) * 1000
                result.transcript = event["transcript"]
                if last_segment_at is not None:
                    result.final_ms = (last_segment_at - end_at) * 1000
            elif kind == "response.done":
                break
        await sender
    return result


def offline_wers(texts: list[str], model_dir: str) -> dict[str, float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=2)
    out = {}
    for text in texts:
        audio = synthesize(text, 16_000).astype(np.float32) / 32768
        segments, _ = model.transcribe(audio, language="en")
        out[text] = wer(text, " ".join(s.text for s in segments))
    return out


def fmt(values: list[float]) -> str:
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}" if values else "-"


def start_server(upstream_url: str, stt_workers: int, extra_env: dict[str, str] | None = None) -> ServerProcess:
    state = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    env = {
        "REALTIME_OLLAMA_URL": upstream_url,
        "REALTIME_LLM_MODEL": "echo",
        "REALTIME_LOG_LEVEL": "WARNING",
        "REALTIME_STT_WORKERS": str(stt_workers),
        "REALTIME_MAX_SESSIONS_PER_USER": "1000",
        **(extra_env or {}),
    }
    return ServerProcess(env, state / "state", state / "server.log").start()


async def main_async(args: argparse.Namespace) -> None:
    if args.sweep:
        await sweep_async(args)
        return
    upstream = FakeOllama(free_port()).start()
    server = start_server(upstream.url, args.stt_workers[0])
    texts = SENTENCES[: args.utterances]
    for text in texts:  # synthesized before any talker starts: Piper would block this loop mid-stream
        synthesize(text, RATE)
    results: list[Result] = []
    try:
        for _ in range(args.rounds):
            for i in range(0, len(texts), args.clients):
                group = texts[i : i + args.clients]
                results += await asyncio.gather(*(talk(server, text, j * 0.37) for j, text in enumerate(group)))
    finally:
        server.stop()
        upstream.stop()
    offline = offline_wers(texts, str(Path.home() / ".cache/realtime/models/whisper-base"))
    ours_wer = statistics.mean(wer(r.text, r.transcript) for r in results) * 100
    off_wer = statistics.mean(offline[r.text] for r in results) * 100
    rows = [
        [
            str(args.clients),
            str(len(results)),
            fmt([r.first_partial_ms for r in results if r.first_partial_ms is not None]),
            fmt([r.final_ms for r in results if r.final_ms is not None]),
            fmt([r.committed_ms for r in results if r.committed_ms is not None]),
            f"{ours_wer:.1f}",
            f"{off_wer:.1f}",
        ]
    ]
    print(
        markdown_table(
            [
                "talkers",
                "utterances",
                "onset→first partial p50/p95 ms",
                "end→final p50/p95 ms",
                "end→committed p50/p95 ms",
                "WER ours %",
                "WER offline %",
            ],
            rows,
        )
    )
    if args.verbose:
        for r in results:
            print(f"{wer(r.text, r.transcript):.2f} {r.first_partial_ms} {r.final_ms} | {r.transcript}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


DISTURBED_CORES = 0.25  # CPU of other processes above which a phase is marked disturbed


async def wait_for_quiet(own_pids: list[int], max_wait_s: float) -> float:
    """Wait (at most max_wait_s) until other processes use < DISTURBED_CORES over 2 s; returns their last use."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, own0, t0 = machine_busy_seconds(), own_cpu(own_pids), time.monotonic()
        await asyncio.sleep(2.0)
        other = (machine_busy_seconds() - busy0 - (own_cpu(own_pids) - own0)) / (time.monotonic() - t0)
        if other < DISTURBED_CORES or time.monotonic() > deadline:
            return other


def own_cpu(pids: list[int]) -> float:
    return time.process_time() + sum(cpu_seconds(pid) for pid in pids)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Utterance:
    text: str
    start_s: float  # where its leading silence starts on the talker's audio clock
    onset_s: float  # speech onset, same clock
    end_s: float  # speech end, same clock
    result: Result
    last_segment_at: float | None = None


def build_stream(
    texts: list[str], lead_s: float, rate: int = RATE, tail_s: float = 0.0
) -> tuple[np.ndarray, list[Utterance]]:
    """One talker's microphone: `lead_s` of silence, then each text with its silences, then `tail_s` more."""
    pieces = [np.zeros(int(lead_s * rate), np.int16)]
    utterances: list[Utterance] = []
    at = lead_s
    for text in texts:
        speech = synthesize(text, rate)
        onset_s, end_s = speech_bounds(speech, rate)
        pieces += [np.zeros(int(BEFORE_S * rate), np.int16), speech, np.zeros(int(AFTER_S * rate), np.int16)]
        result = Result(text, end_s - onset_s)
        utterances.append(Utterance(text, at, at + BEFORE_S + onset_s, at + BEFORE_S + end_s, result))
        at += BEFORE_S + len(speech) / rate + AFTER_S
    pieces.append(np.zeros(int(tail_s * rate), np.int16))
    return np.concatenate(pieces), utterances


async def continuous_talker(
    server: ServerProcess,
    user: str,
    texts: list[str],
    lead_s: float,
    language: str | None,
    *,
    rate: int = RATE,
    chunk_ms: int = FRAME_MS,
    tail_s: float = 0.0,
) -> tuple[list[Result], int]:
    """One session streaming `texts` back to back after `lead_s` of silence; returns results and errors seen."""
    audio, utterances = build_stream(texts, lead_s, rate, tail_s)
    errors = 0
    async with await RealtimeClient.connect(server.ws_url, server.token(user)) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "input_audio_format": {"type": "pcm16", "sample_rate": rate},
                    "turn_detection": {"type": "server_vad", "create_response": False},
                    "input_audio_transcription": {"language": language, "partials": True},
                },
            }
        )
        while (await client.recv())["type"] != "session.updated":
            pass
        t0 = time.monotonic()

        async def send_audio() -> None:
            for i, frame in enumerate(chunks(audio, rate, chunk_ms)):
                await client.send({"type": "input_audio_buffer.append", "audio": frame})
                await asyncio.sleep(max(0.0, t0 + (i + 1) * chunk_ms / 1000 - time.monotonic()))

        def utterance_at(stream_s: float) -> Utterance | None:
            for u in reversed(utterances):
                if stream_s >= u.start_s:
                    return u
            return None

        sender = asyncio.create_task(send_audio(), name=f"send-{user}")
        by_item: dict[str, Utterance] = {}
        deadline = t0 + len(audio) / rate + 5.0
        try:
            while not (sender.done() and all(u.result.committed_ms is not None for u in utterances)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        event = await client.recv()
                except TimeoutError:
                    break
                now = time.monotonic()
                kind = event["type"]
                if kind == "input_audio_buffer.speech_started":
                    found = utterance_at(event["audio_start_ms"] / 1000)
                    if found is not None:
                        by_item[event["item_id"]] = found
                elif kind == "error":
                    errors += 1
                u = by_item.get(event.get("item_id", ""))
                if u is None:
                    continue
                r = u.result
                if kind.endswith(".partial") and r.first_partial_ms is None:
                    if (event["stable"] + event["unstable"]).strip():
                        r.first_partial_ms = (now - t0 - u.onset_s) * 1000
                elif kind.endswith(".segment"):
                    u.last_segment_at = now
                elif kind.endswith(".completed"):
                    r.committed_ms = (now - t0 - u.end_s) * 1000
                    r.transcript = (r.transcript + " " + event["transcript"]).strip()
                    if u.last_segment_at is not None:
                        r.final_ms = (u.last_segment_at - t0 - u.end_s) * 1000
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return [u.result for u in utterances], errors


@dataclass
class SweepRow:
    talkers: int
    workers: int
    results: list[Result]
    errors: int
    server_cores: float
    client_cores: float
    other_cores: float


async def sweep_round(server: ServerProcess, talkers: int, workers: int, args: argparse.Namespace) -> SweepRow:
    """N continuous talkers on one server; the CPU each party used over the round."""
    per_talker = max(2, math.ceil(args.min_utterances / talkers))  # ≥ 2: a session's first turn detects language
    assignments = [
        [SENTENCES[(i * per_talker + k) % len(SENTENCES)] for k in range(per_talker)] for i in range(talkers)
    ]
    period = statistics.mean(BEFORE_S + len(synthesize(t, RATE)) / RATE + AFTER_S for t in SENTENCES)
    assert server.process is not None
    server_cpu0, client_cpu0, busy0 = cpu_seconds(server.process.pid), time.process_time(), machine_busy_seconds()
    wall0 = time.monotonic()
    outcomes = await asyncio.gather(
        *(
            continuous_talker(server, f"talker{i}", texts, i * period / talkers, args.language)
            for i, texts in enumerate(assignments)
        )
    )
    wall = time.monotonic() - wall0
    server_cores = (cpu_seconds(server.process.pid) - server_cpu0) / wall
    client_cores = (time.process_time() - client_cpu0) / wall
    busy_cores = (machine_busy_seconds() - busy0) / wall
    return SweepRow(
        talkers,
        workers,
        [r for results, _ in outcomes for r in results],
        sum(e for _, e in outcomes),
        server_cores,
        client_cores,
        max(0.0, busy_cores - server_cores - client_cores),
    )


async def sweep_async(args: argparse.Namespace) -> None:
    for text in SENTENCES:
        synthesize(text, RATE)
    upstream = FakeOllama(free_port()).start()
    servers = {w: start_server(upstream.url, w, {"REALTIME_TTS_ENGINE": "off"}) for w in args.stt_workers}
    pids = [s.process.pid for s in servers.values() if s.process is not None]
    rows: list[SweepRow] = []
    try:
        for talkers in args.sweep:
            for workers, server in servers.items():
                await wait_for_quiet(pids, args.quiet_wait)
                rows.append(await sweep_round(server, talkers, workers, args))
                print(f"done: {talkers} talkers, {workers} STT workers", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()
    offline = offline_wers(SENTENCES, str(Path.home() / ".cache/realtime/models/whisper-base"))
    durations = [r.duration_s for row in rows for r in row.results]
    print()
    print(
        f"speech per utterance {min(durations):.1f}-{max(durations):.1f} s; language "
        f"{args.language or 'detected'}; nproc {os.cpu_count()}; load average before offline WER " + load_average()
    )
    print()
    table = []
    for row in sorted(rows, key=lambda r: (r.workers, r.talkers)):
        res = row.results
        got = [r for r in res if r.committed_ms is not None]
        table.append(
            [
                str(row.talkers),
                str(row.workers),
                str(len(res)),
                fmt([r.first_partial_ms for r in res if r.first_partial_ms is not None]),
                fmt([r.final_ms for r in res if r.final_ms is not None]),
                fmt([r.committed_ms for r in got]),
                f"{len(res) - len(got)}" + (f" ({row.errors} errors)" if row.errors else ""),
                f"{statistics.mean(wer(r.text, r.transcript) for r in res) * 100:.1f}",
                f"{statistics.mean(offline[r.text] for r in res) * 100:.1f}",
                f"{row.server_cores:.2f} / {row.client_cores:.2f} / {row.other_cores:.2f}"
                + (" *" if row.other_cores > DISTURBED_CORES else ""),
            ]
        )
    print(
        markdown_table(
            [
                "talkers",
                "STT workers",
                "utterances",
                "onset→first partial p50/p95 ms",
                "end→final p50/p95 ms",
                "end→committed p50/p95 ms",
                "not committed",
                "WER ours %",
                "WER offline %",
                "CPU cores: server / clients / other",
            ],
            table,
        )
    )
    print(f"\n\\* disturbed: other processes used more than {DISTURBED_CORES} core during the phase")
    if args.verbose:
        for row in rows:
            for r in row.results:
                print(f"{row.talkers} {row.workers} {wer(r.text, r.transcript):.2f} {r.final_ms} | {r.transcript}")


def ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--utterances", type=int, default=len(SENTENCES))
    parser.add_argument(
        "--stt-workers", type=ints, default=[1], help="REALTIME_STT_WORKERS; a list (1,2) only with --sweep"
    )
    parser.add_argument("--sweep", type=ints, default=[], help="talker counts for the sweep, e.g. 1,2,4,8,12")
    parser.add_argument("--min-utterances", type=int, default=20, help="sweep: utterances per N at least")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="sweep: wait up to this long (s) for a quiet box per phase"
    )
    parser.add_argument("--language", default=None, help="sweep: input_audio_transcription.language (default: detect)")
    parser.add_argument("--verbose", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
