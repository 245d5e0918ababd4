"""STT stage: Whisper (CTranslate2 through faster-whisper's loader) on short windows, and a fair worker pool.

faster-whisper's `transcribe()` pads every input to 30 s, which costs ~480 ms of encoder time per call
on our 2 cores whatever the utterance length (see shared/notes/latency.md). We call the CTranslate2
model directly on a (duration + 1 s) window in timestamp mode, with new tokens capped, and re-decode on a
longer window when the output looks degenerate (short windows make Whisper repeat itself).

The pool runs decodes on a few threads for all sessions: finals before partials, sessions served
round-robin, at most one queued partial per session (a newer one replaces it), so one talkative
session cannot starve another and load simply makes partials less frequent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from realtime.errors import ServerError
from realtime.stages.niceness import run_lowered, worker_thread_init

log = logging.getLogger("realtime.stt")

SAMPLE_RATE = 16_000
MAX_WINDOW_S = 30
TOKENS_PER_SECOND_CAP = 8
TOKEN_CAP_SLACK = 10

# Phrases Whisper produces from silence or noise (trained on subtitles); dropped when the model itself
# is unsure there was speech.
KNOWN_HALLUCINATIONS = frozenset(
    {
        "you", "thank you", "thanks", "thank you for watching", "thanks for watching", "bye", "so", "okay",
        "subtitles by the amara.org community", "please subscribe", "thank you very much", "the end",
    }
)  # fmt: skip

T = TypeVar("T")


class SttBusy(ServerError):
    code = "stt_busy"
    safe_message = "Speech recognition is overloaded; this audio was not transcribed."


@dataclass(frozen=True, slots=True)
class SttConfig:
    model: str  # a faster-whisper model name ("small.en") or a local CTranslate2 model directory
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "default"  # default: int8 on CPU, float16 on CUDA
    workers: int = 1
    threads_per_worker: int = 1
    nice: int = 0  # nice levels below the server for its CPU compute threads (niceness.py; the server: 10)
    idle: bool = False  # and SCHED_IDLE: only CPU time nothing else wants (niceness.py; the server: True)


@dataclass(frozen=True, slots=True)
class Transcript:
    tokens: list[int]  # text tokens only (no special or timestamp tokens), forced prefix included
    text: str
    no_speech_prob: float
    avg_logprob: float
    language: str | None
    degenerate: bool
    decode_ms: float
    language_prob: float = 1.0  # how sure the detection was (1.0 when the language was given)


def _normalize(text: str) -> str:
    return re.sub(r"[^\w\s.']", "", text.lower()).strip(" .")


def _repeat_at(words: list[str], n: int = 5) -> int | None:
    """Index where a run of `n` words seen earlier starts again (Whisper looping), or None."""
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        first = seen.setdefault(gram, i)
        if i - first >= n:
            return i
    return None


def looks_degenerate(text: str, new_tokens: int, cap: int) -> bool:
    """Hit the token cap, a word or short phrase stuttered three times, or a 5-word run said twice."""
    if new_tokens >= cap:
        return True
    words = [w.strip(".,!?;:") for w in text.lower().split()]
    for n in range(1, 5):
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return True
    return _repeat_at(words) is not None


def trim_repetition(text: str) -> str:
    """Cut a looping transcript where its repetition starts (the last resort after re-decoding)."""
    raw = text.split()
    at = _repeat_at([w.strip(".,!?;:").lower() for w in raw])
    return " ".join(raw[:at]) if at is not None else text


def is_hallucination(t: Transcript) -> bool:
    """Whisper's own rule (no-speech probability with a low log-probability), plus the known phrases."""
    if not t.text.strip():
        return True
    if t.no_speech_prob > 0.6 and t.avg_logprob < -1.0:
        return True
    return _normalize(t.text) in KNOWN_HALLUCINATIONS and t.no_speech_prob > 0.2


