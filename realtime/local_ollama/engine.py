"""The llama.cpp side: one `Llama` per process, driven by one worker thread, streamed to the event loop.

llama.cpp contexts are not thread-safe, so every call that touches the model (load, tokenize,
generate, unload) runs on a single-thread executor: its queue is the FIFO of waiting requests and
nothing can interleave. Tokens cross to the event loop through a bounded channel; the consumer
going away sets a stop flag that the worker checks after every token, so an abandoned generation
stops within a token and the next request starts at once.

The same `Llama` object is kept between requests so llama-cpp-python's prefix reuse applies:
a conversation that grows by one turn re-evaluates only the new tokens, not the system prompt.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import ctypes
import gc
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from realtime.local_ollama.yield_gate import YieldGate

log = logging.getLogger("realtime.local_ollama")
native_log = logging.getLogger("realtime.local_ollama.llama_cpp")

_T = TypeVar("_T")

FOREVER = math.inf
DEFAULT_RESERVE = 512  # tokens kept free for the reply when num_predict is unlimited
CHANNEL_SIZE = 64  # events in flight between the worker and the event loop
EVENT_TIMEOUT = 600.0  # longest wait for the next event (queueing behind other requests included)
_SLOT_POLL_INTERVAL = 0.05

# GGUF `general.file_type` -> the quantization names Ollama shows.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class EngineError(Exception):
    """A failure with a message safe to show to the HTTP client, and the status code to send."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to run the model. Durations are seconds; `FOREVER` keeps the model resident."""

    model_path: Path
    name: str = "smollm2:135m"
    n_threads: int | None = None  # None: one per CPU
    n_ctx: int = 4096
    preload: bool = True
    keep_alive: float = 300.0  # Ollama's default: unload after 5 idle minutes
    yield_file: Path | None = None  # a voice server's pause requests (yield_gate.py); None: never pauses

    @property
    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What /api/tags, /api/show and /api/ps say about the model, read once from the GGUF header."""

    name: str
    path: Path
    file_size: int
    modified_at: datetime
    digest: str
    family: str
    parameter_count: int
    quantization_level: str
    license: str
    template: str
    stop_words: tuple[str, ...]  # the template's control tokens, for /api/show's parameters
    metadata: Mapping[str, str]
    resident_size: int  # weights plus an f16 KV cache of n_ctx tokens

    @property
    def parameter_size(self) -> str:
        n = self.parameter_count
        return f"{n / 1e9:.1f}B" if n >= 1_000_000_000 else f"{n / 1e6:.2f}M"


@dataclass(frozen=True, slots=True)
class Sampling:
    """Ollama's options, with Ollama's defaults. num_predict <= 0 means "until the context is full"."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    num_predict: int = -1
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """One request for text: either chat messages (templated) or a raw prompt (used as is)."""

    messages: Sequence[Mapping[str, Any]] = ()
    raw_prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    grammar: LlamaGrammar | None = None
    keep_alive: float | None = None  # None: the server default
    started_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class Piece:
    """A chunk of reply text (one token, or what a stop-string check held back)."""

    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a reply and its counts; durations in nanoseconds, as Ollama reports them."""

    done_reason: str  # "stop" | "length"
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


@dataclass(frozen=True, slots=True)
class Resident:
    """The loaded model as /api/ps shows it; `expires_at` is None while it stays forever."""

    info: ModelInfo
    n_ctx: int
    expires_at: datetime | None


def compile_format(fmt: object) -> LlamaGrammar | None:
    """Turn Ollama's `format` ("json", a JSON schema, or nothing) into a grammar; ValueError if invalid."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if isinstance(fmt, dict):
        try:
            return LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
        except Exception as exc:  # the converter raises assorted types on schemas it cannot express
            raise ValueError(f"invalid format: unsupported JSON schema ({exc})") from exc
    raise ValueError(f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema object')


class StopFilter:
    """Cuts text at the first stop string, holding back any tail that could still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was reached)."""
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        hold = max((self._overlap(buf, s) for s in self._stops), default=0)
        self._pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    @staticmethod
    def _overlap(buf: str, stop: str) -> int:
        for k in range(min(len(stop) - 1, len(buf)), 0, -1):
            if buf.endswith(stop[:k]):
                return k
        return 0


class _Stopped(Exception):
    """The consumer went away: the worker abandons the job."""


class _Channel:
    """Worker thread -> event loop, bounded both ways: the worker blocks while `size` events are unread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = CHANNEL_SIZE) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Piece | Done | EngineError] = asyncio.Queue(maxsize=size + 1)
        self._slots = threading.Semaphore(size)
        self.stopped = threading.Event()

    def put(self, item: Piece | Done | EngineError) -> None:
        """Called from the worker; raises _Stopped once the consumer has gone."""
        while not self._slots.acquire(timeout=_SLOT_POLL_INTERVAL):
            if self.stopped.is_set():
                raise _Stopped
        if self.stopped.is_set():
            raise _Stopped
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError as exc:  # the loop is closed: nobody is listening
            raise _Stopped from exc

    def abort(self, error: EngineError) -> None:
        """On the loop: wake the consumer when the job died without a last event (one slot is spare)."""
        if not self._queue.full():
            self._queue.put_nowait(error)

    async def get(self) -> Piece | Done | EngineError:
        async with asyncio.timeout(EVENT_TIMEOUT):
            item = await self._queue.get()
        self._slots.release()
        return item


_native_log_callback: Any = None


def quiet_native_logs() -> None:
    """Route llama.cpp's own log lines into stdlib logging: errors as warnings, the rest as debug."""
    global _native_log_callback
    if _native_log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation.
        native_log.log(logging.WARNING if level == 4 else logging.DEBUG, "%s", text.decode(errors="replace").rstrip())

    _native_log_callback = forward  # ctypes callbacks must stay referenced while installed
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


class Engine:
    """The model, its residency (keep-alive) and the serialized generation queue."""

    def __init__(self, config: EngineConfig) -> None:
        quiet_native_logs()
        self.config = config
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: llama_cpp.Llama | None = None  # touched only on the worker thread
        self._info: ModelInfo | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._active = 0  # requests in flight (event-loop side)
        self._channels: set[_Channel] = set()
        self._keep_alive = config.keep_alive
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expires_at: datetime | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._closed = False
        self._gate = YieldGate(config.yield_file) if config.yield_file is not None else None

    # ---- lifecycle ----

    async def start(self) -> None:
        """Read the GGUF header; load the model too when configured to preload."""
        self._info, self._formatter = await self._call(self._read_info)
        if self.config.preload:
            await self.load(None)

    def abort_all(self, reason: str) -> None:
        """End every generation now with an error its client sees (shutdown must not wait on replies)."""
        for channel in self._channels:
            channel.stopped.set()
            channel.abort(EngineError(reason, 503))

    async def close(self) -> None:
        """Stop every generation, free the model and the worker thread."""
        self._closed = True
        self._cancel_expiry()
        for channel in self._channels:
            channel.stopped.set()
        await self._call(self._unload)
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._gate is not None:  # only the worker thread read it, and it is gone
            self._gate.close()

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("Engine.start() has not run")
        return self._info

    def matches(self, name: str) -> bool:
        """Ollama's naming: a name without a tag means `:latest`; names compare case-insensitively."""
        return _normalize(name) == _normalize(self.config.name)

    def resident(self) -> Resident | None:
        if self._llm is None or self._info is None:
            return None
        return Resident(self._info, self.config.n_ctx, self._expires_at)

    # ---- load / unload ----

    async def load(self, keep_alive: float | None, started_at: float | None = None) -> int:
        """Make the model resident; return Ollama's load_duration (ns) counted from `started_at`."""
        started_at = time.perf_counter() if started_at is None else started_at
        self._begin(keep_alive)
        try:
            ready_at = await self._call(self._ensure_loaded)
        finally:
            self._end()
        return _ns(ready_at - started_at)

    async def unload(self) -> None:
        """Free the model now (after any request already queued)."""
        self._cancel_expiry()
        await self._call(self._unload)

    # ---- generation ----

    async def generate(self, request: Generation) -> AsyncIterator[Piece | Done]:
        """Stream the reply: Pieces then one Done. Raises EngineError. Closing it stops the worker."""
        loop = asyncio.get_running_loop()
        channel = _Channel(loop)
        self._channels.add(channel)
        self._begin(request.keep_alive)
        job = loop.run_in_executor(self._executor, self._run, request, channel)
        job.add_done_callback(lambda f: _job_finished(f, channel))
        try:
            while True:
                event = await channel.get()
                if isinstance(event, EngineError):
                    raise event
                yield event
                if isinstance(event, Done):
                    return
        except TimeoutError as exc:
            raise EngineError("timed out waiting for the model", 503) from exc
        finally:  # synchronous on purpose: it must complete even inside a cancelled task
            channel.stopped.set()
            job.cancel()
            self._channels.discard(channel)
            self._end()

    # ---- keep-alive (event loop side) ----

    def _begin(self, keep_alive: float | None) -> None:
        self._active += 1
        self._keep_alive = self.config.keep_alive if keep_alive is None else keep_alive
        self._cancel_expiry()
        self._set_expires_at(self._keep_alive)

    def _end(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._schedule_expiry(self._keep_alive)

    def _schedule_expiry(self, keep_alive: float) -> None:
        self._cancel_expiry()
        self._set_expires_at(keep_alive)
        if keep_alive == FOREVER:
            return
        if keep_alive <= 0:
            self._expire()
            return
        self._expiry_timer = asyncio.get_running_loop().call_later(keep_alive, self._expire)

    def _set_expires_at(self, keep_alive: float) -> None:
        now = datetime.now(UTC)
        self._expires_at = None if keep_alive == FOREVER else now + timedelta(seconds=max(keep_alive, 0))

    def _cancel_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    def _expire(self) -> None:
        self._expiry_timer = None
        if self._active or self._closed:  # a request came in meanwhile: it reschedules when done
            return
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._unload)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def _call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ---- worker thread ----

    def _read_info(self) -> tuple[ModelInfo, Jinja2ChatFormatter]:
        path = self.config.model_path
        vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        try:
            info = _model_info(self.config, vocab)
            formatter = _chat_formatter(vocab)
        finally:
            vocab.close()
        return info, formatter

    def _ensure_loaded(self) -> float:
        if self._llm is None:
            t0 = time.perf_counter()
            try:
                self._llm = llama_cpp.Llama(
                    str(self.config.model_path),
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.threads,
                    n_threads_batch=self.config.threads,
                    n_gpu_layers=0,
                    verbose=False,
                )
                self._llm.eval([self._llm.token_eos()] * 2)  # warm-up: the first decode is slow
                self._llm.reset()
            except Exception as exc:
                log.exception("loading %s failed", self.config.model_path)
                raise EngineError("failed to load the model") from exc
            log.info(
                "model %s loaded in %.0f ms (%d threads, n_ctx %d)",
                self.config.name,
                (time.perf_counter() - t0) * 1000,
                self.config.threads,
                self.config.n_ctx,
            )
        return time.perf_counter()

    def _unload(self) -> None:
        if self._llm is None:
            return
        self._llm.close()
        self._llm = None
        gc.collect()
        log.info("model %s unloaded", self.config.name)

    def _run(self, request: Generation, channel: _Channel) -> None:
        try:
            if channel.stopped.is_set():  # its client left while it waited in the queue
                return
            ready_at = self._ensure_loaded()
            llm = self._llm
            assert llm is not None
            tokens = self._prompt_tokens(llm, request)
            channel.put(self._generate(llm, tokens, request, ready_at, channel))
        except _Stopped:
            return
        except EngineError as exc:
            self._put_error(channel, exc)
        except Exception:
            log.exception("generation failed")
            self._put_error(channel, EngineError("internal error while generating"))

    def _yield(self) -> None:
        """Between tokens: wait while the voice server synthesizes a reply's first piece."""
        if self._gate is not None:
            waited = self._gate.wait()
            if waited > 0.001:
                log.debug("paused %.0f ms for the voice server", waited * 1000)

    @staticmethod
    def _put_error(channel: _Channel, error: EngineError) -> None:
        try:
            channel.put(error)
        except _Stopped:
            pass

    def _prompt_tokens(self, llm: llama_cpp.Llama, request: Generation) -> list[int]:
        """Template and tokenize; drop the oldest non-system messages until the reply has room."""
        num_predict = request.sampling.num_predict
        reserve = min(num_predict if num_predict > 0 else DEFAULT_RESERVE, self.config.n_ctx // 2)
        budget = self.config.n_ctx - reserve
        if request.raw_prompt is not None:
            tokens = llm.tokenize(request.raw_prompt.encode(), add_bos=True, special=True)
            return tokens[-budget:]
        render = self._renderer(llm)
        messages = list(request.messages)
        tokens = render(messages)
        if len(tokens) <= budget:
            return tokens
        return _fit(messages, render, budget)

    def _renderer(self, llm: llama_cpp.Llama) -> Callable[[Sequence[Mapping[str, Any]]], list[int]]:
        formatter = self._formatter
        assert formatter is not None

        def render(messages: Sequence[Mapping[str, Any]]) -> list[int]:
            try:
                result = formatter(messages=list(messages))
            except Exception as exc:  # the template's raise_exception() or a jinja error
                raise EngineError(f"invalid messages for this model's chat template: {exc}", 400) from exc
            return llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True)

        return render

    def _generate(
        self, llm: llama_cpp.Llama, tokens: list[int], request: Generation, ready_at: float, channel: _Channel
    ) -> Done:
        """The token loop: sample, detokenize, apply stop strings, emit; checks the stop flag every token."""
        s = request.sampling
        limit = max(1, self.config.n_ctx - len(tokens))  # no context shift: stop when the context is full
        if s.num_predict > 0:
            limit = min(limit, s.num_predict)
        llm.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None or s.seed < 0 else s.seed)
        _decode_last_two(llm, tokens)
        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(s.stop)
        reason, count, hit = "length", 0, False
        self._yield()
        t0 = t_first = time.perf_counter()
        tokens_out = llm.generate(
            tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            typical_p=s.typical_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            grammar=request.grammar,
        )
        try:
            for token in tokens_out:
                if count == 0:
                    t_first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token) or llama_cpp.llama_vocab_is_control(vocab, token):
                    reason = "stop"
                    break
                count += 1
                text, hit = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    channel.put(Piece(text))
                if hit:
                    reason = "stop"
                    break
                if channel.stopped.is_set():
                    raise _Stopped
                if count >= limit:
                    break
                self._yield()  # the next token is computed when the loop asks for it
        finally:
            tokens_out.close()
        tail = "" if hit else stops.feed(decoder.decode(b"", final=True))[0] + stops.flush()
        if tail:
            channel.put(Piece(tail))
        t_end = time.perf_counter()
        log.debug(
            "generated %d tokens after a %d-token prompt: prefill %.0f ms, %.1f tokens/s",
            count,
            len(tokens),
            (t_first - t0) * 1000,
            (count - 1) / (t_end - t_first) if count > 1 else 0.0,
        )
        return Done(
            done_reason=reason,
            total_duration=_ns(t_end - request.started_at),
            load_duration=_ns(ready_at - request.started_at),
            prompt_eval_count=len(tokens),
            prompt_eval_duration=_ns(t_first - t0),
            eval_count=count,
            eval_duration=_ns(t_end - t_first),
        )


