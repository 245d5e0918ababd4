"""The shared VAD batcher on the real Silero model: answers on the event loop, in frame order, the same as the
model run directly; one receiver that fails costs the others nothing."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
import pytest

from realtime.assets import VAD_ONNX, default_cache_dir
from realtime.stages.vad import SileroModel, VadBatcher, VadStream, run_streams
from tests.support.speech import synthesize

RATE = 16_000


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel(default_cache_dir() / "models" / VAD_ONNX)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    voice = synthesize("The meeting moved to Thursday afternoon.", RATE).astype(np.float32) / 32768
    silence = np.zeros(RATE // 2, dtype=np.float32)
    return np.concatenate([silence, voice, silence])


def _frames(audio: np.ndarray) -> list[np.ndarray]:
    return VadStream().take_frames(audio)


async def test_submit_answers_on_the_loop_as_the_model_does_directly(model: SileroModel, speech: np.ndarray) -> None:
    """Frames sent in several requests, one outstanding at a time, come back on the event loop's thread
    with the probabilities of one direct run over all of them, and speech is found in the middle only."""
    frames = _frames(speech)
    expected = run_streams(model, [(VadStream(), frames)])[0]
    batcher = VadBatcher(model)
    await batcher.start()
    try:
        stream, got, threads = VadStream(), [], set()
        for at in range(0, len(frames), 7):
            answer: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()

            def deliver(result: list[float] | BaseException, answer: asyncio.Future[list[float]] = answer) -> None:
                threads.add(threading.get_ident())
                answer.set_result(result)  # type: ignore[arg-type]

            batcher.submit(stream, frames[at : at + 7], deliver)
            got += await asyncio.wait_for(answer, 5)
    finally:
        await batcher.aclose()
    assert threads == {threading.get_ident()}
    assert np.allclose(got, expected, atol=1e-5)
    speaking = [i for i, p in enumerate(got) if p >= 0.5]
    assert speaking and speaking[0] > 10 and speaking[-1] < len(got) - 10  # the half seconds of silence


async def test_a_failing_receiver_costs_the_other_streams_nothing(
    model: SileroModel, speech: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """Three streams: the receiver of the first raises (logged), the second still gets its answer (in the
    same delivery when they share a pass); a request cancelled at once gets none."""
    frames = _frames(speech)[:20]
    batcher = VadBatcher(model)
    await batcher.start()
    second: asyncio.Future[list[float] | BaseException] = asyncio.get_running_loop().create_future()
    cancelled: list[object] = []

    def broken(result: list[float] | BaseException) -> None:
        raise RuntimeError("receiver bug")

    try:
        with caplog.at_level(logging.ERROR, logger="realtime.vad"):
            batcher.submit(VadStream(), frames, broken)
            batcher.submit(VadStream(), frames, second.set_result)
            batcher.submit(VadStream(), frames, cancelled.append).cancelled = True
            result = await asyncio.wait_for(second, 5)
            await asyncio.sleep(0.1)
    finally:
        await batcher.aclose()
    assert isinstance(result, list) and len(result) == 20
    assert cancelled == []
    assert any("receiver failed" in r.message for r in caplog.records)
