"""The shared VAD batcher on the real Silero model: answers on the event loop, in frame order, the same as the
model run directly; one receiver that fails costs the others nothing."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
import pytest

from realtime.assets import VAD_ONNX, default_cache_dir
from realtime.stages.vad import CONTEXT, FRAME, SileroModel, VadBatcher, VadStream, run_streams
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


def test_frames_are_the_audio_with_its_context_whatever_the_message_sizes() -> None:
    """Frame k is samples [512k - 64, 512k + 512) of the stream (zeros before its start), however the audio
    was split into messages; frames handed out stay as they were; after a reset the context is silence."""
    rng = np.random.default_rng(7)
    audio = rng.standard_normal(40 * FRAME).astype(np.float32)
    padded = np.concatenate([np.zeros(CONTEXT, dtype=np.float32), audio])
    stream, frames, at = VadStream(), [], 0
    while at < len(audio):
        size = int(rng.choice([0, 1, 63, 320, 511, 512, 513, 1500, 2048]))
        frames += stream.take_frames(audio[at : at + size])
        at += size
    assert len(frames) == len(audio) // FRAME
    for k, frame in enumerate(frames):
        assert np.array_equal(frame, padded[k * FRAME : k * FRAME + CONTEXT + FRAME]), k
    stream.reset()
    (first,) = stream.take_frames(audio[:FRAME])
    assert np.array_equal(first, padded[: CONTEXT + FRAME])


async def test_many_streams_at_once_are_each_answered_as_alone(model: SileroModel, speech: np.ndarray) -> None:
    """Many streams at once (each with its own audio, some with several frames, batched together): every
    stream gets the probabilities of a direct run over its frames alone, to its own receiver."""
    frames = _frames(speech)
    count = 70
    work = [frames[i % 40 : i % 40 + 1 + i % 3] for i in range(count)]
    expected = [run_streams(model, [(VadStream(), f)])[0] for f in work]
    batcher = VadBatcher(model)
    await batcher.start()
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[list[float] | BaseException]] = [loop.create_future() for _ in work]
    try:
        for f, answer in zip(work, answers, strict=True):
            batcher.submit(VadStream(), f, answer.set_result)
        got = await asyncio.wait_for(asyncio.gather(*answers), 10)
    finally:
        await batcher.aclose()
    for i, (result, want) in enumerate(zip(got, expected, strict=True)):
        assert isinstance(result, list) and np.allclose(result, want, atol=1e-5), i
