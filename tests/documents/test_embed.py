"""The embedding model and Ollama's /api/embed on the embedded endpoint, and the client that calls it.

The model's outputs are checked against what sentence-transformers publishes for all-MiniLM-L6-v2, so
the numpy encoder is the model, not something like it."""

from __future__ import annotations

import httpx
import numpy as np
import ollama
import pytest

from realtime.documents import EmbeddingDimensionMismatch, EmbeddingModelNotFound, OllamaEmbeddings
from realtime.errors import UpstreamUnavailable
from realtime.local_ollama.embed import MiniLM, default_model_dir
from tests.support.server import free_port

WEATHER = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM.load(default_model_dir())


def test_model_reproduces_published_similarities(model: MiniLM) -> None:
    """sentence-transformers' quickstart similarities (0.6660, 0.1046, 0.1411) and the model card's first
    components of "This is an example sentence", to 4 decimals."""
    vectors, tokens = model.embed(WEATHER)
    similarity = vectors @ vectors.T
    assert np.allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert [round(float(similarity[i, j]), 4) for i, j in ((0, 1), (0, 2), (1, 2))] == [0.6660, 0.1046, 0.1411]
    example = model.embed(["This is an example sentence"])[0][0]
    expected = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374, 0.0027, 0.0394, -0.0071]
    assert [round(float(x), 4) for x in example[:8]] == expected
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384) and tokens > 3 * 3


def test_batching_and_truncation_do_not_change_vectors(model: MiniLM) -> None:
    """A text embedded alone or padded in a batch gives the same vector; over 256 tokens is truncated,
    or refused when truncation is off."""
    alone = model.embed(["short"])[0][0]
    batched = model.embed(["short", "a much longer sentence that makes the batch pad the short one"])[0][0]
    assert np.abs(alone - batched).max() < 1e-5
    long_text = "word " * 400
    assert model.embed([long_text])[1] == 256
    with pytest.raises(ValueError, match="context length"):
        model.embed([long_text], truncate=False)


async def test_api_embed_answers_like_ollama(embed_url: str, model: MiniLM) -> None:
    """POST /api/embed: one row per input, unit length, the engine's numbers, Ollama's fields."""
    async with httpx.AsyncClient(base_url=embed_url) as http:
        resp = await http.post("/api/embed", json={"model": "all-minilm", "input": WEATHER})
        single = await http.post("/api/embed", json={"model": "all-minilm:latest", "input": WEATHER[0]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "all-minilm" and body["prompt_eval_count"] > 0
    assert isinstance(body["total_duration"], int) and isinstance(body["load_duration"], int)
    vectors = np.asarray(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert np.abs(vectors - model.embed(WEATHER)[0]).max() < 1e-5
    assert np.asarray(single.json()["embeddings"]).shape == (1, 384)


def test_official_client_embeds(embed_url: str) -> None:
    """The `ollama` package's embed() works against the embedded endpoint."""
    with ollama.Client(host=embed_url) as client:
        response = client.embed(model="all-minilm", input=["hello", "world"])
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 384


async def test_api_embed_options_and_refusals(embed_url: str) -> None:
    """dimensions shortens and renormalises; unknown model 404; the chat model and bad input 400."""
    async with httpx.AsyncClient(base_url=embed_url) as http:
        short = await http.post("/api/embed", json={"model": "all-minilm", "input": "hi", "dimensions": 64})
        vector = np.asarray(short.json()["embeddings"][0])
        assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        empty = await http.post("/api/embed", json={"model": "all-minilm", "input": []})
        assert empty.status_code == 200 and empty.json()["embeddings"] == []
        cases = [
            ({"model": "nomic-embed-text", "input": "x"}, 404, "not found"),
            ({"model": "smollm2:135m", "input": "x"}, 400, "does not support embeddings"),
            ({"model": "all-minilm", "input": 5}, 400, "input"),
            ({"model": "all-minilm", "input": "word " * 400, "truncate": False}, 400, "context length"),
            ({"model": "all-minilm", "input": "x", "dimensions": 0}, 400, "dimensions"),
            ({"input": "x"}, 400, "model is required"),
        ]
        for body, status, message in cases:
            resp = await http.post("/api/embed", json=body)
            assert resp.status_code == status, (body, resp.text)
            assert message in resp.json()["error"]


async def test_client_embeds_in_batches(embed_url: str) -> None:
    """OllamaEmbeddings: many texts in several requests, one unit row per text, in order."""
    client = OllamaEmbeddings(embed_url, batch_size=4)
    try:
        texts = [f"sentence number {i} about pumps" for i in range(10)] + WEATHER
        vectors = await client.embed(texts)
        assert vectors.shape == (13, 384)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert float(vectors[10] @ vectors[11]) == pytest.approx(0.666, abs=1e-3)
    finally:
        await client.aclose()


async def test_client_errors_are_typed(embed_url: str) -> None:
    """Unknown model, a model of another dimension, and no server: each its own error with a safe message."""
    for client, error in (
        (OllamaEmbeddings(embed_url, model="nomic-embed-text"), EmbeddingModelNotFound),
        (OllamaEmbeddings(embed_url, dimensions=768), EmbeddingDimensionMismatch),
        (OllamaEmbeddings(f"http://127.0.0.1:{free_port()}", connect_timeout=1.0), UpstreamUnavailable),
    ):
        try:
            with pytest.raises(error) as raised:
                await client.embed(["hello"])
            assert "http" not in raised.value.message
        finally:
            await client.aclose()
