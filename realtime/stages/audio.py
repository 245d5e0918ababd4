"""PCM helpers and streaming resampling (soxr) to the 16 kHz the VAD and Whisper need."""

from __future__ import annotations

import numpy as np
import soxr

MODEL_RATE = 16_000
_PCM16_SCALE = np.float32(1 / 32768)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes -> float32 in [-1, 1). The caller checks the byte count is even."""
    # One pass, straight to float32 (astype then divide made two arrays); 2**-15 is exact, so the values are
    # those of the division.
    return np.multiply(np.frombuffer(data, dtype="<i2"), _PCM16_SCALE, dtype=np.float32)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 32767 / 32768)
    return (clipped * 32768.0).astype("<i2").tobytes()


class Resampler:
    """A stateful resampler for one audio stream: chunk boundaries leave no clicks or drift."""

    def __init__(self, in_rate: int, out_rate: int = MODEL_RATE) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: np.ndarray, *, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)
