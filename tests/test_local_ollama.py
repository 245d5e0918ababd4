"""The Ollama-compatible endpoint, as a real child process on the real SmolLM2 model.

The official `ollama` client and raw httpx talk to it as they would to Ollama. Replies are capped
at a few dozen tokens so the module runs in seconds on two CPU cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from realtime.local_ollama.engine import StopFilter, _fit
from tests.support.local_ollama import LocalOllamaProcess, default_model_path, start_local_ollama

HTTP_TIMEOUT = 60.0  # generous: other work may share the two cores
MODEL = "smollm2:135m"
QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]

needs_model = pytest.mark.skipif(not default_model_path().is_file(), reason="SmolLM2 GGUF not in the asset cache")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOllamaProcess]:
    if not default_model_path().is_file():
        pytest.skip("SmolLM2 GGUF not in the asset cache")
    with start_local_ollama() as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: LocalOllamaProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as c:
        yield c


def options(**extra: Any) -> dict[str, Any]:
    return {"num_predict": 24, "temperature": 0.8, "seed": 7, **extra}


# ---- discovery ----


def test_root_and_version(server: LocalOllamaProcess) -> None:
    """GET / says Ollama is running (text/plain) and /api/version returns a version string."""
    root = httpx.get(server.url + "/", timeout=HTTP_TIMEOUT)
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert root.headers["content-type"].startswith("text/plain")
    assert isinstance(httpx.get(server.url + "/api/version", timeout=HTTP_TIMEOUT).json()["version"], str)


def test_list_shows_the_model(client: ollama.Client) -> None:
    """list() (/api/tags) shows the configured name with GGUF details."""
    (model,) = client.list().models
    assert model.model == MODEL
    assert model.details is not None and model.details.format == "gguf"
    assert model.details.family == "llama" and model.details.quantization_level == "Q4_1"
    assert model.size and model.size > 50_000_000 and model.digest and len(model.digest) == 64


def test_show_reports_capabilities(client: ollama.Client) -> None:
    """show() has the template, model_info and capabilities ["completion"] (no tools, vision, thinking)."""
    info = client.show(MODEL)
    assert info.capabilities == ["completion"]
    assert info.modelinfo is not None and info.modelinfo["general.architecture"] == "llama"
    assert "<|im_start|>" in (info.template or "")
    assert info.details is not None and info.details.parameter_size == "134.52M"


def test_show_accepts_legacy_name_field(server: LocalOllamaProcess) -> None:
    """/api/show accepts the legacy `name` field instead of `model`."""
    resp = httpx.post(server.url + "/api/show", timeout=HTTP_TIMEOUT, json={"name": MODEL})
    assert resp.status_code == 200 and resp.json()["capabilities"] == ["completion"]


# ---- chat and generate through the official client ----


def test_chat_non_streaming(client: ollama.Client) -> None:
    """chat(stream=False) returns one message with real token counts and durations."""
    resp = client.chat(MODEL, messages=QUESTION, options=options())
    assert resp.done and resp.done_reason in ("stop", "length")
    assert resp.message.role == "assistant" and resp.message.content
    assert resp.prompt_eval_count and resp.prompt_eval_count > 10
    assert resp.eval_count and 0 < resp.eval_count <= 24
    assert resp.total_duration and resp.eval_duration and resp.prompt_eval_duration
    assert resp.total_duration >= resp.eval_duration


def test_chat_streaming(client: ollama.Client) -> None:
    """chat(stream=True) yields pieces then one done chunk with empty content and the counts."""
    chunks = list(client.chat(MODEL, messages=QUESTION, options=options(), stream=True))
    *pieces, last = chunks
    assert pieces and all(not c.done for c in pieces)
    assert last.done and last.message.content == "" and last.eval_count
    assert "".join(c.message.content or "" for c in pieces)


def test_generate(client: ollama.Client) -> None:
    """generate() answers a prompt (templated with a system message) in `response`."""
    resp = client.generate(MODEL, prompt="Why is the sky blue?", system="Answer in one sentence.", options=options())
    assert resp.done and resp.response and resp.eval_count


async def test_async_client_chat_and_generate(server: LocalOllamaProcess) -> None:
    """AsyncClient: streamed chat and generate work too."""
    async with ollama.AsyncClient(host=server.url) as client:
        text = ""
        async for chunk in await client.chat(MODEL, messages=QUESTION, options=options(), stream=True):
            text += chunk.message.content or ""
        resp = await client.generate(MODEL, prompt="Say hi.", options=options(num_predict=8))
    assert text
    assert resp.done and resp.response


# ---- residency ----


def test_ps_unload_and_reload(client: ollama.Client) -> None:
    """ps() shows the loaded model; keep_alive=0 unloads it (at once, or after a reply); chat reloads it."""
    client.chat(MODEL, messages=QUESTION, options=options(num_predict=4))
    (resident,) = client.ps().models
    assert resident.model == MODEL and resident.size_vram == 0 and resident.expires_at is not None
    assert client.chat(MODEL, messages=[], keep_alive=0).done_reason == "unload"
    assert client.ps().models == []
    resp = client.chat(MODEL, messages=QUESTION, options=options(num_predict=4))
    assert resp.message.content and client.ps().models
    client.chat(MODEL, messages=QUESTION, options=options(num_predict=4), keep_alive=0)
    deadline = time.monotonic() + 5
    while client.ps().models and time.monotonic() < deadline:  # keep_alive=0 unloads right after the reply
        time.sleep(0.05)
    assert client.ps().models == []


def test_load_request_and_keep_alive_expiry(client: ollama.Client) -> None:
    """An empty chat loads the model ("load"); a short keep_alive unloads it when it runs out."""
    assert client.chat(MODEL, messages=[], keep_alive="1s").done_reason == "load"
    assert client.ps().models
    deadline = time.monotonic() + 5
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.ps().models == []
    assert client.generate(MODEL, prompt="", keep_alive="5m").done_reason == "load"
    assert client.ps().models


# ---- refusals ----


def test_unknown_model_is_404(client: ollama.Client) -> None:
    """An unknown model (and a tagless name meaning :latest) is a 404 "model '...' not found"."""
    for name in ("nope:1b", "smollm2"):
        with pytest.raises(ollama.ResponseError) as err:
            client.chat(name, messages=QUESTION)
        assert err.value.status_code == 404 and err.value.error == f"model '{name}' not found"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"think": True}, f'"{MODEL}" does not support thinking'),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
            "does not support tools",
        ),
        (
            {"messages": [{"role": "user", "content": "What is this?", "images": ["aGVsbG8="]}]},
            "does not support vision",
        ),
        ({"format": "yaml"}, "invalid format"),
        ({"keep_alive": "soon"}, "invalid duration"),
        ({"options": {"temperature": "hot"}}, 'option "temperature" must be a number'),
    ],
)
def test_unsupported_requests_are_400(server: LocalOllamaProcess, extra: dict[str, Any], message: str) -> None:
    """Thinking, tools, images, bad formats, durations and options are refused with 400 and a message."""
    body = {"model": MODEL, "messages": QUESTION, "stream": False, **extra}
    resp = httpx.post(server.url + "/api/chat", timeout=HTTP_TIMEOUT, json=body)
    assert resp.status_code == 400 and message in resp.json()["error"]


def test_client_raises_400_for_thinking(client: ollama.Client) -> None:
    """The official client surfaces the thinking refusal as ResponseError 400, streaming or not."""
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(MODEL, messages=QUESTION, think=True)
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(MODEL, messages=QUESTION, think=True, stream=True))
    assert err.value.status_code == 400


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'{"messages": []}'])
def test_malformed_bodies_are_400_json(server: LocalOllamaProcess, body: bytes) -> None:
    """Broken JSON, no body, a non-object, or no model: 400 with a JSON error, never a 500."""
    resp = httpx.post(
        server.url + "/api/chat", timeout=HTTP_TIMEOUT, content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json()["error"]


# ---- sampling options ----


def test_num_predict_caps_the_reply(client: ollama.Client) -> None:
    """num_predict caps eval_count exactly and the reply ends with done_reason "length"."""
    resp = client.generate(MODEL, prompt="Write a long story about a dragon.", options=options(num_predict=5))
    assert resp.eval_count == 5 and resp.done_reason == "length"


def test_stop_strings_cut_the_reply(client: ollama.Client) -> None:
    """A stop string ends the reply just before it (greedy decoding makes the two runs comparable)."""
    greedy = {"temperature": 0, "num_predict": 32}
    full = client.chat(MODEL, messages=QUESTION, options=greedy).message.content or ""
    words = full.split()
    assert len(words) > 4, full
    stop = words[3]
    cut = client.chat(MODEL, messages=QUESTION, options={**greedy, "stop": [stop]})
    assert cut.message.content == full[: full.index(stop)] and cut.done_reason == "stop"


def test_seed_reproduces_at_temperature(client: ollama.Client) -> None:
    """The same seed at temperature 0.8 gives the same reply; other seeds vary it."""

    def reply(seed: int) -> str:
        return client.chat(MODEL, messages=QUESTION, options=options(seed=seed, num_predict=20)).message.content or ""

    first = reply(11)
    assert reply(11) == first
    assert any(reply(seed) != first for seed in (12, 13, 14))


# ---- the wire format, as our own client sees it ----


@pytest.mark.parametrize("sampling", [options(), {"temperature": 0, "num_predict": 24}])
def test_raw_stream_matches_non_streamed_reply(server: LocalOllamaProcess, sampling: dict[str, Any]) -> None:
    """Each streamed line is one JSON object; the pieces add up to the non-streamed reply.

    llama.cpp's numbers depend on how the prompt is split into batches, which depends on what the KV
    cache already holds; the same unrelated request before each call gives both the same start.
    """
    body = {"model": MODEL, "messages": QUESTION, "options": sampling}
    reset = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"num_predict": 1},
    }
    httpx.post(server.url + "/api/chat", timeout=HTTP_TIMEOUT, json=reset)
    whole = httpx.post(server.url + "/api/chat", timeout=HTTP_TIMEOUT, json={**body, "stream": False})
    httpx.post(server.url + "/api/chat", timeout=HTTP_TIMEOUT, json=reset)
    assert whole.headers["content-type"].startswith("application/json")
    expected = whole.json()["message"]["content"]
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=HTTP_TIMEOUT) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert all(isinstance(obj, dict) and obj["model"] == MODEL for obj in lines)
    assert all(obj["created_at"].endswith("Z") for obj in lines)
    assert [obj["done"] for obj in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(obj["message"]["content"] for obj in lines) == expected


async def test_disconnect_stops_generation(server: LocalOllamaProcess) -> None:
    """A client leaving mid-stream stops its generation: the next request is served at once."""
    endless = {"type": "array", "items": {"type": "integer"}, "minItems": 400}  # no early end of text possible
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count."}],
        "format": endless,
        "options": {"num_predict": 4000},
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        async with http.stream("POST", "/api/chat", json=body) as resp:
            lines = resp.aiter_lines()
            for _ in range(3):
                assert json.loads(await anext(lines))["done"] is False
        after = await http.post(
            "/api/chat", json={"model": MODEL, "messages": QUESTION, "stream": False, "options": options(num_predict=8)}
        )
    stats = after.json()
    assert after.status_code == 200 and stats["done"]
    # load_duration counts the wait behind earlier requests; the abandoned one had 800+ tokens to go.
    token_time = stats["eval_duration"] / stats["eval_count"]
    assert stats["load_duration"] < max(1e9, 20 * token_time), f"waited {stats['load_duration'] / 1e9:.1f} s"


async def test_concurrent_requests_are_serialized(server: LocalOllamaProcess) -> None:
    """Two requests at once both complete, each with the reply it gets alone."""
    questions = [QUESTION, [{"role": "user", "content": "What is two plus two?"}]]
    async with ollama.AsyncClient(host=server.url) as client:
        alone = [(await client.chat(MODEL, messages=q, options=options())).message.content for q in questions]
        together = await asyncio.gather(*(client.chat(MODEL, messages=q, options=options()) for q in questions))
    assert [r.message.content for r in together] == alone


# ---- context overflow (own small-context server) ----


@needs_model
def test_long_conversation_is_truncated_to_fit() -> None:
    """A conversation longer than the context is cut from the oldest turns, like Ollama, and still answers."""
    filler = "This is an old message about nothing in particular. " * 8
    history = [{"role": "system", "content": "You are terse."}]
    for i in range(12):
        history += [{"role": "user", "content": f"{i}: {filler}"}, {"role": "assistant", "content": "Noted."}]
    history += QUESTION
    with start_local_ollama(ctx=512, preload=False) as small:
        resp = httpx.post(
            small.url + "/api/chat",
            json={"model": MODEL, "messages": history, "stream": False, "options": options(num_predict=16)},
            timeout=60,
        )
    assert resp.status_code == 200, resp.text
    stats = resp.json()
    assert stats["message"]["content"] and stats["prompt_eval_count"] <= 512 - 16


@needs_model
def test_sigterm_exits_cleanly() -> None:
    """The CLI announces its address once listening and exits 0 on SIGTERM."""
    proc = start_local_ollama(preload=False)
    try:
        assert f"local-ollama listening on {proc.url}" in proc.log_text()
    finally:
        assert proc.stop() == 0


# ---- test mode (scripted tool calls) ----

SCRIPTED_CALL = {"function": {"name": "run_command", "arguments": {"command": "echo hi"}}}


def test_test_mode_is_off_by_default(server: LocalOllamaProcess) -> None:
    """Without --test-mode there is no script route and `tools` are refused as before."""
    resp = httpx.post(server.url + "/_test/tool_calls", timeout=HTTP_TIMEOUT, json={"tool_calls": [SCRIPTED_CALL]})
    assert resp.status_code == 404


@needs_model
def test_test_mode_scripts_tool_calls_and_the_model_answers_the_rest() -> None:
    """--test-mode: each POSTed reply answers one request that carries `tools`, as Ollama's
    `message.tool_calls` (streamed and not) through the official client; a request with the tool
    result and nothing scripted is answered by the real model, which reads the call as text."""
    with start_local_ollama(test_mode=True) as proc, ollama.Client(host=proc.url) as client:
        assert "tools" in (client.show(MODEL).capabilities or [])
        bad = httpx.post(proc.url + "/_test/tool_calls", timeout=HTTP_TIMEOUT, json={"tool_calls": [{"x": 1}]})
        assert bad.status_code == 400 and "function" in bad.json()["error"]
        for _ in range(2):
            resp = httpx.post(
                proc.url + "/_test/tool_calls", timeout=HTTP_TIMEOUT, json={"tool_calls": [SCRIPTED_CALL]}
            )
            assert resp.status_code == 200
        assert resp.json() == {"queued": 2}
        tools = [{"type": "function", "function": {"name": "run_command", "parameters": {"type": "object"}}}]
        answer = client.chat(MODEL, messages=QUESTION, tools=tools)
        assert answer.message.tool_calls and answer.message.tool_calls[0].function.name == "run_command"
        assert answer.message.tool_calls[0].function.arguments == {"command": "echo hi"}
        chunks = list(client.chat(MODEL, messages=QUESTION, tools=tools, stream=True))
        streamed = [call for chunk in chunks for call in chunk.message.tool_calls or ()]
        assert [c.function.name for c in streamed] == ["run_command"] and chunks[-1].done
        assert httpx.get(proc.url + "/_test/tool_calls", timeout=HTTP_TIMEOUT).json() == {"queued": 0}
        history = [
            *QUESTION,
            {"role": "assistant", "content": "", "tool_calls": [SCRIPTED_CALL]},
            {"role": "tool", "tool_name": "run_command", "content": "hi"},
        ]
        reply = client.chat(MODEL, messages=history, tools=tools, options=options())
        assert reply.message.content and not reply.message.tool_calls and reply.eval_count


# ---- pure helpers ----


def test_fit_keeps_system_messages_and_the_newest_turns() -> None:
    """_fit drops the oldest non-system messages until the rendered prompt fits the budget."""
    messages = [{"role": "system", "content": "S"}] + [{"role": "user", "content": str(i)} for i in range(10)]

    def render(ms: Any) -> Any:  # ten "tokens" per message, each the message's content
        return [m["content"] for m in ms for _ in range(10)]

    kept = _fit(messages, render, budget=40)
    assert kept == ["S"] * 10 + ["7"] * 10 + ["8"] * 10 + ["9"] * 10


def test_stop_filter_holds_back_a_possible_stop_prefix() -> None:
    """Text that might begin a stop string is held back until it is decided."""
    f = StopFilter(["STOP"])
    assert f.feed("abc ST") == ("abc ", False)
    assert f.feed("ay") == ("STay", False)
    assert f.feed(" xSTO") == (" x", False)
    assert f.feed("P more") == ("", True)
    assert StopFilter(["x"]).flush() == ""
