"""The server's models under the GPU scheduler: which are registered, on what device, and the leases.

Every model use is a lease (realtime/gpu): VAD and the end-of-turn model for the server's lifetime,
Whisper around each decode, the TTS engine around each spoken piece, the LLM around each streamed reply.
So an unload (admin API, low_vram swaps) waits for the model to be idle and never pulls it from under a
running turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import httpx

from realtime.config import Settings
from realtime.errors import ConfigError
from realtime.gpu_scheduler import FactoryModel, GpuScheduler, OllamaModel, SchedulerConfig, detect_backend
from realtime.stages.stt import SttConfig, WhisperEngine
from realtime.stages.tts import Tts, TtsEngine, load_engine
from realtime.stages.turn_model import SmartTurnModel
from realtime.stages.vad import SileroModel

log = logging.getLogger("realtime.models")

VAD, TURN, STT, TTS, LLM = "vad", "turn", "whisper", "tts", "llm"


def scheduler_config(s: Settings) -> SchedulerConfig:
    pins = {}
    for item in s.model_devices:
        name, sep, device = item.partition("=")
        if not (sep and name.strip() and device.strip()):
            raise ConfigError(f"REALTIME_MODEL_DEVICES: {item!r} is not name=device")
        pins[name.strip()] = device.strip()
    return SchedulerConfig(
        reserve_bytes=s.gpu_reserve_bytes,
        cpu_reserve_bytes=s.cpu_reserve_bytes,
        low_vram=s.low_vram,
        large_threshold_bytes=s.large_model_bytes,
        lease_timeout=s.model_lease_timeout,
        load_timeout=s.model_load_timeout,
        unload_timeout=s.model_unload_timeout,
        load_retry_interval=s.model_load_retry_interval,
        pins=pins,
    )


def first_tts_engine(s: Settings, device: str) -> TtsEngine:
    """The configured engine; when the default Piper voice cannot load, espeak-ng."""
    names = [s.tts_engine] + (["espeak"] if s.tts_engine == "piper" else [])
    failures = []
    for name in names:
        try:
            return load_engine(
                name,
                piper_model=s.piper_voice_path,
                threads=s.tts_threads,
                device="cuda" if device.startswith("cuda") else "cpu",
                chatterbox_checkpoint=s.chatterbox_checkpoint,
                espeak=s.espeak_binary,
            )
        except Exception as exc:  # a missing voice, binary or extra: try the next engine
            log.warning("TTS engine %s unavailable: %s", name, exc)
            failures.append(f"{name}: {exc}")
    raise RuntimeError("no TTS engine could load (" + "; ".join(failures) + ")")


def build_scheduler(s: Settings, http: httpx.AsyncClient | None, *, llm_on_cpu: bool) -> GpuScheduler:
    """The scheduler with every model the server uses registered (nothing is loaded yet)."""
    scheduler = GpuScheduler(
        detect_backend(cpu_budget_bytes=s.cpu_model_budget_bytes, prefer=s.gpu_backend), scheduler_config(s)
    )
    # the VAD is tiny and leased for the server's lifetime: never a "large" model swapped in low_vram mode
    scheduler.register(FactoryModel(VAD, "vad", 40 << 20, lambda d: SileroModel(s.vad_path), large=False), device="cpu")
    if s.voice != "off" and s.turn_model != "off" and s.turn_onnx_path.is_file():
        scheduler.register(
            FactoryModel(TURN, "turn", 40 << 20, lambda d: SmartTurnModel(s.turn_onnx_path), large=False), device="cpu"
        )
    if s.voice != "off":
        stt = SttConfig(
            model=s.stt_model_ref,
            compute_type=s.stt_compute_type,
            workers=s.stt_workers,
            nice=s.stt_nice,
            idle=s.stt_sched_idle,
        )

        def whisper(device: str) -> WhisperEngine:
            return WhisperEngine(_on(stt, device))

        scheduler.register(
            FactoryModel(STT, "stt", s.stt_estimate_bytes, whisper, measure_rss=True),
            device="cpu" if s.stt_device == "cpu" else None,
        )
    if s.tts_engine != "off":
        scheduler.register(
            FactoryModel(
                TTS,
                "tts",
                s.tts_estimate_bytes,
                lambda d: Tts(first_tts_engine(s, d)),
                close=lambda tts: tts.close(),
                measure_rss=True,
            ),
            device=None if s.tts_engine == "chatterbox" else "cpu",
        )
    if http is not None:
        scheduler.register(
            OllamaModel(LLM, tag=s.llm_model, base_url=s.ollama_url, estimate_bytes=s.llm_estimate_bytes, http=http),
            device="cpu" if llm_on_cpu else None,
        )
    return scheduler


def _on(config: SttConfig, device: str) -> SttConfig:
    """The STT settings placed on the scheduler's device ("cpu", "cuda:0"...)."""
    return dataclasses.replace(config, device=device)


@contextlib.asynccontextmanager
async def leased_tts(scheduler: GpuScheduler) -> AsyncIterator[Tts]:
    async with scheduler.lease(TTS) as handle:
        yield handle.model.instance
