"""One Whisper decode of a short question, as the server's final decode runs it: `python -m bench.whisper_decode`.

    .venv/bin/python -m bench.whisper_decode [--threads 1,2] [--window-step 1.0,0.5,0.1] [--rounds 2]

Why: between the end of speech and the first audio, the final decode is the first link of the chain
(docs/performance.md, voice out). This measures what two knobs do to it, alternating in one run:
  threads      CTranslate2 threads per decode (`SttConfig.threads_per_worker`; the server uses 1)
  window step  the decode window is the audio plus 1 s, rounded up to this step (the server: whole seconds)
What runs: the embedded Whisper base (int8, CPU) on the voice_out bench's 21 questions plus the 3 sentences
of tests/test_voice_in.py, steady Piper speech at 16 kHz with 100 ms of silence after it, language given
("en"). Per setting and round: decode time p50 / max over the questions, mean WER, and the questions
misheard (WER > 0.2, the tests' bar).

What distorts it: the box is shared (hence rounds, alternating); the server's final decode also gets the
stable words of the partials as a forced prefix, which this leaves out (every decode here is from scratch).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from bench.voice_out import QUESTIONS
from realtime.config import load_settings
from realtime.stages.stt import MAX_WINDOW_S, SttConfig, WhisperEngine
from tests.support.speech import synthesize, wer
from tests.test_voice_in import SENTENCES

RATE = 16_000


class SteppedWindow(WhisperEngine):
    """The engine with its window rounded up to `step` seconds instead of whole seconds."""

    def __init__(self, config: SttConfig, step: float) -> None:
        super().__init__(config)
        self.step = step

    def _window(self, samples: np.ndarray, pad_s: float) -> np.ndarray:
        seconds = min(MAX_WINDOW_S, math.ceil((len(samples) / RATE + pad_s) / self.step) * self.step)
        window = np.zeros(int(seconds * RATE), dtype=np.float32)
        n = min(len(samples), len(window))
        window[:n] = samples[-n:] if n < len(samples) else samples
        return self._features(window, padding=0)


def measure(engine: WhisperEngine, texts: list[str], audio: list[np.ndarray]) -> str:
    times, errors = [], []
    for text, samples in zip(texts, audio, strict=True):
        started = time.perf_counter()
        heard = engine.transcribe(samples, language="en").text
        times.append((time.perf_counter() - started) * 1000)
        errors.append(wer(text, heard))
    misheard = sum(e > 0.2 for e in errors)
    return (
        f"{statistics.median(times):.1f} / {max(times):.1f} ms | {statistics.fmean(errors):.3f} | "
        f"{misheard} of {len(texts)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="CTranslate2 threads per decode, comma-separated")
    parser.add_argument("--window-step", default="1.0,0.5,0.1", help="window rounding steps (s), comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = load_settings().stt_model_ref
    texts = QUESTIONS + SENTENCES
    silence = np.zeros(RATE // 10, np.float32)
    audio = [np.concatenate([synthesize(t, RATE).astype(np.float32) / 32768, silence]) for t in texts]
    threads = [int(x) for x in args.threads.split(",")]
    steps = [float(x) for x in args.window_step.split(",")]
    engines = {
        t: {s: SteppedWindow(SttConfig(model=model, device="cpu", threads_per_worker=t), s) for s in steps}
        for t in threads
    }
    for by_step in engines.values():
        for engine in by_step.values():
            engine.transcribe(audio[0], language="en")  # warm
    print("| round | threads | window step | decode p50 / max | mean WER | misheard (WER > 0.2) |")
    print("|---|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        for t in threads:
            for s in steps:
                print(f"| {round_} | {t} | {s:g} s | {measure(engines[t][s], texts, audio)} |", flush=True)


if __name__ == "__main__":
    main()
