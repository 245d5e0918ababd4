"""Models served by Ollama, managed through its HTTP API as any other ManagedModel.

Load: `POST /api/generate {"model", "prompt": "", "keep_alive": -1}` (an empty prompt only loads; -1 keeps
it loaded until we unload it); its size is then read from `GET /api/ps` (`size_vram` on a GPU, `size`
on the CPU). Unload: the same request with `keep_alive: 0`, then /api/ps is polled until the model is
gone, so its memory is free when `unload` returns. Requests that use the model (the LLM stage's
/api/chat) should send `keep_alive: -1` too, or Ollama unloads it by itself after its default 5 minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from realtime.errors import ModelNotFound, UpstreamError, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("realtime.gpu.ollama")


class OllamaModel:
    """One Ollama model (`tag`, e.g. "qwen3:8b") under the scheduler's name `name`.

    `http` may be shared with the rest of the server (it is not closed here unless created here). On the
    "cpu" device the load asks Ollama for no GPU layers (`options.num_gpu = 0`).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        estimate_bytes: int,
        tag: str | None = None,
        kind: str = "llm",
        http: httpx.AsyncClient | None = None,
        large: bool | None = None,
        device: str | None = None,
        request_timeout: float = 300.0,
        unload_poll_interval: float = 0.1,
        unload_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.tag = tag or name
        self.kind = kind
        self.estimate_bytes = estimate_bytes
        self.large = large
        self.device = device
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient()
        self._own_http = http is None
        self._timeout = request_timeout
        self._poll_interval = unload_poll_interval
        self._unload_timeout = unload_timeout

    async def load(self, device: str) -> int | None:
        body: dict[str, Any] = {"model": self.tag, "prompt": "", "keep_alive": -1, "stream": False}
        if device == "cpu":
            body["options"] = {"num_gpu": 0}
        await self._post_generate(body)
        entry = await self.resident()
        if entry is None:
            return None
        size, size_vram = int(entry.get("size") or 0), int(entry.get("size_vram") or 0)
        if device == "cpu":
            return size or None
        if size_vram < size:
            log.warning("%s: Ollama keeps %d of %d bytes off the GPU (slower)", self.tag, size - size_vram, size)
        return size_vram or None

    async def unload(self) -> None:
        await self._post_generate({"model": self.tag, "prompt": "", "keep_alive": 0, "stream": False})
        deadline = time.monotonic() + self._unload_timeout
        while await self.resident() is not None:
            if time.monotonic() > deadline:
                raise UpstreamTimeout(f"Ollama still lists {self.tag} {self._unload_timeout:g} s after unloading it")
            await asyncio.sleep(self._poll_interval)

    async def running(self) -> list[dict[str, Any]]:
        """GET /api/ps: the models Ollama has loaded (its own, other clients' too)."""
        reply = _json(await self._request("GET", "/api/ps"))
        models = (reply.get("models") or []) if isinstance(reply, dict) else None
        if not isinstance(models, list):
            raise UpstreamError("Ollama's /api/ps answered without a model list")
        return models

    async def resident(self) -> dict[str, Any] | None:
        """This model's /api/ps entry, or None when it is not loaded."""
        for entry in await self.running():
            if isinstance(entry, dict) and _same_model(self.tag, entry):
                return entry
        return None

    async def file_size(self) -> int | None:
        """The model's size on disk from GET /api/tags (None if Ollama does not have it): a starting point
        for `estimate_bytes`, which must also cover the KV cache (about 1.2x the file for short contexts)."""
        reply = _json(await self._request("GET", "/api/tags"))
        for entry in (reply.get("models") or []) if isinstance(reply, dict) else []:
            if isinstance(entry, dict) and _same_model(self.tag, entry) and isinstance(entry.get("size"), int):
                return int(entry["size"])
        return None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _post_generate(self, body: dict[str, Any]) -> None:
        reply = _json(await self._request("POST", "/api/generate", json=body))
        if isinstance(reply, dict) and reply.get("error"):
            raise UpstreamError(f"Ollama: {reply['error']}")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self.base_url + path, timeout=self._timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"Ollama at {self.base_url} did not answer {method} {path} in time") from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"Ollama at {self.base_url} is not reachable: {exc!r}") from exc
        if response.status_code == 404:
            raise ModelNotFound(f"Ollama has no model {self.tag!r}")
        if response.status_code >= 400:
            raise UpstreamError(
                f"Ollama answered {method} {path} with HTTP {response.status_code}: {response.text[:200]}"
            )
        return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError(f"Ollama answered {response.request.url.path} with something that is not JSON") from exc


def _same_model(tag: str, entry: dict[str, Any]) -> bool:
    names = {entry.get("name"), entry.get("model")}
    return tag in names or (":" not in tag and f"{tag}:latest" in names)