def _decode_last_two(llm: llama_cpp.Llama, tokens: list[int]) -> None:
    """Make the KV-cache reuse leave at least two prompt tokens to decode.

    llama.cpp's one-token decode rounds differently from its batch decode, so a prompt served
    entirely from the cache (all but its last token) would sample differently from the same prompt
    decoded fresh, and a seed would not reproduce. Two tokens take the batch path; cost ~4 ms, and
    only when the whole prompt was already cached.
    """
    if llm.n_tokens > len(tokens) - 2:
        cached = llama_cpp.Llama.longest_token_prefix(llm._input_ids.tolist(), tokens)
        if cached > len(tokens) - 2:
            llm.n_tokens = max(0, len(tokens) - 2)


def _job_finished(job: asyncio.Future[None], channel: _Channel) -> None:
    """A job that was cancelled (shutdown) or crashed sent no last event: wake its consumer."""
    if job.cancelled() or job.exception() is not None:
        channel.abort(EngineError("generation aborted", 503))


def _fit(
    messages: list[Mapping[str, Any]], render: Callable[[Sequence[Mapping[str, Any]]], list[int]], budget: int
) -> list[int]:
    """Like Ollama: keep system messages and the newest messages that fit (binary search on the cut)."""

    def kept(cut: int) -> list[Mapping[str, Any]]:
        return [m for m in messages[:cut] if m.get("role") == "system"] + messages[cut:]

    lo, hi, best = 1, len(messages) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        tokens = render(kept(mid))
        if len(tokens) <= budget:
            best, hi = tokens, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return best
    return render(kept(len(messages) - 1))[-budget:]  # even the last message is too long: keep its end