class WhisperTokens:
    """Token ids to text and word boundaries: needs only the tokenizer, so it outlives an unloaded model."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tokenizer = hf_tokenizer
        self._word_starts: dict[int, bool] = {}

    def is_word_start(self, token: int) -> bool:
        cached = self._word_starts.get(token)
        if cached is None:
            cached = self._tokenizer.decode([token]).startswith(" ")
            self._word_starts[token] = cached
        return cached

    def text(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens).strip()


class WhisperEngine:
    """One loaded model. `transcribe` is blocking and thread-safe (CTranslate2 serves `workers` in parallel)."""

    def __init__(self, config: SttConfig) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        device, index = config.device, 0
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        if device.startswith("cuda:"):  # a scheduler placement, e.g. "cuda:1"
            device, index = "cuda", int(device.partition(":")[2])
        compute = config.compute_type
        if compute == "default":
            compute = "float16" if device == "cuda" else "int8"
        started = time.perf_counter()
        # built in a lowered thread: CTranslate2's compute threads, started here, inherit its priority
        self._model = run_lowered(
            lambda: WhisperModel(
                config.model,
                device=device,
                device_index=index,
                compute_type=compute,
                cpu_threads=config.threads_per_worker,
                num_workers=config.workers,
                local_files_only=Path(config.model).is_dir(),
            ),
            config.nice if device == "cpu" else 0,
            idle=config.idle and device == "cpu",
            name="stt-load",
        )
        self.load_s = time.perf_counter() - started
        self.device = device
        self.compute_type = compute
        self._ct2 = self._model.model
        self._features = self._model.feature_extractor
        self.multilingual = self._ct2.is_multilingual
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str | None, Any] = {}
        base = self._tokenizer("en")
        self.eot = base.eot
        self.timestamp_begin = base.timestamp_begin
        self.tokens = WhisperTokens(self._model.hf_tokenizer)
        log.info("whisper %s loaded on %s/%s in %.2fs", config.model, device, compute, self.load_s)

    def _tokenizer(self, language: str | None) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            lang = language if self.multilingual else "en"
            tok = self._tokenizer_cls(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
            self._tokenizers[language] = tok
        return tok

    def is_word_start(self, token: int) -> bool:
        return self.tokens.is_word_start(token)

    def text(self, tokens: list[int]) -> str:
        return self.tokens.text(tokens)

    def _window(self, samples: np.ndarray, pad_s: float) -> np.ndarray:
        seconds = min(MAX_WINDOW_S, math.ceil(len(samples) / SAMPLE_RATE + pad_s))
        window = np.zeros(seconds * SAMPLE_RATE, dtype=np.float32)
        n = min(len(samples), len(window))
        window[:n] = samples[-n:] if n < len(samples) else samples
        return self._features(window, padding=0)

    def transcribe(
        self, samples: np.ndarray, *, prefix: list[int] | None = None, language: str | None = None
    ) -> Transcript:
        """Decode 16 kHz float32 audio (≤ 30 s); the result's tokens start with `prefix`."""
        import ctranslate2

        started = time.perf_counter()
        prefix = list(prefix or [])
        duration = len(samples) / SAMPLE_RATE
        cap = int(TOKENS_PER_SECOND_CAP * duration + TOKEN_CAP_SLACK)
        result = None
        language_prob = 1.0
        for pad_s in (1.0, 4.0, float(MAX_WINDOW_S)):
            features = self._window(samples, pad_s)
            view = ctranslate2.StorageView.from_array(features[np.newaxis])
            if language is None and self.multilingual:
                # Encode once and hand the encoder output to both: detection and decoding on the raw
                # features would run the encoder twice (+24 % per decode until the language is known).
                view = self._ct2.encode(view, to_cpu=False)
                language, language_prob = self._detect(view)
            tok = self._tokenizer(language)
            prompt = [*tok.sot_sequence, self.timestamp_begin, *prefix]
            out = self._ct2.generate(
                view,
                [prompt],
                beam_size=1,
                max_length=min(448, len(prompt) + cap),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=not prefix,
            )[0]
            new = [t for t in out.sequences_ids[0] if t < self.eot]
            if new[: len(prefix)] == prefix:  # some versions echo the prompt's text tokens
                new = new[len(prefix) :]
            tokens = prefix + new
            text = self.text(tokens)
            degenerate = looks_degenerate(text, len([t for t in out.sequences_ids[0] if t < self.eot]), cap)
            result = Transcript(
                tokens=tokens,
                text=text,
                no_speech_prob=float(out.no_speech_prob),
                avg_logprob=float(out.scores[0]) if out.scores else 0.0,
                language=language,
                degenerate=degenerate,
                decode_ms=(time.perf_counter() - started) * 1000,
                language_prob=language_prob,
            )
            if not degenerate or pad_s >= MAX_WINDOW_S or duration + pad_s >= MAX_WINDOW_S:
                break
        assert result is not None
        if result.degenerate:
            result = replace(result, text=trim_repetition(result.text))
        return result

    def _detect(self, features: Any) -> tuple[str | None, float]:
        token, prob = self._ct2.detect_language(features)[0][0]
        return token.strip("<|>") or None, float(prob)


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:
        return False


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    final: bool
    queued_at: float = field(default_factory=time.perf_counter)


