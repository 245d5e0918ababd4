"""Silero VAD on onnxruntime: one shared model, per-stream recurrent state, frames of all streams batched.

The model takes 512 new samples at 16 kHz (32 ms) plus the previous 64 as context, and a recurrent state
of shape (2, batch, 128). Each stream keeps its own state and context; the batcher stacks one frame of
every stream that has one into a single model run, on one dedicated thread, so hundreds of sessions
cost a few runs per 32 ms rather than hundreds, and the event loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAME = 512  # samples per model step at 16 kHz (32 ms)
CONTEXT = 64
STATE_SHAPE = (2, 128)
FRAME_MS = 32


class SileroModel:
    """The ONNX model; `run` is thread-compatible but meant for one thread (the batcher's)."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._sr = np.array(16_000, dtype=np.int64)

    def run(self, inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """inputs (B, 576) float32, states (2, B, 128) -> speech probabilities (B,), new states."""
        out, new_states = self._session.run(None, {"input": inputs, "state": states, "sr": self._sr})
        return out.reshape(-1), new_states


@dataclass(slots=True)
class VadStream:
    """One audio stream's VAD state: recurrent state, context, and samples not yet making a whole frame."""

    state: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def take_frames(self, samples: np.ndarray) -> list[np.ndarray]:
        """Append samples; return the whole frames now available, each with its 64-sample context."""
        buf = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        count = len(buf) // FRAME
        frames = []
        for i in range(count):
            frame = buf[i * FRAME : (i + 1) * FRAME]
            frames.append(np.concatenate([self.context, frame]))
            self.context = frame[-CONTEXT:]
        self.pending = buf[count * FRAME :].copy()
        return frames

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)


def run_streams(model: SileroModel, work: list[tuple[VadStream, list[np.ndarray]]]) -> list[list[float]]:
    """Evaluate every stream's frames in order; step t batches frame t of all streams that have one."""
    results: list[list[float]] = [[] for _ in work]
    steps = max((len(frames) for _, frames in work), default=0)
    for t in range(steps):
        active = [i for i, (_, frames) in enumerate(work) if t < len(frames)]
        inputs = np.stack([work[i][1][t] for i in active]).astype(np.float32, copy=False)
        states = np.concatenate([work[i][0].state for i in active], axis=1)
        probs, new_states = model.run(inputs, states)
        for j, i in enumerate(active):
            results[i].append(float(probs[j]))
            work[i][0].state = new_states[:, j : j + 1, :].copy()
    return results


class VadBatcher:
    """Async front of the model: requests arriving together are evaluated in one batched pass."""

    def __init__(self, model: SileroModel, *, max_batch: int = 512, coalesce_interval: float = 0.003) -> None:
        self._model = model
        self._max_batch = max_batch
        # When several streams are active, wait this long after the first request so that the pass takes
        # the others too: a batched frame costs ~40 µs against ~105 µs alone (bench/vad_cost.py), and
        # without the wait passes ran as soon as one request was queued (mean batch 2.2 at 128 streams).
        # A lone stream never waits.
        self._coalesce_interval = coalesce_interval
        self._last_batch = 1
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._queue: asyncio.Queue[tuple[VadStream, list[np.ndarray], asyncio.Future[list[float]]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self._max_batch * 4)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vad-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def probabilities(self, stream: VadStream, frames: list[np.ndarray]) -> list[float]:
        """Speech probability of each frame, in order, with the stream's state carried forward."""
        if not frames:
            return []
        if self._queue is None:
            raise RuntimeError("VadBatcher.start() was not awaited")
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        await self._queue.put((stream, frames, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self._last_batch > 1 and self._coalesce_interval > 0 and self._queue.qsize() < self._last_batch - 1:
                await asyncio.sleep(self._coalesce_interval)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # One request per stream per pass keeps each stream's frames in order.
            seen: set[int] = set()
            now, later = [], []
            for item in batch:
                (later if id(item[0]) in seen else now).append(item)
                seen.add(id(item[0]))
            for item in later:
                self._queue.put_nowait(item)
            live = [item for item in now if not item[2].cancelled()]
            self._last_batch = len(now)
            try:
                results = await loop.run_in_executor(
                    self._executor, run_streams, self._model, [(s, f) for s, f, _ in live]
                )
            except Exception as exc:  # a model failure fails these requests, not the batcher
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), probs in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(probs)
