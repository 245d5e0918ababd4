"""Device backends (fixed capacity, RAM, NVML through a stand-in module) and the package's import arrows."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from realtime.gpu.devices import visible_nvml_indices
from realtime.gpu_scheduler import (
    CombinedBackend,
    CpuBackend,
    DeviceOutOfMemory,
    FixedCapacityBackend,
    NvmlBackend,
    detect_backend,
)

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def test_fixed_capacity_backend_accounts_like_a_device() -> None:
    """Free is capacity minus allocations minus other processes; an allocation past it is an OOM."""
    backend = FixedCapacityBackend({"cuda:0": 100, "cuda:1": 50}, external={"cuda:1": 10})
    backend.allocate("cuda:0", 60)
    assert (backend.free_bytes("cuda:0"), backend.free_bytes("cuda:1")) == (40, 40)
    with pytest.raises(DeviceOutOfMemory):
        backend.allocate("cuda:0", 41)
    backend.release("cuda:0", 60)
    backend.set_external("cuda:0", 30)
    assert backend.free_bytes("cuda:0") == 70 and backend.peak["cuda:0"] == 60
    with pytest.raises(ValueError):
        backend.release("cuda:0", 1)


def test_cpu_backend_budget_is_configured_or_the_ram() -> None:
    """ "cpu" only; total is the configured budget or the physical RAM; free never exceeds it."""
    ram = CpuBackend()
    assert ram.devices() == ["cpu"] and ram.total_bytes("cpu") > 256 * MiB
    assert 0 < ram.free_bytes("cpu") <= ram.total_bytes("cpu")
    small = CpuBackend(64 * MiB)
    assert small.total_bytes("cpu") == 64 * MiB and small.free_bytes("cpu") <= 64 * MiB
    with pytest.raises(KeyError):
        small.free_bytes("cuda:0")


def test_combined_backend_dispatches_by_device() -> None:
    """Several backends as one; a device listed twice is refused."""
    gpus = FixedCapacityBackend({"cuda:0": 100})
    combined = CombinedBackend([gpus, CpuBackend(50 * MiB)])
    assert combined.devices() == ["cuda:0", "cpu"]
    assert combined.total_bytes("cuda:0") == 100 and combined.total_bytes("cpu") == 50 * MiB
    with pytest.raises(ValueError):
        CombinedBackend([gpus, FixedCapacityBackend({"cuda:0": 1})])


def test_cuda_visible_devices_maps_to_nvml_indices() -> None:
    """CUDA_VISIBLE_DEVICES picks and orders the GPUs; an entry CUDA cannot parse ends the list."""
    assert visible_nvml_indices(None, 3) == [0, 1, 2]
    assert visible_nvml_indices("2,0", 3) == [2, 0]
    assert visible_nvml_indices("1,GPU-abc,2", 3) == [1]
    assert visible_nvml_indices("", 3) == [] and visible_nvml_indices("5", 3) == []


class _FakeNvml(types.ModuleType):
    """Stands in for pynvml (not installed here): two GPUs of 24 GiB with some memory used."""

    class Info:
        def __init__(self, total: int, free: int) -> None:
            self.total, self.free, self.used = total, free, total - free

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.free = {0: 20 << 30, 1: 10 << 30}

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _FakeNvml.Info:
        return self.Info(24 << 30, self.free[handle])


def test_nvml_backend_reads_whole_device_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pynvml importable, the GPUs are read through NVML (free memory of the whole device), in
    CUDA_VISIBLE_DEVICES order, and "cpu" is added for CPU-only models."""
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    backend = detect_backend(environ={"CUDA_VISIBLE_DEVICES": "1,0"})
    assert list(backend.devices()) == ["cuda:0", "cuda:1", "cpu"]
    assert backend.free_bytes("cuda:0") == 10 << 30 and backend.free_bytes("cuda:1") == 20 << 30
    assert backend.total_bytes("cuda:1") == 24 << 30
    fake.free[1] = 1 << 30  # another process (Ollama) took memory: the next read sees it
    assert backend.free_bytes("cuda:0") == 1 << 30
    NvmlBackend().close()


def test_without_gpus_everything_is_cpu() -> None:
    """No NVML and no torch here (or prefer="cpu"): one "cpu" device."""
    assert list(detect_backend(prefer="cpu").devices()) == ["cpu"]
    if "pynvml" not in sys.modules and "torch" not in sys.modules:
        assert list(detect_backend(environ={}).devices()) == ["cpu"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_scheduler_imports_no_stage_session_or_server() -> None:
    """Dependencies point one way: the scheduler may import errors, config and auth, nothing else of ours."""
    files = [ROOT / "realtime" / "gpu_scheduler.py", *sorted((ROOT / "realtime" / "gpu").glob("*.py"))]
    allowed = ("realtime.errors", "realtime.config", "realtime.auth", "realtime.gpu")
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path)
        if name.startswith("realtime") and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert not bad, bad
    ledger = _imports(ROOT / "realtime" / "gpu" / "ledger.py")
    assert not {"asyncio", "time", "httpx", "starlette"} & ledger, "the ledger is sans-I/O"
