"""Synthesized test speech (Piper, the embedded voice) and word error rate, for voice tests and benchmarks."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import soxr

from realtime.assets import PIPER_VOICE, default_cache_dir


@functools.cache
def _voice(path: str):  # type: ignore[no-untyped-def]
    from piper import PiperVoice

    return PiperVoice.load(path)


def voice_path() -> Path:
    return default_cache_dir() / "models" / PIPER_VOICE


@functools.lru_cache(maxsize=256)
def synthesize(text: str, rate: int = 16_000, *, steady: bool = True) -> np.ndarray:
    """Speech for `text` as int16 mono at `rate` (resampled with soxr from Piper's 22.05 kHz).

    Steady by default: Piper's prosody and timing noise off, so the same text gives the same samples on
    every call and in every run. With the noise on (`steady=False`, Piper's own default) the same text
    sounds a little different each time, and a rare draw is misheard ("capital of" -> "cat of all of")
    or sounds unfinished to the end-of-turn model (0.47 for a request that scores 0.92-0.98 in most
    draws): a test must not pass or fail on the draw.
    """
    from piper import SynthesisConfig

    voice = _voice(str(voice_path()))
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
    audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text, syn_config=config)])
    native = voice.config.sample_rate
    if rate != native:
        audio = soxr.resample(audio, native, rate)
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)


def with_silence(speech: np.ndarray, rate: int, before_s: float = 0.5, after_s: float = 1.5) -> np.ndarray:
    pad = lambda s: np.zeros(int(s * rate), dtype=np.int16)  # noqa: E731
    return np.concatenate([pad(before_s), speech, pad(after_s)])


def white_noise(seconds: float, rate: int, level: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * level * 32768).astype(np.int16)


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0..9999, so '9' and 'nine' count as the same word."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def words(text: str) -> list[str]:
    """Lower case, no punctuation, numbers spelled out: the usual normalization before a WER."""
    text = text.lower().replace("-", " ").replace(",", "")
    text = re.sub(r"\d+", lambda m: number_words(int(m.group())) if len(m.group()) <= 4 else m.group(), text)
    return re.sub(r"[^\w\s']", " ", text).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words, after normalizing."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(bool(hyp))
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def chunks(audio: np.ndarray, rate: int, ms: int = 20) -> list[bytes]:
    step = rate * ms // 1000
    return [audio[i : i + step].astype("<i2").tobytes() for i in range(0, len(audio), step)]
