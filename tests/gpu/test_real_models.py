"""Real models on the CPU through the scheduler: Silero VAD (onnxruntime) and Whisper base (CTranslate2)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.assets import VAD_ONNX, WHISPER_DIR, default_cache_dir
from realtime.gpu_scheduler import CpuBackend, FactoryModel, GpuScheduler, SchedulerConfig

ort = pytest.importorskip("onnxruntime")
MODELS = default_cache_dir() / "models"
VAD_PATH = MODELS / VAD_ONNX
WHISPER_PATH = MODELS / WHISPER_DIR


def silero(path: Path) -> Any:
    def build(device: str) -> Any:
        assert device == "cpu"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    return build


def speech_probability(session: Any) -> float:
    inputs = {
        "input": np.zeros((1, 576), np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16_000, dtype=np.int64),
    }
    return float(session.run(None, inputs)[0].reshape(-1)[0])


@pytest.mark.skipif(not VAD_PATH.is_file(), reason="Silero VAD not in the model cache (./dev setup)")
async def test_silero_vad_leased_on_cpu_with_measured_rss() -> None:
    """The VAD loads on "cpu" within a RAM-derived budget, runs inside its lease, reports the RSS it added,
    and is dropped on unload."""
    scheduler = GpuScheduler(CpuBackend(), SchedulerConfig(cpu_reserve_bytes=256 << 20))
    model = FactoryModel("vad", "vad", 40 << 20, silero(VAD_PATH), measure_rss=True)
    scheduler.register(model)
    async with scheduler.lease("vad") as handle:
        assert handle.device == "cpu"
        probability = await asyncio.to_thread(speech_probability, handle.model.instance)
        assert 0.0 <= probability < 0.5  # silence
        session = weakref.ref(handle.model.instance)
    status = scheduler.status()
    measured = status["models"]["vad"]["memory"]["measured_bytes"]
    assert measured is None or 0 < measured < 200 << 20
    assert status["devices"]["cpu"]["used_by_us_bytes"] == (measured or 40 << 20)
    assert (await scheduler.unload("vad")).complete
    gc.collect()
    assert session() is None
    with pytest.raises(RuntimeError, match="not loaded"):
        _ = model.instance
    await scheduler.aclose()


@pytest.mark.skipif(
    not (VAD_PATH.is_file() and (WHISPER_PATH / "model.bin").is_file()), reason="models not in the cache"
)
async def test_low_vram_swaps_real_models_on_cpu() -> None:
    """low_vram on the CPU with Whisper and the VAD both large: leasing one unloads the other."""
    faster_whisper = pytest.importorskip("faster_whisper")

    def whisper(device: str) -> Any:
        return faster_whisper.WhisperModel(str(WHISPER_PATH), device=device, compute_type="int8", cpu_threads=1)

    scheduler = GpuScheduler(CpuBackend(), SchedulerConfig(low_vram=True, cpu_reserve_bytes=256 << 20))
    scheduler.register(FactoryModel("whisper", "stt", 300 << 20, whisper), large=True)
    scheduler.register(FactoryModel("vad", "vad", 40 << 20, silero(VAD_PATH)), large=True)
    async with scheduler.lease("whisper") as handle:
        segments, _ = handle.model.instance.transcribe(np.zeros(16_000, np.float32), language="en")
        await asyncio.to_thread(list, segments)
        engine = weakref.ref(handle.model.instance)
    async with scheduler.lease("vad") as handle:
        assert await asyncio.to_thread(speech_probability, handle.model.instance) < 0.5
        models = scheduler.status()["models"]
        assert (models["whisper"]["state"], models["vad"]["state"]) == ("unloaded", "resident")
    gc.collect()
    assert engine() is None
    await scheduler.aclose()
