"""Research turns end to end: the server (a child process) plans with the model, searches the loopback
SearxNG, reads the loopback pages and answers with [n] citations that point to the page it used."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from realtime.client import RealtimeClient
from tests.conftest import ServerFactory
from tests.research.conftest import research_env
from tests.research.web import FakeWeb
from tests.support.server import ServerProcess

QUESTION = "What is the melting point of zorbium?"


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_research_turn_cites_the_page_it_used(research_server: ServerProcess, web: FakeWeb) -> None:
    """response.create {research: true}: progress (planning, searching, reading, answering), the sources,
    then an answer whose [n] names the page holding the fact; excluded, PDF and slow pages are not sources."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        result = await client.ask(QUESTION, research=True)
    assert result.status == "completed", result.done
    progress = of_type(result.events, "response.research.progress")
    assert [p["stage"] for p in progress] == ["planning", "searching", "reading", "answering"]
    assert all(p["response_id"] == result.response_id for p in progress)
    assert progress[1]["queries"] == ["What is the melting point of zorbium"]
    [sources_event] = of_type(result.events, "response.research.sources")
    sources = {s["n"]: s for s in sources_event["sources"]}
    paths = [s["url"].removeprefix(web.url) for s in sources_event["sources"]]
    assert "/private/leak.html" not in paths and "/files/zorbium.pdf" not in paths and "/slow/page.html" not in paths
    assert "1234 degrees Celsius" in result.text and "9999" not in result.text
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", result.text)]
    assert cited and all(sources[n]["url"] == web.url + "/pages/zorbium.html" for n in cited)
    assert sources[cited[0]]["title"].startswith("Zorbium")
    # the order on the wire: sources before the first text
    kinds = [e["type"] for e in result.events]
    assert kinds.index("response.research.sources") < kinds.index("response.text.delta")


async def test_auto_mode_researches_fresh_facts_only(research_server: ServerProcess, web: FakeWeb) -> None:
    """By default (research "auto") a question about the latest news is researched; small talk is not."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        assert client.session["research"] == "auto"
        fresh = await client.ask("What is the latest news about the Port of Velmora harbour?")
        plain = await client.ask("Hello there")
    assert of_type(fresh.events, "response.research.sources")
    assert "4.2 million containers" in fresh.text
    [sources] = of_type(fresh.events, "response.research.sources")
    cited = int(re.findall(r"\[(\d+)\]", fresh.text)[0])
    assert sources["sources"][cited - 1]["url"] == web.url + "/pages/harbor.html"
    assert not of_type(plain.events, "response.research.progress")


async def test_research_off_in_the_session(research_server: ServerProcess) -> None:
    """session.update {research: "off"}: even a news question is answered without searching."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        await client.send({"type": "session.update", "session": {"research": "off"}})
        assert (await client.recv())["session"]["research"] == "off"
        result = await client.ask("What is the latest news?")
    assert not of_type(result.events, "response.research.progress")


async def test_no_results_answers_without_sources(research_server: ServerProcess) -> None:
    """A search that finds nothing still answers (saying so), with an empty sources list."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        result = await client.ask("nothing whatsoever", research="on")
    assert result.status == "completed"
    [sources] = of_type(result.events, "response.research.sources")
    assert sources["sources"] == [] and "[" not in result.text


async def test_failing_search_fails_the_response(research_server: ServerProcess) -> None:
    """The search backend failing: error search_failed for the response, then response.done failed."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        result = await client.ask("broken search", research=True)
    assert result.status == "failed"
    assert result.errors[0]["error"]["code"] == "search_failed"
    assert result.errors[0]["response_id"] == result.response_id
    assert result.done["response"]["status_details"]["error"]["code"] == "search_failed"


async def test_cancel_while_reading(research_server: ServerProcess, web: FakeWeb) -> None:
    """response.cancel while a slow page is being read: cancelled at once, the page's connection closed,
    and the next turn is served."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "slow"}]},
            }
        )
        await client.send({"type": "response.create", "response": {"research": True}})
        while True:
            event = await client.recv()
            if event["type"] == "response.research.progress" and event["stage"] == "reading":
                break
        for _ in range(100):
            if web.stats.slow_open:
                break
            await asyncio.sleep(0.02)
        assert web.stats.slow_open == 1
        sent = time.monotonic()
        await client.send({"type": "response.cancel"})
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        assert time.monotonic() - sent < 1.0
        assert not of_type(events, "response.text.delta")
        assert await asyncio.to_thread(web.wait_slow_closed)
        again = await client.ask("Hello")
        assert again.status == "completed"


async def test_research_unavailable_without_a_backend(fake_server: ServerProcess) -> None:
    """A server without a search backend: research "on" is refused with research_unavailable (no response
    starts); "auto" is accepted and simply never researches."""
    async with await RealtimeClient.connect(fake_server.ws_url, fake_server.token()) as client:
        await client.send({"type": "response.create", "event_id": "c1", "response": {"research": True}})
        error = await client.recv()
        assert error["type"] == "error" and error["error"]["code"] == "research_unavailable"
        assert error["error"]["param"] == "response.research" and error["error"]["event_id"] == "c1"
        await client.send({"type": "session.update", "session": {"research": "on"}})
        assert (await client.recv())["error"]["code"] == "research_unavailable"
        result = await client.ask("What is the latest news?", research="auto")
    assert result.status == "completed" and not of_type(result.events, "response.research.progress")


async def test_invalid_research_value(research_server: ServerProcess) -> None:
    """research must be a boolean, "on", "off", "auto" or null."""
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        await client.send({"type": "session.update", "session": {"research": "maybe"}})
        error = await client.recv()
    assert error["error"]["code"] == "invalid_event" and error["error"]["param"] == "session.research"


async def test_research_with_the_real_model(server_factory: ServerFactory, local_ollama: str, web: FakeWeb) -> None:
    """The real SmolLM2 plans (structured output) and answers from the loopback pages: the flow completes
    with sources (the answer's quality is not checked: a 135M model)."""
    server = server_factory(
        ollama_url=local_ollama, llm_model="smollm2:135m", max_output_tokens="48", voice="off", **research_env(web)
    )
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        async with asyncio.timeout(240):
            result = await client.ask(QUESTION, research=True, temperature=0.0)
    assert result.status in ("completed", "incomplete"), result.done
    [sources] = of_type(result.events, "response.research.sources")
    assert sources["sources"] and result.text
    stages = [e["stage"] for e in of_type(result.events, "response.research.progress")]
    assert stages == ["planning", "searching", "reading", "answering"]


async def test_spoken_research_turn_says_it_is_searching(research_server: ServerProcess, web: FakeWeb) -> None:
    """A spoken research turn first says that it searches (audio while the pages are read), then speaks the
    answer; the filler is audio only, never part of the answer text."""
    speak = {"type": "pcm16", "sample_rate": 24_000}
    async with await RealtimeClient.connect(research_server.ws_url, research_server.token()) as client:
        result = await client.ask(QUESTION, research=True, output_audio_format=speak)
    assert result.status == "completed", result.done
    spoken = [e["delta"] for e in of_type(result.events, "response.audio_transcript.delta")]
    assert spoken[0] == "Let me search the web for that."
    assert "1234" in " ".join(spoken[1:])
    assert of_type(result.events, "response.audio.delta")
    assert "search the web" not in result.text and "search the web" not in result.done["response"]["output_text"]
