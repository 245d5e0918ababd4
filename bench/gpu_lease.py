"""Cost of the model scheduler: `python -m bench.gpu_lease`.

Why: every VAD batch, transcription, reply and spoken sentence of every session takes a lease, so the
lease on a resident model must cost next to nothing (target: <= 50 us for acquire + release, with 1 and
with 100 leasers at once); and in low_vram mode a turn swaps models, so the swap time is what a session
waits for at worst.

1. Lease cost on a resident model: `async with scheduler.lease(name)` (acquire + release, the body not
   counted), p50/p99 over many, with 1 leaser and with 100 tasks holding leases at once.
2. Contention: 100 leasers alternating two simulated models that do not fit together (1 ms loads):
   how many loads (swaps) the batching needs, and the wait per lease.
3. low_vram swaps on the CPU with real models: Whisper base (CTranslate2 int8) and the Piper voice
   (onnxruntime) as the large models, the Silero VAD as a small one that stays: time from asking for
   one large model until it is leased (unloading the other included), and a plain load for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import markdown_table, percentile
from realtime.assets import PIPER_VOICE, VAD_ONNX, WHISPER_DIR, default_cache_dir
from realtime.gpu_scheduler import (
    CpuBackend,
    FactoryModel,
    FixedCapacityBackend,
    GpuScheduler,
    SchedulerConfig,
    SimulatedModel,
)

MiB = 1 << 20
ns = time.perf_counter_ns


def simulated(capacity: int = 1000 * MiB, **config: Any) -> tuple[GpuScheduler, FixedCapacityBackend]:
    backend = FixedCapacityBackend({"cuda:0": capacity})
    return GpuScheduler(backend, SchedulerConfig(reserve_bytes=0, **config)), backend


async def lease_cost_single(iterations: int) -> list[float]:
    scheduler, backend = simulated()
    scheduler.register(SimulatedModel("m", 100 * MiB, backend))
    await scheduler.preload("m")
    samples = []
    for _ in range(iterations):
        started = ns()
        async with scheduler.lease("m"):
            pass
        samples.append((ns() - started) / 1000)
    await scheduler.aclose()
    return samples


async def lease_cost_concurrent(leasers: int, per_leaser: int) -> list[float]:
    """Each task holds its lease across a yield, so `leasers` leases are held at once."""
    scheduler, backend = simulated()
    scheduler.register(SimulatedModel("m", 100 * MiB, backend))
    await scheduler.preload("m")
    samples: list[float] = []

    async def leaser() -> None:
        for _ in range(per_leaser):
            t0 = ns()
            async with scheduler.lease("m"):
                t1 = ns()
                await asyncio.sleep(0)
                t2 = ns()
            samples.append((t1 - t0 + ns() - t2) / 1000)

    await asyncio.gather(*(leaser() for _ in range(leasers)))
    await scheduler.aclose()
    return samples


async def contention(leasers: int, per_leaser: int) -> tuple[list[float], int, float]:
    """Leasers alternate two 600 MiB models on a 1000 MiB device: every switch is an unload and a load."""
    scheduler, backend = simulated(lease_timeout=60)
    models = [SimulatedModel(n, 600 * MiB, backend, load_delay=0.001, unload_delay=0.0005) for n in "ab"]
    for model in models:
        scheduler.register(model)
    waits: list[float] = []

    async def leaser(i: int) -> None:
        for j in range(per_leaser):
            t0 = ns()
            async with scheduler.lease("ab"[(i + j) % 2]):
                waits.append((ns() - t0) / 1000)
                await asyncio.sleep(0.0002)  # the inference

    started = time.perf_counter()
    await asyncio.gather(*(leaser(i) for i in range(leasers)))
    elapsed = time.perf_counter() - started
    await scheduler.aclose()
    return waits, sum(m.loads for m in models), elapsed


def _whisper(path: Path) -> Callable[[str], Any]:
    def build(device: str) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(str(path), device=device, compute_type="int8")

    return build


def _onnx(path: Path) -> Callable[[str], Any]:
    def build(device: str) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    return build


async def real_swaps(models_dir: Path, rounds: int) -> list[list[str]] | None:
    whisper, voice, vad = models_dir / WHISPER_DIR, models_dir / PIPER_VOICE, models_dir / VAD_ONNX
    if not ((whisper / "model.bin").is_file() and voice.is_file() and vad.is_file()):
        print(f"(real models missing under {models_dir}: run ./dev setup; low_vram swaps skipped)", file=sys.stderr)
        return None
    import faster_whisper  # noqa: F401  (imported once here, so no load below pays for the import)
    import onnxruntime  # noqa: F401

    scheduler = GpuScheduler(CpuBackend(), SchedulerConfig(low_vram=True, cpu_reserve_bytes=512 * MiB))
    scheduler.register(FactoryModel("whisper-base", "stt", 300 * MiB, _whisper(whisper)), large=True)
    scheduler.register(FactoryModel("piper-voice", "tts", 120 * MiB, _onnx(voice)), large=True)
    scheduler.register(FactoryModel("silero-vad", "vad", 40 * MiB, _onnx(vad)), large=False)
    await scheduler.preload("silero-vad")

    async def timed(name: str) -> float:
        started = time.perf_counter()
        async with scheduler.lease(name):
            return (time.perf_counter() - started) * 1000

    loads: dict[str, list[float]] = {"whisper-base": [], "piper-voice": []}
    swaps: dict[str, list[float]] = {"piper-voice → whisper-base": [], "whisper-base → piper-voice": []}
    await timed("whisper-base")  # warm the page cache; not counted
    for _ in range(rounds):
        await scheduler.unload("whisper-base")
        loads["whisper-base"].append(await timed("whisper-base"))
        swaps["whisper-base → piper-voice"].append(await timed("piper-voice"))
        await scheduler.unload("piper-voice")
        loads["piper-voice"].append(await timed("piper-voice"))
        swaps["piper-voice → whisper-base"].append(await timed("whisper-base"))
    vad_stayed = scheduler.status()["models"]["silero-vad"]["state"] == "resident"
    await scheduler.aclose()
    rows = [[f"load {name} (nothing to unload)", *_ms(v)] for name, v in loads.items()]
    rows += [[f"swap {name}", *_ms(v)] for name, v in swaps.items()]
    rows.append([f"silero-vad (small) stayed resident through the swaps: {vad_stayed}", "", "", ""])
    return rows


def _ms(values: list[float]) -> list[str]:
    return [f"{statistics.median(values):.0f}", f"{max(values):.0f}", str(len(values))]


def _us(samples: list[float]) -> list[str]:
    return [f"{percentile(samples, 50):.1f}", f"{percentile(samples, 99):.1f}", f"{len(samples):,}"]


async def main(args: argparse.Namespace) -> None:
    single = await lease_cost_single(args.iterations)
    many = await lease_cost_concurrent(100, max(args.iterations // 100, 10))
    print("## Lease on a resident model (acquire + release)\n")
    print(
        markdown_table(
            ["leasers", "p50 µs", "p99 µs", "leases"],
            [["1", *_us(single)], ["100 at once", *_us(many)]],
        )
    )
    waits, loads, elapsed = await contention(100, args.contended)
    print("\n## Contention: 100 leasers alternating two models that do not fit together (1 ms loads)\n")
    print(
        markdown_table(
            ["leases", "loads (swaps)", "leases per load", "wait p50 ms", "wait p99 ms", "leases/s"],
            [
                [
                    f"{len(waits):,}",
                    str(loads),
                    f"{len(waits) / loads:.0f}",
                    f"{percentile(waits, 50) / 1000:.2f}",
                    f"{percentile(waits, 99) / 1000:.2f}",
                    f"{len(waits) / elapsed:,.0f}",
                ]
            ],
        )
    )
    if args.real:
        rows = await real_swaps(args.models_dir, args.rounds)
        if rows:
            print("\n## low_vram swaps on the CPU, real models (time until the lease is granted)\n")
            print(markdown_table(["what", "p50 ms", "max ms", "runs"], rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_lease", description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000, help="leases timed on a resident model")
    parser.add_argument("--contended", type=int, default=50, help="leases per leaser under contention")
    parser.add_argument("--rounds", type=int, default=5, help="swap rounds with real models")
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the real-model swaps")
    parser.add_argument("--models-dir", type=Path, default=default_cache_dir() / "models")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
