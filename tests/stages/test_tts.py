"""TTS engines behind one interface: real Piper and espeak-ng audio, resampling, cancellation, fallback."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from realtime.config import load_settings
from realtime.models import first_tts_engine
from realtime.stages.tts import ChatterboxEngine, EspeakEngine, PiperEngine, Tts, TtsFailed
from tests.support.speech import voice_path

TEXT = "The quick brown fox jumps over the lazy dog."


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


@pytest.fixture(scope="module")
def piper() -> Tts:
    tts = Tts(PiperEngine(voice_path(), threads=2))
    yield tts
    tts.close()


async def _collect(tts: Tts, text: str, rate: int) -> np.ndarray:
    return np.concatenate([chunk async for chunk in tts.stream(text, rate)])


@pytest.mark.parametrize("rate", [24_000, 16_000, 48_000])
async def test_piper_speaks_at_the_clients_rate(piper: Tts, rate: int) -> None:
    """Piper's 22.05 kHz voice comes out at the requested rate, with speech in it (not silence)."""
    audio = await _collect(piper, TEXT, rate)
    native = np.concatenate(list(piper.engine.synthesize(TEXT)))
    # Piper's phoneme durations are noisy between runs: the same text lasts about (not exactly) as long
    assert abs(len(audio) / rate - len(native) / piper.engine.sample_rate) < 0.15 * len(native) / 22_050
    assert 1.5 < len(audio) / rate < 5 and _rms(audio) > 0.02


async def test_espeak_fallback_speaks() -> None:
    """espeak-ng (Debian package) produces speech through the same interface."""
    tts = Tts(EspeakEngine())
    try:
        audio = await _collect(tts, TEXT, 24_000)
    finally:
        tts.close()
    assert 1 < len(audio) / 24_000 < 6 and _rms(audio) > 0.02


async def test_text_starting_with_a_dash_is_spoken_not_parsed_as_an_option() -> None:
    """espeak-ng is called with '--' before the text, so user text cannot become a command-line flag."""
    tts = Tts(EspeakEngine())
    try:
        audio = await _collect(tts, "--help me please", 16_000)
    finally:
        tts.close()
    assert len(audio) / 16_000 > 0.5


async def test_leaving_a_stream_early_does_not_block_the_next(piper: Tts) -> None:
    """Cancelling mid-synthesis (barge-in) leaves the engine usable at once for the next piece."""
    long_text = " ".join([TEXT] * 6)
    async for _ in piper.stream(long_text, 24_000):
        break
    started = time.monotonic()
    audio = await _collect(piper, "Next.", 24_000)
    assert len(audio) and time.monotonic() - started < 3


async def test_engine_failure_is_tts_failed(tmp_path: Path) -> None:
    """An engine that crashes surfaces as TtsFailed (a clean error), not a raw exception."""
    broken = tmp_path / "espeak-broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    tts = Tts(EspeakEngine(binary=str(broken)))
    try:
        with pytest.raises(TtsFailed):
            await _collect(tts, TEXT, 24_000)
    finally:
        tts.close()


def test_chatterbox_missing_is_a_clear_error() -> None:
    """Without the optional GPU extra, the Chatterbox adapter says what is missing."""
    with pytest.raises(FileNotFoundError, match="chatterbox-tts is not installed"):
        ChatterboxEngine()


def test_missing_piper_voice_falls_back_to_espeak(tmp_path: Path) -> None:
    """With no Piper voice file, the server speaks with espeak-ng rather than not at all."""
    settings = load_settings({}, tts_voice_path=tmp_path / "missing.onnx")
    assert first_tts_engine(settings, "cpu").name == "espeak"
