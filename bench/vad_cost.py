"""Silero VAD cost per 32 ms frame: `python -m bench.vad_cost`.

Why: every session runs the VAD on every 32 ms of its microphone, speaking or not, so the VAD's cost per
frame times the number of sessions is a floor under the server's CPU. realtime/stages/vad.py batches one
frame of every stream into one model run; this says what batching buys, and what a session waits for a
frame's probability when many sessions feed the shared `VadBatcher` at once.

Part 1, the model alone, in this thread: B streams (B = 1, 8, 32, 128, 300 by default), each on a
different offset of real speech (Piper sentences with pauses, resampled to 16 kHz, as the server sees
it), `--steps` frames per stream per run. Per run it records the time per frame (run time / (B × steps))
of three ways to evaluate them:
  unbatched      one `SileroModel.run` per frame per stream (batch 1), B × steps calls
  batched model  one `SileroModel.run` per step on pre-stacked inputs and states: the model's own cost
  run_streams    `run_streams` (what the batcher's thread runs): stacking, state split and copy included
p50/p90 are over `--runs` runs; the speed-up is unbatched / run_streams at p50, measured in the same run.

Part 2, through `VadBatcher` from asyncio: M streams (M = 1, 8, 32, 128, 300), each on its own real-time
ticker with a random phase, append a 20 ms chunk (320 samples at 16 kHz, what the server has after
resampling a client's 20 ms message) every 20 ms, cut frames with `VadStream.take_frames`, and await
`probabilities()` when a frame is whole (that is what `Listener.append` does). Recorded: the wait per
`probabilities()` call that carried a frame (p50/p99), how late the tickers woke (the loop's lag, which
the wait does not include), the model runs per second and mean batch, the model's CPU time per frame at
the batches the batcher really formed (compare with part 1 at that batch size), and the process CPU used (%
of one core: the tickers' asyncio work and the VAD thread together). Part 2 measures the VAD path alone:
in the server the same loop also parses websocket messages, resamples, and runs turn detection, so its
waits there are longer.

What distorts it: the box is shared and noisy (hence percentiles over many runs); with 2 cores the
second core is idle here but busy with Whisper in the server; onnxruntime runs 1 intra-op thread, as in
the server (`--threads` to change). Zeros would be cheaper for nothing: real speech is used.

    .venv/bin/python -m bench.vad_cost [--batches 1,8,32,128,300] [--streams 1,8,32,128,300]
        [--steps 20] [--runs 30] [--seconds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.stats import markdown_table, percentile
from realtime.stages.vad import CONTEXT, FRAME, SileroModel, VadBatcher, VadStream, run_streams
from tests.support.speech import synthesize

RATE = 16_000
CHUNK = RATE * 20 // 1000  # 20 ms at 16 kHz
SENTENCES = [
    "Please remind me to call my sister tomorrow morning at nine.",
    "Can you explain how photosynthesis works in simple terms?",
    "Turn off the lights in the kitchen and lock the front door.",
    "My favorite season is autumn because of the colorful leaves.",
    "Which planet in our solar system has the most moons?",
]


def speech_track() -> np.ndarray:
    """Real speech with the pauses a conversation has: each sentence followed by 0.8 s of silence, float32."""
    parts = []
    for text in SENTENCES:
        parts.append(synthesize(text, RATE).astype(np.float32) / 32768)
        parts.append(np.zeros(int(0.8 * RATE), np.float32))
    return np.concatenate(parts)


def stream_frames(track: np.ndarray, offset: int, steps: int) -> list[np.ndarray]:
    """`steps` consecutive model inputs (64 samples of context + 512 new) of one stream starting at `offset`."""
    looped = np.concatenate([track, track[: steps * FRAME]])
    return VadStream().take_frames(looped[offset : offset + steps * FRAME])


@dataclass
class ModelRow:
    batch: int
    unbatched: list[float] = field(default_factory=list)  # µs per frame, one value per run
    batched: list[float] = field(default_factory=list)
    streams: list[float] = field(default_factory=list)
    speech_share: float = 0.0


def measure_model(model: SileroModel, track: np.ndarray, batch: int, steps: int, runs: int) -> ModelRow:
    """Part 1 for one batch size: the three ways, interleaved in every run so drift hits them alike."""
    row = ModelRow(batch)
    rng = np.random.default_rng(batch)
    probs_seen: list[float] = []
    for _ in range(runs):
        offsets = rng.integers(0, len(track), size=batch)
        frames = [stream_frames(track, int(o), steps) for o in offsets]
        frames_total = batch * steps

        states = [np.zeros((2, 1, 128), np.float32) for _ in range(batch)]
        started = time.perf_counter()
        for t in range(steps):
            for i in range(batch):
                _, states[i] = model.run(frames[i][t][np.newaxis], states[i])
        row.unbatched.append((time.perf_counter() - started) / frames_total * 1e6)

        stacked = [np.stack([frames[i][t] for i in range(batch)]) for t in range(steps)]
        state = np.zeros((2, batch, 128), np.float32)
        started = time.perf_counter()
        for t in range(steps):
            probs, state = model.run(stacked[t], state)
        row.batched.append((time.perf_counter() - started) / frames_total * 1e6)
        probs_seen.extend(probs.tolist())

        work = [(VadStream(), frames[i]) for i in range(batch)]
        started = time.perf_counter()
        run_streams(model, work)
        row.streams.append((time.perf_counter() - started) / frames_total * 1e6)
    row.speech_share = float(np.mean(np.array(probs_seen) >= 0.5))
    return row


class CountingModel:
    """Wraps the model to count runs and frames (the batches the batcher formed), nothing else."""

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self.runs = 0
        self.frames = 0
        self.seconds = 0.0  # CPU time of the calling (VAD) thread inside the model: GIL waits excluded

    def run(self, inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.thread_time()
        out = self._model.run(inputs, states)
        self.seconds += time.thread_time() - started
        self.runs += 1
        self.frames += len(inputs)
        return out


@dataclass
class BatcherRow:
    streams: int
    waits_ms: list[float]
    lags_ms: list[float]
    runs_per_s: float
    mean_batch: float
    cpu_pct: float
    frames_per_s: float
    model_us_per_frame: float


async def measure_batcher(model: SileroModel, track: np.ndarray, streams: int, seconds: float) -> BatcherRow:
    """Part 2 for M streams: real-time 20 ms appends, one ticker per stream, random phases."""
    counting = CountingModel(model)
    batcher = VadBatcher(counting)  # type: ignore[arg-type]
    await batcher.start()
    waits: list[float] = []
    lags: list[float] = []
    rng = random.Random(streams)
    loop = asyncio.get_running_loop()
    start_at = loop.time() + 0.2
    stop_at = start_at + seconds

    async def feed(index: int) -> None:
        stream = VadStream()
        # sessions start at unrelated times: their 32 ms frame boundaries fall anywhere in the 20 ms ticks
        stream.pending = np.zeros(rng.randrange(FRAME), np.float32)
        pos = rng.randrange(0, len(track) - CHUNK)
        due = start_at + rng.random() * 0.020
        while due < stop_at:
            await asyncio.sleep(max(0.0, due - loop.time()))
            lags.append((loop.time() - due) * 1000)
            if pos + CHUNK > len(track):
                pos = 0
            frames = stream.take_frames(track[pos : pos + CHUNK])
            pos += CHUNK
            if frames:
                asked = time.perf_counter()
                await batcher.probabilities(stream, frames)
                waits.append((time.perf_counter() - asked) * 1000)
            due += 0.020

    cpu0, runs0, frames0, model0 = time.process_time(), counting.runs, counting.frames, counting.seconds
    wall0 = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(streams):
                group.create_task(feed(i), name=f"vad-feed-{i}")
    finally:
        await batcher.aclose()
    wall = time.perf_counter() - wall0
    runs, frames = counting.runs - runs0, counting.frames - frames0
    return BatcherRow(
        streams=streams,
        waits_ms=waits,
        lags_ms=lags,
        runs_per_s=runs / wall,
        mean_batch=frames / max(1, runs),
        cpu_pct=(time.process_time() - cpu0) / wall * 100,
        frames_per_s=frames / wall,
        model_us_per_frame=(counting.seconds - model0) / max(1, frames) * 1e6,
    )


def ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=ints, default=[1, 8, 32, 128, 300], help="part 1 batch sizes (streams)")
    parser.add_argument("--streams", type=ints, default=[1, 8, 32, 128, 300], help="part 2 concurrent streams")
    parser.add_argument("--steps", type=int, default=20, help="frames per stream per run (part 1)")
    parser.add_argument("--runs", type=int, default=30, help="runs per batch size (part 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="real-time seconds per stream count (part 2)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (server: 1)")
    parser.add_argument(
        "--vad-model", type=Path, default=Path.home() / ".cache/realtime/models/vad/silero_vad.onnx", help="onnx file"
    )
    args = parser.parse_args()

    track = speech_track()
    model = SileroModel(args.vad_model, threads=args.threads)
    for _ in range(50):  # warm-up: first runs allocate
        model.run(np.zeros((8, FRAME + CONTEXT), np.float32), np.zeros((2, 8, 128), np.float32))

    rows = []
    for batch in args.batches:
        r = measure_model(model, track, batch, args.steps, args.runs)
        speedup = percentile(r.unbatched, 50) / percentile(r.streams, 50)
        rows.append(
            [
                str(batch),
                f"{percentile(r.unbatched, 50):.1f} / {percentile(r.unbatched, 90):.1f}",
                f"{percentile(r.batched, 50):.1f} / {percentile(r.batched, 90):.1f}",
                f"{percentile(r.streams, 50):.1f} / {percentile(r.streams, 90):.1f}",
                f"{speedup:.1f}×",
                f"{r.speech_share * 100:.0f}",
            ]
        )
    print(f"### Silero VAD per 32 ms frame, model alone ({args.runs} runs × {args.steps} steps, {args.threads} thread)")
    print()
    print(
        markdown_table(
            [
                "streams (batch)",
                "unbatched µs/frame p50/p90",
                "batched model µs/frame p50/p90",
                "run_streams µs/frame p50/p90",
                "speed-up (unbatched / run_streams, p50)",
                "speech frames %",
            ],
            rows,
        )
    )
    print()

    rows = []
    for streams in args.streams:
        r = asyncio.run(measure_batcher(model, track, streams, args.seconds))
        rows.append(
            [
                str(streams),
                str(len(r.waits_ms)),
                f"{percentile(r.waits_ms, 50):.2f} / {percentile(r.waits_ms, 99):.2f}",
                f"{percentile(r.lags_ms, 50):.2f} / {percentile(r.lags_ms, 99):.2f}",
                f"{r.runs_per_s:.0f}",
                f"{r.mean_batch:.1f}",
                f"{r.frames_per_s:.0f}",
                f"{r.model_us_per_frame:.0f}",
                f"{r.cpu_pct:.0f}",
            ]
        )
    print(f"### VadBatcher from asyncio, 20 ms chunks at real-time pace ({args.seconds:.0f} s per row)")
    print()
    print(
        markdown_table(
            [
                "streams",
                "calls",
                "wait per probabilities() ms p50/p99",
                "ticker lag ms p50/p99",
                "model runs/s",
                "mean batch",
                "frames/s",
                "model CPU µs/frame",
                "CPU % of one core",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
