"""The embedded endpoint's OpenAI-compatible chat API (/v1/chat/completions), as Ollama serves it.

Pipecat's Ollama service, and other OpenAI-API clients, talk to Ollama through this route. Real child
process on the real SmolLM2 model; replies are capped at a few tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.local_ollama.engine import Sampling
from realtime.local_ollama.openai_compat import OpenAIError, parse_chat_request
from tests.support.local_ollama import LocalOllamaProcess, default_model_path, start_local_ollama

HTTP_TIMEOUT = 60.0
MODEL = "smollm2:135m"
QUESTION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
LONG = [{"role": "user", "content": "Tell me a long story about the sea."}]  # many more than 6 tokens


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOllamaProcess]:
    if not default_model_path().is_file():
        pytest.skip("SmolLM2 GGUF not in the asset cache")
    with start_local_ollama() as proc:
        yield proc


def post(server: LocalOllamaProcess, **body: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT)


def events(resp: httpx.Response) -> list[str]:
    """The `data:` payloads of a server-sent-events body, in order."""
    return [line[len("data: ") :] for line in resp.text.split("\n\n") if line.startswith("data: ")]


def test_streamed_chunks_then_usage_then_done(server: LocalOllamaProcess) -> None:
    """stream=true: event-stream chunks with deltas, a finish_reason chunk, the usage chunk, then [DONE]."""
    options = {"stream": True, "max_tokens": 6, "temperature": 0, "stream_options": {"include_usage": True}}
    resp = post(server, model=MODEL, messages=LONG, **options)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    *payloads, last = events(resp)
    assert last == "[DONE]"
    chunks = [json.loads(p) for p in payloads]
    *deltas, finish, usage = chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert deltas and all(c["choices"][0]["finish_reason"] is None for c in deltas)
    assert "".join(c["choices"][0]["delta"]["content"] for c in deltas)
    assert finish["choices"][0]["finish_reason"] == "length" and finish["choices"][0]["delta"]["content"] == ""
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 6


def test_stream_without_include_usage_has_no_usage_chunk(server: LocalOllamaProcess) -> None:
    """Without stream_options.include_usage every chunk carries a choice."""
    resp = post(server, model=MODEL, messages=QUESTION, stream=True, max_tokens=3)
    *payloads, last = events(resp)
    assert last == "[DONE]" and all(json.loads(p)["choices"] for p in payloads)


def test_non_streamed_matches_streamed_at_temperature_zero(server: LocalOllamaProcess) -> None:
    """stream=false returns one chat.completion; greedy decoding gives the same text as the streamed reply."""
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
    whole = post(server, **body).json()
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] <= 8
    (choice,) = whole["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    streamed = [json.loads(p) for p in events(post(server, **body, stream=True))[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in streamed) == choice["message"]["content"]


def test_json_object_response_format(server: LocalOllamaProcess) -> None:
    """response_format json_object constrains the reply to JSON (Ollama's format "json")."""
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 24, "response_format": {"type": "json_object"}}
    text = post(server, **body).json()["choices"][0]["message"]["content"]
    assert text.lstrip().startswith(("{", "["))


def test_models_lists_the_served_model(server: LocalOllamaProcess) -> None:
    """GET /v1/models lists the one model under its served name."""
    body = httpx.get(server.url + "/v1/models", timeout=HTTP_TIMEOUT).json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [MODEL]


def test_unknown_model_is_404_in_openai_shape(server: LocalOllamaProcess) -> None:
    """An unknown model: 404 with {"error": {"message", "type": "not_found_error"}}."""
    resp = post(server, model="nope:1b", messages=QUESTION)
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found_error" and "nope:1b" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": QUESTION},
        {"model": MODEL},
        {"model": MODEL, "messages": QUESTION, "temperature": "hot"},
        {"model": MODEL, "messages": QUESTION, "max_tokens": 2.5},
        {"model": MODEL, "messages": QUESTION, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"model": MODEL, "messages": QUESTION, "response_format": {"type": "yaml"}},
    ],
)
def test_bad_requests_are_400_invalid_request_error(server: LocalOllamaProcess, body: dict[str, Any]) -> None:
    """Refused bodies get 400 and OpenAI's invalid_request_error, before any generation."""
    resp = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_invalid_json_is_400(server: LocalOllamaProcess) -> None:
    """A body that is not JSON is refused in the OpenAI error shape too."""
    resp = httpx.post(server.url + "/v1/chat/completions", content=b"{", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_official_openai_client_streams(server: LocalOllamaProcess) -> None:
    """The openai package (what Pipecat's Ollama service uses) streams a reply with usage. The model may end
    its reply before max_tokens (finish_reason "stop"); usage counts what it generated either way."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="ollama", timeout=HTTP_TIMEOUT)
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, stream=True, max_tokens=5, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert usage is not None and 1 <= usage.completion_tokens <= 5
    assert finish == ["length" if usage.completion_tokens == 5 else "stop"]


def test_parse_maps_openai_fields_to_ollama_options() -> None:
    """max_completion_tokens -> num_predict, stop string -> list, developer -> system, text parts joined."""
    req = parse_chat_request(
        {
            "model": MODEL,
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_completion_tokens": 12,
            "seed": 3,
            "stop": "\n",
            "temperature": 0,
        }
    )
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert req.sampling == Sampling(temperature=0.0, seed=3, num_predict=12, stop=("\n",))
    assert not req.stream and not req.include_usage


def test_parse_leaves_unset_options_at_server_defaults() -> None:
    """Options a body leaves out keep the engine's (Ollama's) defaults."""
    assert parse_chat_request({"model": MODEL, "messages": QUESTION}).sampling == Sampling()
    with pytest.raises(OpenAIError):
        parse_chat_request({"model": MODEL, "messages": QUESTION, "stop": [1]})