class SttPool:
    """Fair scheduling of blocking decodes on `workers` threads, for all sessions."""

    def __init__(self, workers: int = 1, *, nice: int = 0, idle: bool = False, max_finals_per_session: int = 8) -> None:
        self.workers = workers
        # the callers' threads compute the log-mel features: as low as the model's own threads
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="stt", initializer=worker_thread_init, initargs=("stt", nice, idle)
        )
        self._finals: OrderedDict[object, deque[_Job]] = OrderedDict()
        self._partials: OrderedDict[object, _Job] = OrderedDict()
        self._max_finals = max_finals_per_session
        self._busy = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="stt-dispatcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for jobs in self._finals.values():
            for job in jobs:
                job.future.cancel()
        for job in self._partials.values():
            job.future.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._finals.values()) + len(self._partials)

    async def run(self, key: object, fn: Callable[[], T], *, final: bool) -> T | None:
        """Run `fn` on a worker. A partial returns None if a newer partial of `key` replaced it first."""
        if self._wake is None:
            raise RuntimeError("SttPool.start() was not awaited")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        job = _Job(fn, future, final)
        if final:
            queue = self._finals.setdefault(key, deque())
            if len(queue) >= self._max_finals:
                raise SttBusy()
            queue.append(job)
        else:
            old = self._partials.pop(key, None)
            if old is not None and not old.future.done():
                old.future.set_result(None)
            self._partials[key] = job
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            self._forget(key, job)
            raise

    def _forget(self, key: object, job: _Job) -> None:
        queue = self._finals.get(key)
        if queue is not None and job in queue:
            queue.remove(job)
            if not queue:
                del self._finals[key]
        if self._partials.get(key) is job:
            del self._partials[key]

    def _next(self) -> _Job | None:
        """Finals first; within a kind, the session that waited longest (round-robin by re-insertion)."""
        while self._finals:
            key, queue = next(iter(self._finals.items()))
            job = queue.popleft()
            del self._finals[key]
            if queue:
                self._finals[key] = queue  # to the back: other sessions go first
            if not job.future.done():
                return job
        while self._partials:
            _, job = self._partials.popitem(last=False)
            if not job.future.done():
                return job
        return None

    async def _dispatch(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._busy < self.workers and (job := self._next()) is not None:
                self._busy += 1
                running = loop.run_in_executor(self._executor, job.fn)
                self._running.add(running)
                running.add_done_callback(lambda f, job=job: self._finished(f, job))

    def _finished(self, done: asyncio.Future[Any], job: _Job) -> None:
        self._running.discard(done)
        self._busy -= 1
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif done.exception() is not None:
                job.future.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                job.future.set_result(done.result())
        assert self._wake is not None
        self._wake.set()
