"""Voice-in latency and accuracy through the real server: synthesized speech streamed at real-time pace.

For each utterance (Piper speech with 0.6 s of silence before and 1.5 s after, 20 ms frames sent on a
real-time clock) it records, against the audio clock:
  onset -> first partial       first transcription.partial with any text
  end -> final                 the segment event carrying the utterance's last words (text final)
  end -> committed             transcription.completed (after the turn's silence_duration_ms)
and the WER of the committed transcript, next to offline faster-whisper `transcribe()` (beam 5) on
the same audio with the same model files. `--clients N` runs N talkers at once (staggered).

    .venv/bin/python -m bench.voice_in [--clients 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def main_async(args: argparse.Namespace) -> None:
    upstream = FakeOllama(free_port()).start()
    state = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    server = ServerProcess(
        {
            "REALTIME_OLLAMA_URL": upstream.url,
            "REALTIME_LLM_MODEL": "echo",
            "REALTIME_LOG_LEVEL": "WARNING",
            "REALTIME_STT_WORKERS": str(args.stt_workers),
        },
        state / "state",
        state / "server.log",
    ).start()
    texts = SENTENCES[: args.utterances]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--utterances", type=int, default=len(SENTENCES))
    parser.add_argument("--stt-workers", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