def _normalize(name: str) -> str:
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _model_info(config: EngineConfig, vocab: llama_cpp.Llama) -> ModelInfo:
    md = dict(vocab.metadata)
    stat = config.model_path.stat()
    arch = md.get("general.architecture", "unknown")
    n_layer = int(md.get(f"{arch}.block_count", 0))
    n_head = int(md.get(f"{arch}.attention.head_count", 1)) or 1
    n_head_kv = int(md.get(f"{arch}.attention.head_count_kv", n_head))
    n_embd = int(md.get(f"{arch}.embedding_length", 0))
    kv_bytes = 2 * n_layer * config.n_ctx * (n_embd // n_head) * n_head_kv * 2  # K and V, f16
    template = md.get("tokenizer.chat_template", "")
    identity = f"{config.model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return ModelInfo(
        name=config.name if ":" in config.name else config.name + ":latest",
        path=config.model_path,
        file_size=stat.st_size,
        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        digest=hashlib.sha256(identity.encode()).hexdigest(),
        family=arch,
        parameter_count=llama_cpp.llama_model_n_params(vocab.model),
        quantization_level=_FILE_TYPES.get(int(md.get("general.file_type", -1)), "unknown"),
        license=md.get("general.license", ""),
        template=template,
        stop_words=tuple(
            w
            for w in (_token_text(vocab, vocab.token_bos()), _token_text(vocab, vocab.token_eos()))
            if w and w in template
        ),
        metadata=md,
        resident_size=stat.st_size + kv_bytes,
    )


def _token_text(vocab: llama_cpp.Llama, token: int) -> str:
    return vocab._model.token_get_text(token) if token != -1 else ""


def _chat_formatter(vocab: llama_cpp.Llama) -> Jinja2ChatFormatter:
    """The GGUF's own chat template, rendered the way llama-cpp-python's chat handler does."""
    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        raise EngineError("the model file carries no chat template")
    return Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(vocab, vocab.token_eos()),
        bos_token=_token_text(vocab, vocab.token_bos()),
        stop_token_ids=[vocab.token_eos()],
    )
