"""Silero VAD on onnxruntime: one shared model, per-stream recurrent state, frames of all streams batched.

The model takes 512 new samples at 16 kHz (32 ms) plus the previous 64 as context, and a recurrent state
of shape (2, batch, 128). Each stream keeps its own state and context; the batcher stacks one frame of
every stream that has one into a single model run, on one dedicated thread, so hundreds of sessions
cost a few runs per 32 ms rather than hundreds, and the event loop never waits on the model.

The batcher's thread also forms the passes: it takes every request waiting when a pass ends and starts
the next one at once, and hands each pass's results to the event loop in one callback. An event loop
busy with hundreds of sessions' messages therefore delays only the delivery of results, never the start
of the next pass (when the loop formed the passes, a congested loop made passes rare and large: each
request then waited for the loop, the pass, and the loop again).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from realtime.stages.niceness import name_current_thread
from realtime.stages.onnx import cpu_session

log = logging.getLogger("realtime.vad")

FRAME = 512  # samples per model step at 16 kHz (32 ms)
CONTEXT = 64
STATE_SHAPE = (2, 128)
FRAME_MS = 32
# A pass over this many streams or more costs little more per frame than any larger one (~53 against ~44 µs,
# against ~105 µs alone: bench/vad_cost.py), so a pass that has them never waits for more.
COALESCE_BELOW = 8


class SileroModel:
    """The ONNX model; `run` is thread-compatible but meant for one thread (the batcher's)."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self._session = cpu_session(path, threads=threads)
        self._sr = np.array(16_000, dtype=np.int64)

    def run(self, inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """inputs (B, 576) float32, states (2, B, 128) -> speech probabilities (B,), new states."""
        out, new_states = self._session.run(None, {"input": inputs, "state": states, "sr": self._sr})
        return out.reshape(-1), new_states


class VadStream:
    """One audio stream's VAD state: recurrent state, and the frame being filled behind its 64-sample context.

    Samples are copied once, into a fixed frame buffer, and a whole frame leaves as one copy: this runs on the
    event loop for every audio message of every session, where concatenating the leftover with each message
    and the context with each frame cost three allocations a message."""

    __slots__ = ("state", "_frame", "_fill")

    def __init__(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self._frame = np.zeros(CONTEXT + FRAME, dtype=np.float32)  # context, then the new samples so far
        self._fill = CONTEXT

    def take_frames(self, samples: np.ndarray) -> list[np.ndarray]:
        """Append samples; return the whole frames now available, each with its 64-sample context."""
        frames: list[np.ndarray] = []
        buf, fill, at, n = self._frame, self._fill, 0, len(samples)
        while at < n:
            take = min(CONTEXT + FRAME - fill, n - at)
            buf[fill : fill + take] = samples[at : at + take]
            fill += take
            at += take
            if fill == CONTEXT + FRAME:
                frames.append(buf.copy())
                buf[:CONTEXT] = buf[FRAME:]
                fill = CONTEXT
        self._fill = fill
        return frames

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self._frame[:] = 0.0
        self._fill = CONTEXT


def run_streams(model: SileroModel, work: list[tuple[VadStream, list[np.ndarray]]]) -> list[list[float]]:
    """Evaluate every stream's frames in order; step t batches frame t of all streams that have one."""
    results: list[list[float]] = [[] for _ in work]
    steps = max((len(frames) for _, frames in work), default=0)
    everyone = range(len(work))
    for t in range(steps):
        active = everyone if t == 0 else [i for i in everyone if t < len(work[i][1])]
        # one C-level copy (np.stack does Python work per array: 0.13 ms against 0.05 ms for 300 frames)
        inputs = np.concatenate([work[i][1][t] for i in active]).reshape(len(active), -1).astype(np.float32, copy=False)
        states = np.concatenate([work[i][0].state for i in active], axis=1)
        probs, new_states = model.run(inputs, states)
        for j, (i, prob) in enumerate(zip(active, probs.tolist(), strict=True)):
            results[i].append(prob)
            work[i][0].state = new_states[:, j : j + 1, :].copy()  # not a view: it would keep the pass's array
    return results


Result = list[float] | BaseException
"""A request's answer: the speech probability of each frame, in order, or the failure of its pass."""


class VadRequest:
    """One stream's frames waiting for a pass, and who gets the answer (on the event loop)."""

    __slots__ = ("stream", "frames", "deliver", "cancelled")

    def __init__(self, stream: VadStream, frames: list[np.ndarray], deliver: Callable[[Result], None]) -> None:
        self.stream, self.frames, self.deliver = stream, frames, deliver
        self.cancelled = False  # set on the loop: the pass skips it and nothing is delivered


class VadBatcher:
    """Async front of the model: requests arriving together are evaluated in one batched pass."""

    def __init__(self, model: SileroModel, *, max_batch: int = 512, coalesce_interval: float = 0.003) -> None:
        self._model = model
        self._max_batch = max_batch
        # When several streams are active, wait up to this long after the first request of a pass for as many
        # requests as the previous pass carried: a batched frame costs ~40 µs against ~105 µs alone
        # (bench/vad_cost.py). A lone stream never waits, nor does a pass that finds the requests waiting.
        self._coalesce_interval = coalesce_interval
        # Requests waiting for the thread. `submit`'s callers keep at most one per stream, which bounds it
        # by the sessions; `probabilities` bounds its own callers with the slots.
        self._requests: queue.SimpleQueue[VadRequest | None] = queue.SimpleQueue()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._max_batch * 4)
        self._thread = threading.Thread(target=self._run, name="vad", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        left: list[VadRequest] = []  # requests that came after the stop: nobody will answer them
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        _deliver(left, asyncio.CancelledError())

    def submit(self, stream: VadStream, frames: list[np.ndarray], deliver: Callable[[Result], None]) -> VadRequest:
        """Queue `frames` (at least one) for the next pass, without waiting: `deliver` is called on the event
        loop with their probabilities, inside the one callback that answers the whole pass, so a caller that
        applies them there costs no task switch. The caller keeps at most one request per stream outstanding
        (the stream's recurrent state moves on in the pass)."""
        if self._thread is None:
            raise RuntimeError("VadBatcher.start() was not awaited")
        request = VadRequest(stream, frames, deliver)
        self._requests.put(request)
        return request

    async def probabilities(self, stream: VadStream, frames: list[np.ndarray]) -> list[float]:
        """Speech probability of each frame, in order, with the stream's state carried forward."""
        if not frames:
            return []
        if self._loop is None or self._slots is None or self._thread is None:
            raise RuntimeError("VadBatcher.start() was not awaited")
        async with self._slots:
            future: asyncio.Future[list[float]] = self._loop.create_future()

            def deliver(result: Result) -> None:
                if future.done():
                    return
                if isinstance(result, asyncio.CancelledError):
                    future.cancel()
                elif isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

            request = self.submit(stream, frames, deliver)
            try:
                return await future
            finally:
                request.cancelled = True  # cancelled while waiting: the pass skips it

    # ---- the batcher's thread ------------------------------------------------------------------------

    def _run(self) -> None:
        name_current_thread("vad")
        later: list[VadRequest] = []  # requests of streams already in the previous pass: first in the next
        last_batch = 1
        stopping = False
        while True:
            if not later and stopping:
                return
            batch: list[VadRequest | None] = list(later) if later else [self._requests.get()]
            later = []
            if batch[-1] is None or (not stopping and self._gather(batch, last_batch)):
                stopping = True
            # One request per stream per pass keeps each stream's frames in order.
            seen: set[int] = set()
            now: list[VadRequest] = []
            for item in batch:
                if item is None or item.cancelled:  # cancelled: its listener is gone
                    continue
                (later if id(item.stream) in seen else now).append(item)
                seen.add(id(item.stream))
            last_batch = max(1, len(now))
            if now:
                self._pass(now)

    def _gather(self, batch: list[VadRequest | None], last_batch: int) -> bool:
        """Add the requests waiting to `batch`; when they are fewer than the previous pass carried, wait the
        coalescing interval once for the others (one wake-up, not one per request). True if asked to stop."""
        if self._take_waiting(batch):
            return True
        if len(batch) < min(last_batch, COALESCE_BELOW) and self._coalesce_interval > 0:
            time.sleep(self._coalesce_interval)
            return self._take_waiting(batch)
        return False

    def _take_waiting(self, batch: list[VadRequest | None]) -> bool:
        while len(batch) < self._max_batch:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return False
            batch.append(item)
            if item is None:
                return True
        return False

    def _pass(self, requests: list[VadRequest]) -> None:
        assert self._loop is not None
        try:
            work = [(r.stream, r.frames) for r in requests]
            results: list[list[float]] | BaseException = run_streams(self._model, work)
        except Exception as exc:  # a model failure fails these requests, not the batcher
            results = exc
        try:
            self._loop.call_soon_threadsafe(_deliver, requests, results)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _deliver(requests: list[VadRequest], results: list[list[float]] | BaseException) -> None:
    """On the event loop: each request's probabilities (or the pass's error) to its receiver. One receiver
    that raises is logged; the others still get theirs."""
    for i, request in enumerate(requests):
        if request.cancelled:  # its receiver went away meanwhile
            continue
        try:
            request.deliver(results if isinstance(results, BaseException) else results[i])
        except Exception:
            log.exception("a VAD result's receiver failed")
