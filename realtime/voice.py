"""The voice models every session shares: Silero VAD (batched), Whisper and its fair pool, and TTS.

The models themselves live under the GPU scheduler (realtime/models.py): Whisper is leased around each
decode, the TTS engine around each spoken piece, so they can be unloaded or swapped between turns.
What sessions need between decodes (the tokenizer) is kept here and survives an unload.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.config import Settings
from realtime.errors import ConfigError
from realtime.gpu_scheduler import GpuScheduler, Lease
from realtime.local_ollama.yield_gate import Hold, LlmYield, YieldGate
from realtime.models import STT, TTS, TURN, VAD, leased_tts
from realtime.stages.stt import SttPool, Transcript, WhisperTokens
from realtime.stages.tts import Tts
from realtime.stages.turn_model import TurnJudge
from realtime.stages.vad import VadBatcher

log = logging.getLogger("realtime.voice")


@dataclass
class Voice:
    """Voice input: the VAD and the end-of-turn model (leased for the server's lifetime), Whisper through
    the scheduler, the pool."""

    vad: VadBatcher
    stt: SttPool
    tokens: WhisperTokens
    scheduler: GpuScheduler
    vad_lease: Lease
    turn: TurnJudge | None = None  # None: no end-of-turn model (turned off, or its file is absent)
    turn_lease: Lease | None = None

    @classmethod
    async def load(cls, settings: Settings, scheduler: GpuScheduler) -> Voice | None:
        """Load the models; None when voice is off or, in auto mode, the model files are absent."""
        if settings.voice == "off":
            return None
        missing = [str(p) for p in (settings.vad_path,) if not p.is_file()]
        if settings.stt_model is None and not (Path(settings.stt_model_ref) / "model.bin").is_file():
            missing.append(settings.stt_model_ref)
        if missing:
            if settings.voice == "on":
                raise ConfigError(f"voice models missing: {', '.join(missing)} (run ./dev setup)")
            log.warning("voice input disabled: models missing (%s)", ", ".join(missing))
            return None
        vad_lease = await scheduler.acquire(VAD)
        turn_lease = None
        try:
            if scheduler.is_registered(TURN):
                turn_lease = await scheduler.acquire(TURN)
            async with scheduler.lease(STT) as whisper:  # loads it now, not on the first turn
                tokens = whisper.model.instance.tokens
            vad, stt = (
                VadBatcher(vad_lease.model.instance),
                SttPool(settings.stt_workers, nice=settings.stt_nice, idle=settings.stt_sched_idle),
            )
            await vad.start()
            await stt.start()
        except BaseException:
            for lease in (vad_lease, turn_lease):
                if lease is not None:
                    scheduler.release(lease)
            raise
        turn = (
            TurnJudge(turn_lease.model.instance, nice=settings.turn_model_nice, idle=settings.turn_model_sched_idle)
            if turn_lease is not None
            else None
        )
        log.info("end-of-turn model: %s", "on" if turn is not None else "off")
        return cls(
            vad=vad, stt=stt, tokens=tokens, scheduler=scheduler, vad_lease=vad_lease, turn=turn, turn_lease=turn_lease
        )

    async def transcribe(
        self, key: object, audio: np.ndarray, prefix: list[int], language: str | None, *, final: bool
    ) -> Transcript | None:
        """One decode on the fair pool, with Whisper leased for its duration (None: a newer partial won)."""
        async with self.scheduler.lease(STT) as whisper:
            engine = whisper.model.instance
            return await self.stt.run(
                key, lambda: engine.transcribe(audio, prefix=prefix, language=language), final=final
            )

    async def aclose(self) -> None:
        await self.stt.aclose()
        await self.vad.aclose()
        self.scheduler.release(self.vad_lease)
        if self.turn is not None and self.turn_lease is not None:
            await self.turn.aclose()
            self.scheduler.release(self.turn_lease)


@dataclass
class SpeechOut:
    """Voice output: the TTS engine, leased around each piece it speaks."""

    scheduler: GpuScheduler
    engine_name: str
    llm_yield: LlmYield | None = None  # pauses the embedded LLM while a first piece is synthesized on the CPU

    @classmethod
    async def load(cls, settings: Settings, scheduler: GpuScheduler) -> SpeechOut | None:
        if settings.tts_engine == "off":
            return None
        try:
            async with scheduler.lease(TTS) as handle:  # loads it now, and tells which engine did
                tts: Tts = handle.model.instance
                name, device = tts.engine.name, getattr(handle.model, "loaded_on", None)
        except Exception as exc:
            log.warning("voice output disabled: %s", exc)
            return None
        log.info("TTS engine: %s", name)
        return cls(scheduler=scheduler, engine_name=name, llm_yield=_llm_yield(settings, device))

    def lease(self) -> AbstractAsyncContextManager[Tts]:
        return leased_tts(self.scheduler)

    def first_piece(self) -> Hold | None:
        """For the synthesis of a reply's first piece: the embedded LLM waits (when it shares our CPU) until
        the hold ends."""
        return self.llm_yield.hold() if self.llm_yield is not None else None


def _llm_yield(settings: Settings, tts_device: str | None) -> LlmYield | None:
    """Only an embedded LLM with a pause file, and only when the TTS computes on the CPU it shares."""
    path = settings.embedded_llm_yield_file
    if path is None or not settings.embedded_llm_yield_ms or tts_device != "cpu":
        return None
    try:
        gate = YieldGate(path)
    except (OSError, ValueError) as exc:
        log.warning("the LLM will not pause for first pieces: %s", exc)
        return None
    return LlmYield(gate, settings.embedded_llm_yield_ms / 1000)
