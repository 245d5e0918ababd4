"""Embeddings through Ollama's `POST /api/embed`: any embedding model the Ollama server has pulled.

The embedded endpoint (realtime.local_ollama) serves `all-minilm` (all-MiniLM-L6-v2, 384 dimensions),
the same model Ollama's library has under that name, so the default works against a real Ollama after
`ollama pull all-minilm`. Vectors come back as float32 rows of unit length. Failures are the
UpstreamError family with messages safe for clients; a model whose vectors do not have the store's
dimension is EmbeddingDimensionMismatch (a configuration error: the store's column is vector(384)).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Protocol

import httpx
import numpy as np

from realtime.documents.errors import EmbeddingDimensionMismatch, EmbeddingModelNotFound
from realtime.errors import UpstreamError, UpstreamProtocolError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("realtime.documents.embeddings")

DEFAULT_EMBED_MODEL = "all-minilm"
EMBEDDING_DIMENSIONS = 384  # the store's vector column (db/migrations/0002_documents.sql)
BATCH_SIZE = 16  # texts per request: about a second of work for the embedded model on one core
MAX_RESPONSE_SIZE = 64 << 20


class Embeddings(Protocol):
    """What documents need: texts in, one unit-length row per text out."""

    model: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    async def aclose(self) -> None: ...


class OllamaEmbeddings:
    """Client of one Ollama (or Ollama-compatible) server's /api/embed."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient | None = None,
        model: str = DEFAULT_EMBED_MODEL,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        batch_size: int = BATCH_SIZE,
        dimensions: int | None = EMBEDDING_DIMENSIONS,
    ) -> None:
        """`http` None: a client of its own (a few connections: uploads are serialised by the model server
        anyway), closed by aclose()."""
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        self.model = model
        self.batch_size = batch_size
        self.dimensions = dimensions
        # the first request includes loading the model on the server
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimensions) float32 array; rows are L2-normalised."""
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            rows.append(await self._request(list(texts[start : start + self.batch_size])))
        if not rows:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        return np.concatenate(rows)

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def _request(self, batch: list[str]) -> np.ndarray:
        url = f"{self.base_url}/api/embed"
        try:
            resp = await self.http.post(url, json={"model": self.model, "input": batch}, timeout=self._timeout)
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable("The embedding service is not reachable.") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("The embedding service did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("The connection to the embedding service failed.") from exc
        if resp.status_code != 200:
            raise self._status_error(resp)
        if len(resp.content) > MAX_RESPONSE_SIZE:
            raise UpstreamProtocolError("The embedding service returned an oversized response.")
        try:
            vectors = np.asarray(json.loads(resp.content)["embeddings"], dtype=np.float32)
        except (ValueError, TypeError, KeyError) as exc:
            raise UpstreamProtocolError("The embedding service returned a response that could not be read.") from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(batch) or not np.isfinite(vectors).all():
            raise UpstreamProtocolError("The embedding service returned a response that could not be read.")
        if self.dimensions is not None and vectors.shape[1] != self.dimensions:
            log.error(
                "embedding model %r yields %d dimensions; the document store holds %d",
                self.model,
                vectors.shape[1],
                self.dimensions,
            )
            raise EmbeddingDimensionMismatch(
                f"The embedding model '{self.model}' yields {vectors.shape[1]}-dimensional vectors; "
                f"the document store holds {self.dimensions}."
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, np.float32(1e-12))

    def _status_error(self, resp: httpx.Response) -> UpstreamError:
        message = ""
        try:
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                message = " ".join(body["error"].split())[:300]
        except ValueError:
            pass
        log.warning("embedding upstream answered HTTP %s: %s", resp.status_code, message or resp.text[:200])
        if resp.status_code == 404 and "model" in message.lower():
            return EmbeddingModelNotFound(f"The embedding model '{self.model}' is not available.")
        if resp.status_code == 404:
            return UpstreamError("The model service has no embedding endpoint at the configured address.")
        if 400 <= resp.status_code < 500:
            return UpstreamRejected(
                f"The embedding service refused the request: {message}"
                if message
                else "The embedding service refused the request."
            )
        if resp.status_code == 503:
            return UpstreamUnavailable("The embedding service is busy or unavailable.")
        return UpstreamError("The embedding service failed.")
