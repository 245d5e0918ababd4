"""End of turn from the audio itself: Smart Turn v3, a small Whisper-encoder classifier on onnxruntime.

Silence alone cannot tell "What is the capital of France?" (done) from "Can you tell me about the..." (a
pause mid-thought), so a fixed silence window is either slow for the first or rude to the second. The
model hears the last 8 s of the turn, intonation included, and gives the probability that the speaker has
finished. The listener asks it once the words of a pause are final (`segment_pause_ms`) and ends the turn
there when it is sure; otherwise the silence window still decides. About 25 ms per call on one core.

Input: 16 kHz mono float audio, at most the last 8 s (shorter turns are left-padded with zeros),
normalised to zero mean and unit variance, as Whisper log-mel features (80 x 800) — faster-whisper's own
extractor computes exactly those (checked against the model's reference features to 2e-7).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import numpy as np

from realtime.stages.niceness import worker_thread_init
from realtime.stages.onnx import cpu_session

RATE = 16_000
WINDOW = 8 * RATE  # the model's input: the last 8 s of the turn
NORM_EPS = 1e-7


class SmartTurnModel:
    """The onnx model and its feature extractor; `probability` is meant for one thread at a time."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._session = cpu_session(path, threads=threads)
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW // RATE)

    def probability(self, audio: np.ndarray) -> float:
        """P(the speaker has finished) for a turn's 16 kHz audio, trailing pause included."""
        window = np.zeros(WINDOW, dtype=np.float32)
        tail = np.asarray(audio, dtype=np.float32)[-WINDOW:]
        if len(tail):
            window[WINDOW - len(tail) :] = tail
        window = (window - window.mean()) / np.sqrt(window.var() + NORM_EPS)
        features = self._features(window, padding=0)[:, : WINDOW // 160]
        (logits,) = self._session.run(None, {"input_features": features[np.newaxis].astype(np.float32)})
        return float(np.asarray(logits).reshape(-1)[0])


class TurnJudge:
    """Async front of the model shared by every session: one thread, a bounded number of waiting calls.

    When more calls wait than `max_pending` (a burst of sessions pausing at once on a busy box), a call
    gets None at once and its turn ends by the silence window as it would without the model: the judge
    may only make turns end sooner, never hold them up.

    Its thread can run `nice` levels below the server, and with `idle` in SCHED_IDLE, as Whisper's
    (realtime/stages/niceness.py): ~40 ms of CPU at every pause of every session then leaves the cores to
    the event loop and the VAD. A judgement that comes late is no loss: the silence window still ends the
    turn.
    """

    def __init__(self, model: SmartTurnModel, *, max_pending: int = 8, nice: int = 0, idle: bool = False) -> None:
        self._model = model
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="turn-model",
            initializer=worker_thread_init,
            initargs=("turn-model", nice, idle),
        )
        self._max_pending = max_pending
        self._pending = 0

    async def probability(self, audio: np.ndarray) -> float | None:
        if self._pending >= self._max_pending:
            return None
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._model.probability, audio)
        finally:
            self._pending -= 1

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
