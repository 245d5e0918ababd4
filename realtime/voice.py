"""The voice models every session shares: Silero VAD (batched), Whisper and its fair pool, and TTS."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from realtime.config import Settings
from realtime.errors import ConfigError
from realtime.stages.stt import SttConfig, SttPool, WhisperEngine
from realtime.stages.tts import Tts, load_engine
from realtime.stages.vad import SileroModel, VadBatcher

log = logging.getLogger("realtime.voice")


@dataclass
class Voice:
    vad: VadBatcher
    stt: SttPool
    engine: WhisperEngine

    @classmethod
    async def load(cls, settings: Settings) -> Voice | None:
        """Load the models (off the event loop); None when voice is off or, in auto mode, models are absent."""
        if settings.voice == "off":
            return None
        stt_ref = settings.stt_model_ref
        missing = [str(p) for p in (settings.vad_path,) if not p.is_file()]
        if settings.stt_model is None and not (Path(stt_ref) / "model.bin").is_file():
            missing.append(stt_ref)
        if missing:
            if settings.voice == "on":
                raise ConfigError(f"voice models missing: {', '.join(missing)} (run ./dev setup)")
            log.warning("voice input disabled: models missing (%s)", ", ".join(missing))
            return None
        config = SttConfig(
            model=stt_ref,
            device=settings.stt_device,
            compute_type=settings.stt_compute_type,
            workers=settings.stt_workers,
        )
        engine, model = await asyncio.gather(
            asyncio.to_thread(WhisperEngine, config), asyncio.to_thread(SileroModel, settings.vad_path)
        )
        vad, stt = VadBatcher(model), SttPool(settings.stt_workers)
        await vad.start()
        await stt.start()
        return cls(vad=vad, stt=stt, engine=engine)

    async def aclose(self) -> None:
        await self.stt.aclose()
        await self.vad.aclose()


async def load_tts(settings: Settings) -> Tts | None:
    """The configured engine; if the default Piper voice cannot load, espeak-ng; None when off or none loads."""
    if settings.tts_engine == "off":
        return None
    names = [settings.tts_engine] + (["espeak"] if settings.tts_engine == "piper" else [])
    for name in names:
        try:
            engine = await asyncio.to_thread(
                load_engine,
                name,
                piper_model=settings.piper_voice_path,
                threads=settings.tts_threads,
                device=settings.tts_device,
                chatterbox_checkpoint=settings.chatterbox_checkpoint,
                espeak=settings.espeak_binary,
            )
        except Exception as exc:  # a missing voice, binary or extra: try the next engine
            log.warning("TTS engine %s unavailable: %s", name, exc)
            continue
        log.info("TTS engine: %s (%d Hz)", engine.name, engine.sample_rate)
        return Tts(engine)
    return None
