"""The Ollama adapter against a loopback stand-in speaking /api/ps and /api/generate keep_alive semantics,
and once against the real Ollama-compatible server in realtime/local_ollama."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from realtime.errors import ModelNotFound, UpstreamUnavailable
from realtime.gpu_scheduler import FixedCapacityBackend, GpuScheduler, ModelLoadFailed, OllamaModel, SchedulerConfig
from tests.support.server import free_port

GiB = 1 << 30
UNLOAD_LAG = 0.05  # Ollama lists a model for a moment after keep_alive 0 answers


class OllamaDouble:
    """Ollama's model lifecycle over HTTP on a real socket: load with an empty prompt, keep_alive decides
    how long it stays (0: unload, a moment later; negative: forever), /api/ps lists what is loaded."""

    def __init__(self, models: dict[str, tuple[int, int]]) -> None:
        self.models = models  # name -> (size, size_vram when on the GPU)
        self.loaded: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        app = Starlette(
            routes=[
                Route("/api/ps", self.ps, methods=["GET"]),
                Route("/api/tags", self.tags, methods=["GET"]),
                Route("/api/generate", self.generate, methods=["POST"]),
            ]
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ollama-double", daemon=True)

    def start(self) -> OllamaDouble:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the Ollama double did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def ps(self, request: Request) -> JSONResponse:
        return JSONResponse({"models": list(self.loaded.values())})

    async def tags(self, request: Request) -> JSONResponse:
        return JSONResponse({"models": [{"name": n, "model": n, "size": s} for n, (s, _) in self.models.items()]})

    async def generate(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        name = body["model"] if ":" in body["model"] else body["model"] + ":latest"  # as Ollama resolves names
        if name not in self.models:
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        keep_alive = body.get("keep_alive")
        if not body.get("prompt") and keep_alive == 0:
            asyncio.get_running_loop().call_later(UNLOAD_LAG, self.loaded.pop, name, None)
            return JSONResponse({"model": name, "response": "", "done": True, "done_reason": "unload"})
        size, size_vram = self.models[name]
        if (body.get("options") or {}).get("num_gpu") == 0:
            size_vram = 0
        expires = datetime.now(UTC) + timedelta(days=365 * 100 if keep_alive == -1 else 300)
        self.loaded[name] = {
            "name": name,
            "model": name,
            "size": size,
            "size_vram": size_vram,
            "expires_at": expires.isoformat(),
        }
        return JSONResponse({"model": name, "response": "", "done": True, "done_reason": "load"})


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaDouble]:
    double = OllamaDouble({"qwen3:8b": (6 * GiB, 5 * GiB), "llava:latest": (5 * GiB, 5 * GiB)}).start()
    yield double
    double.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_load_keeps_it_forever_and_reports_its_vram(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """load(): an empty-prompt generate with keep_alive -1; the size is size_vram from /api/ps on a GPU."""
    model = OllamaModel("llm", tag="qwen3:8b", base_url=ollama.url, estimate_bytes=7 * GiB, http=http)
    assert await model.load("cuda:0") == 5 * GiB
    assert ollama.requests[-1] == {"model": "qwen3:8b", "prompt": "", "keep_alive": -1, "stream": False}
    assert (await model.resident() or {})["size_vram"] == 5 * GiB
    await model.unload()
    assert await model.resident() is None


async def test_unload_returns_once_ollama_no_longer_lists_it(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """unload(): keep_alive 0, then /api/ps is polled until the model is gone (Ollama frees it a bit later)."""
    model = OllamaModel("llm", tag="qwen3:8b", base_url=ollama.url, estimate_bytes=7 * GiB, http=http)
    await model.load("cuda:0")
    started = time.perf_counter()
    await model.unload()
    assert time.perf_counter() - started >= UNLOAD_LAG * 0.9
    assert ollama.requests[-1]["keep_alive"] == 0 and "qwen3:8b" not in ollama.loaded


async def test_cpu_placement_asks_for_no_gpu_layers(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """On "cpu" the load sends options.num_gpu = 0 and reports the whole size; a bare name matches :latest."""
    model = OllamaModel("vision", tag="llava", kind="vision", base_url=ollama.url, estimate_bytes=6 * GiB, http=http)
    assert await model.load("cpu") == 5 * GiB
    assert ollama.requests[-1]["options"] == {"num_gpu": 0}
    await model.unload()


async def test_file_size_comes_from_the_library(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """file_size(): the size /api/tags lists for the model (a base for its estimate); None if absent."""
    assert await OllamaModel("llm", tag="qwen3:8b", base_url=ollama.url, estimate_bytes=1, http=http).file_size() == (
        6 * GiB
    )
    assert await OllamaModel("x", base_url=ollama.url, estimate_bytes=1, http=http).file_size() is None


async def test_errors_say_what_went_wrong(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """An unknown model is ModelNotFound; nothing listening is UpstreamUnavailable."""
    with pytest.raises(ModelNotFound):
        await OllamaModel("x", base_url=ollama.url, estimate_bytes=GiB, http=http).load("cuda:0")
    with pytest.raises(UpstreamUnavailable):
        await OllamaModel("x", base_url=f"http://127.0.0.1:{free_port()}", estimate_bytes=GiB, http=http).load("cpu")


async def test_scheduler_manages_ollama_models(ollama: OllamaDouble, http: httpx.AsyncClient) -> None:
    """Through the scheduler: a lease loads the model in Ollama, its measured VRAM replaces the estimate,
    a second large model swaps it out (low_vram), and unload() empties /api/ps."""
    backend = FixedCapacityBackend({"cuda:0": 24 * GiB})
    scheduler = GpuScheduler(backend, SchedulerConfig(low_vram=True, reserve_bytes=GiB))
    scheduler.register(OllamaModel("llm", tag="qwen3:8b", base_url=ollama.url, estimate_bytes=7 * GiB, http=http))
    scheduler.register(OllamaModel("vision", tag="llava", base_url=ollama.url, estimate_bytes=6 * GiB, http=http))
    scheduler.register(OllamaModel("missing", base_url=ollama.url, estimate_bytes=GiB, http=http))
    async with scheduler.lease("llm"):
        assert scheduler.status()["models"]["llm"]["memory"]["measured_bytes"] == 5 * GiB
        assert set(ollama.loaded) == {"qwen3:8b"}
    async with scheduler.lease("vision"):
        assert set(ollama.loaded) == {"llava:latest"}
    with pytest.raises(ModelLoadFailed) as err:
        await scheduler.acquire("missing")
    assert isinstance(err.value.__cause__, ModelNotFound)
    assert (await scheduler.unload(None)).complete and ollama.loaded == {}
    await scheduler.aclose()


@pytest.fixture(scope="module")
def real_ollama() -> Iterator[str]:
    from tests.support.local_ollama import start_local_ollama

    with start_local_ollama(preload=False, ctx=512) as server:
        yield server.url


async def test_real_ollama_compatible_server(real_ollama: str, http: httpx.AsyncClient) -> None:
    """Against realtime/local_ollama (llama.cpp, SmolLM2): load via keep_alive, listed in /api/ps with its
    size, unload with keep_alive 0, /api/ps empty."""
    assert (await http.get(real_ollama + "/api/ps")).json() == {"models": []}
    model = OllamaModel("llm", tag="smollm2:135m", base_url=real_ollama, estimate_bytes=200 << 20, http=http)
    measured = await model.load("cpu")
    listed = (await http.get(real_ollama + "/api/ps")).json()["models"]
    assert [m["name"] for m in listed] == ["smollm2:135m"] and measured == listed[0]["size"] > 50 << 20
    await model.unload()
    assert (await http.get(real_ollama + "/api/ps")).json() == {"models": []}
