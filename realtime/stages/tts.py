"""TTS stage: one small interface (text in, PCM chunks out, cancellable) and three engines behind it.

- Piper (default): the embedded `en_US-joe-medium` voice. We build its onnxruntime session ourselves:
  `PiperVoice.load` takes onnxruntime's defaults (all cores, spinning threads), and a spinning
  onnxruntime slows the llama.cpp step that follows it (shared/notes/latency.md).
- espeak-ng: the tiny fallback (Debian package), through its command line.
- Chatterbox (GPU, optional extra): loaded from a local checkpoint directory or by its model name.

Engines are blocking and stateful; `Tts` runs one on its own thread, hands chunks to the event loop
through a bounded queue and stops between chunks when cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import shutil
import subprocess
import threading
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr

from realtime.errors import ServerError

log = logging.getLogger("realtime.tts")


class TtsFailed(ServerError):
    code = "tts_failed"
    safe_message = "Speech synthesis failed."


class TtsEngine(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Blocking: float32 mono chunks at `sample_rate` for `text` (one or more)."""
        ...


class PiperEngine:
    name = "piper"

    def __init__(self, model_path: Path, *, threads: int = 2, use_cuda: bool = False) -> None:
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig

        config_path = Path(f"{model_path}.json")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=config)
        self.sample_rate = config.sample_rate

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self._voice.synthesize(text):
            yield chunk.audio_float_array.astype(np.float32, copy=False)


class EspeakEngine:
    name = "espeak"
    sample_rate = 22_050

    def __init__(self, *, voice: str = "en-us", words_per_minute: int = 170, binary: str = "espeak-ng") -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed (Debian package espeak-ng)")
        self._cmd = [found, "--stdout", "-v", voice, "-s", str(words_per_minute)]

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        # `--` ends options, so text starting with '-' is read as text.
        out = subprocess.run([*self._cmd, "--", text], capture_output=True, timeout=30, check=True).stdout
        with wave.open(io.BytesIO(out)) as wav:
            rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
        audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
        yield audio if rate == self.sample_rate else soxr.resample(audio, rate, self.sample_rate)


class ChatterboxEngine:
    """Resemble AI's Chatterbox on torch (GPU). Optional: `pip install chatterbox-tts` on a CUDA host."""

    name = "chatterbox"

    def __init__(self, checkpoint: str | None = None, *, device: str = "cuda") -> None:
        try:
            from chatterbox.tts import ChatterboxTTS  # type: ignore[import-not-found]
        except ImportError as exc:
            raise FileNotFoundError("chatterbox-tts is not installed (an optional GPU extra)") from exc
        if checkpoint and Path(checkpoint).is_dir():
            self._model: Any = ChatterboxTTS.from_local(checkpoint, device)
        else:
            self._model = ChatterboxTTS.from_pretrained(device=device)
        self.sample_rate = int(self._model.sr)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        wav = self._model.generate(text)
        yield np.asarray(wav.squeeze().detach().cpu().numpy(), dtype=np.float32)


_DONE = object()


class Tts:
    """Async front of one engine: its own thread, output resampled to the client's rate, cancellable."""

    def __init__(self, engine: TtsEngine, *, queue_size: int = 8) -> None:
        self.engine = engine
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tts-{engine.name}")
        self._queue_size = queue_size

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def stream(self, text: str, out_rate: int) -> AsyncIterator[np.ndarray]:
        """float32 chunks of `text` at `out_rate`. Leaving the iteration stops the engine between chunks."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()  # bounded by `slots`, so the worker never blocks the loop
        slots = threading.Semaphore(self._queue_size)
        stop = threading.Event()
        engine = self.engine

        def put(item: Any) -> bool:
            while not slots.acquire(timeout=0.05):
                if stop.is_set():
                    return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone
                return False
            return True

        def work() -> None:
            try:
                for chunk in engine.synthesize(text):
                    if stop.is_set():
                        return
                    if engine.sample_rate != out_rate and len(chunk):
                        chunk = soxr.resample(chunk, engine.sample_rate, out_rate)
                    if not put(chunk):
                        return
                put(_DONE)
            except BaseException as exc:  # handed to the consumer, which raises it as TtsFailed
                if not stop.is_set():
                    put(exc)

        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                item = await queue.get()
                slots.release()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    log.warning("%s failed on %d chars: %r", engine.name, len(text), item)
                    raise TtsFailed() from item
                yield item
        finally:
            stop.set()
            if future.done():
                await future


def load_engine(
    name: str, *, piper_model: Path, threads: int, device: str, chatterbox_checkpoint: str | None, espeak: str
) -> TtsEngine:
    if name == "piper":
        return PiperEngine(piper_model, threads=threads, use_cuda=device == "cuda")
    if name == "espeak":
        return EspeakEngine(binary=espeak)
    if name == "chatterbox":
        return ChatterboxEngine(chatterbox_checkpoint, device="cuda" if device == "auto" else device)
    raise ValueError(f"unknown TTS engine {name!r}")
