"""Spoken turns end to end on the default models: speech end -> first reply audio, barge-in, audio gaps.

The server runs as `serve` does by default: embedded SmolLM2 (llama.cpp, niced), Whisper base, Piper.
Each question is Piper speech streamed at real-time pace; the reply is cancelled once 1.5 s of its audio
has arrived (first audio is what is measured; the rest of the reply only costs time). Every third turn
is interrupted instead: the client speaks over the reply, and the server's own `interrupt_to_stop_ms`
(barge-in decided -> LLM and TTS stopped, no chunk after) is read from response.done.

    .venv/bin/python -m bench.voice_out [--silence-ms 500] [--turns 21] [--turn-model on|off] [--temperature 0]

Each question gets a session of its own (no history carried over) and greedy decoding, so the same
words get the same reply in every run and the first piece spoken is comparable between runs.

Figures (client clock): speech end (the real end of the synthesized speech, from its samples) -> first
`response.audio.delta` received; audio gaps = chunks that arrived after the time they were due to play
(the client plays from the first chunk at real time), per minute of audio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import markdown_table, percentile
from bench.voice_in import speech_bounds
from realtime.client import RealtimeClient
from tests.support.server import ServerProcess, free_port
from tests.support.speech import chunks, synthesize

RATE = 24_000
FRAME_MS = 20
BEFORE_S = 0.6
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Can you name a fruit that is yellow?",
    "What do bees make?",
    "How many days are there in a week?",
    "What is the opposite of hot?",
    "Which animal says moo?",
    "What do you call frozen water?",
    "What is two plus two?",
    "Where does the sun rise?",
    "What do plants need to grow?",
    "How many hours are in a day?",
    "What is the largest ocean on Earth?",
    "Which season comes after winter?",
    "What do cows drink?",
    "What is the color of grass?",
    "How many wheels does a bicycle have?",
    "What do you use to write on paper?",
    "What is the first letter of the alphabet?",
    "Which planet do we live on?",
]
INTERRUPTION = "Hold on, stop for a moment please."
# Barge-in needs interrupt_min_speech_ms (250) of the interruption heard, plus the VAD's onset: a reply whose
# audio ends sooner than this after the interruption starts is over before anyone could speak over it.
SPEAK_OVER_MS = 400
QUIET_S = 1.5  # after an interruption: this long without events means its turns are over


async def send_audio(client: RealtimeClient, audio: np.ndarray) -> None:
    started = time.monotonic()
    for i, frame in enumerate(chunks(audio, RATE, FRAME_MS)):
        await client.send({"type": "input_audio_buffer.append", "audio": frame})
        await asyncio.sleep(max(0.0, started + (i + 1) * FRAME_MS / 1000 - time.monotonic()))


async def turn(client: RealtimeClient, question: str, interrupt: bool) -> dict[str, Any]:
    speech = synthesize(question, RATE)
    _, end_s = speech_bounds(speech, RATE)
    silence = np.zeros(int(BEFORE_S * RATE), np.int16)
    audio = np.concatenate([silence, speech, np.zeros(int(1.2 * RATE), np.int16)])
    t0 = time.monotonic()
    speech_end = t0 + BEFORE_S + end_s
    sender = asyncio.create_task(send_audio(client, audio))
    first_audio = None
    first_piece = ""
    audio_ms = 0
    late = 0
    stopper: asyncio.Task[None] | None = None
    done: dict | None = None
    while True:
        event = await client.recv()
        now = time.monotonic()
        if event["type"] == "response.audio_transcript.delta" and not first_piece:
            first_piece = event["delta"]
        if event["type"] == "response.audio.delta":
            if first_audio is None:
                first_audio = now
            elif now > first_audio + event["offset_ms"] / 1000 + 0.02:
                late += 1
            audio_ms = event["offset_ms"] + len(event["audio"]) * 500 // RATE
            if audio_ms >= 1500 and stopper is None:
                if interrupt:
                    follow = np.concatenate([synthesize(INTERRUPTION, RATE), np.zeros(RATE, np.int16)])
                    stopper = asyncio.create_task(send_audio(client, follow))
                else:
                    await client.send({"type": "response.cancel"})
                    stopper = asyncio.create_task(asyncio.sleep(0))
        elif event["type"] == "response.done":
            done = event["response"]
            break
    await sender
    if stopper is not None:
        await stopper
    if interrupt and stopper is None:  # the reply ended before 1.5 s of audio: nothing to speak over
        interrupt = False
    expected = "interrupted" if interrupt else "cancelled" if stopper else "completed"
    if interrupt and done is not None and done["status"] == "completed" and audio_ms < 1500 + SPEAK_OVER_MS:
        expected = "completed"  # the reply ran out before barge-in could be decided: it was not spoken over
    if interrupt:
        # The interruption is a turn of its own, or two: the end-of-turn model may end it at "Hold on," and
        # the rest becomes another turn. Cancel every reply it starts, until the link has been quiet for
        # QUIET_S, so that nothing of it reaches the next question's measurement.
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(QUIET_S):
                    event = await client.recv()
            except TimeoutError:
                break
            seen.append(event["type"])
            if event["type"] == "response.created":
                await client.send({"type": "response.cancel"})
        else:
            raise SystemExit(f"no end to the interruption's turns; events after the reply: {seen[-20:]}")
    assert done is not None
    metrics = done["metrics"]
    return {
        "first_audio_ms": None if first_audio is None else (first_audio - speech_end) * 1000,
        "server_first_audio_ms": metrics.get("speech_end_to_first_audio_ms"),
        "transcript_ms": metrics.get("speech_end_to_transcript_ms"),
        "first_token_ms": metrics.get("speech_end_to_first_token_ms"),
        "interrupt_ms": metrics.get("interrupt_to_stop_ms") if done["status"] == "interrupted" else None,
        "status_ok": float(done["status"] == expected),
        "late": float(late),
        "audio_ms": float(audio_ms),
        "first_piece": first_piece,
    }


def fmt(values: list[float]) -> str:
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}" if values else "-"


async def main_async(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-voice-out-"))
    env = {
        "REALTIME_EMBEDDED_LLM": "always",
        "REALTIME_EMBEDDED_LLM_PORT": str(free_port()),
        "REALTIME_LOG_LEVEL": "INFO" if args.verbose else "WARNING",
    }
    server = ServerProcess(env, state / "state", state / "server.log").start(timeout=120)
    if args.verbose:
        print("server log:", state / "server.log", flush=True)
    rows = []
    try:
        session = {
            "input_audio_format": {"sample_rate": RATE},
            "output_audio_format": {"sample_rate": RATE},
            "turn_detection": {
                "type": "server_vad",
                "silence_duration_ms": args.silence_ms,
                "turn_model": args.turn_model == "on",
            },
            "max_output_tokens": 60,
            "temperature": args.temperature,
        }
        for i in range(args.turns):
            # a fresh session per question: every turn starts from the same empty history, so a given
            # transcript always gets the same reply (greedy) and no turn pays for the ones before it
            async with await RealtimeClient.connect(server.ws_url, server.token("bench")) as client:
                await client.send({"type": "session.update", "session": session})
                await client.recv()
                rows.append(await turn(client, QUESTIONS[i % len(QUESTIONS)], interrupt=i % 3 == 2))
            if args.verbose:
                figures = {k: None if v is None else round(v) for k, v in rows[-1].items() if k != "first_piece"}
                print(i, figures, repr(rows[-1]["first_piece"]), flush=True)
    finally:
        server.stop()

    def col(key: str) -> list[float]:
        return [r[key] for r in rows if r[key] is not None]  # type: ignore[misc]

    minutes = sum(col("audio_ms")) / 60_000
    print(
        markdown_table(
            [
                "silence ms",
                "turns",
                "speech end→first audio p50/p95 (client)",
                "same, server clock",
                "→final transcript",
                "→first token",
                "barge-in stop p50/p95 ms",
                "late chunks / min",
                "right status",
            ],
            [
                [
                    str(args.silence_ms),
                    str(len(rows)),
                    fmt(col("first_audio_ms")),
                    fmt(col("server_first_audio_ms")),
                    fmt(col("transcript_ms")),
                    fmt(col("first_token_ms")),
                    fmt(col("interrupt_ms")),
                    f"{sum(col('late')) / max(minutes, 1e-9):.1f}",
                    f"{statistics.mean(col('status_ok')) * 100:.0f}%",
                ]
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silence-ms", type=int, default=500, help="turn_detection.silence_duration_ms")
    parser.add_argument("--turns", type=int, default=21)
    parser.add_argument("--turn-model", choices=["on", "off"], default="on", help="turn_detection.turn_model")
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0: the same reply to the same words, run after run"
    )
    parser.add_argument("--verbose", action="store_true", help="print each turn; server log at INFO (path printed)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
