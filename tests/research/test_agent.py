"""The researcher in-process: plan with the model, search, read the best pages, cancel cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from realtime.research import (
    FetchLimits,
    PageFetcher,
    Progress,
    Researcher,
    ResearchLimits,
    SearchFailed,
    SearxngSearch,
)
from realtime.research.plan import plan_schema
from realtime.stages.llm import ChatChunk, ChatDelta, ChatDone, ChatRequest
from tests.research.web import FakeWeb

LOOPBACK = FetchLimits(max_page_size=256 << 10, page_timeout=3.0, allow_private=True)


@dataclass
class Planner:
    """A chat backend that answers every request with `reply` (after `delay` seconds), and keeps the requests."""

    reply: str
    delay: float = 0.0
    requests: list[ChatRequest] = field(default_factory=list)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        yield ChatDelta(content=self.reply)
        yield ChatDone("stop", 1, 1)


@pytest.fixture
async def researcher(web: FakeWeb) -> AsyncIterator[Researcher]:
    http = httpx.AsyncClient()
    researcher = Researcher(
        SearxngSearch(web.url, http), PageFetcher(http, LOOPBACK), ResearchLimits(results_per_query=8), http=http
    )
    yield researcher
    await researcher.aclose()


async def test_plan_search_read(web: FakeWeb, researcher: Researcher) -> None:
    """The model's queries are searched; the best readable pages become sources [1]..[4] in rank order
    (the robots-excluded, PDF and duplicate results skipped), with progress at each stage."""
    planner = Planner('{"queries": ["zorbium melting point", "zorbium"]}')
    steps: list[Progress] = []

    async def progress(step: Progress) -> None:
        steps.append(step)

    findings = await researcher.run("How hot must zorbium get to melt?", llm=planner, model="m", progress=progress)
    assert planner.requests[0].format == plan_schema(3) and planner.requests[0].temperature == 0.0
    assert findings.queries == ("zorbium melting point", "zorbium")
    paths = [s.url.removeprefix(web.url) for s in findings.sources]
    assert paths == ["/pages/harbor.html", "/pages/huge.html", "/pages/zorbium.html", "/pages/weather.html"]
    assert [s.n for s in findings.sources] == [1, 2, 3, 4]
    assert findings.skipped.get("robots") == 1 and findings.skipped.get("type") == 1
    assert "1234 degrees" in findings.sources[2].text
    assert [s.stage for s in steps] == ["planning", "searching", "reading", "answering"]
    assert steps[1].queries == findings.queries and steps[3].sources == 4
    zorbium = findings.sources[2]
    assert zorbium.title.startswith("Zorbium")
    assert f"[3] {zorbium.title} ({zorbium.url})\n" in findings.context


async def test_unusable_or_late_plan_searches_the_question(web: FakeWeb, researcher: Researcher) -> None:
    """A plan that is not JSON, or that does not come in time, falls back to the question itself."""

    async def progress(step: Progress) -> None:
        pass

    findings = await researcher.run("zorbium facts?", llm=Planner("zorbium!!"), model="m", progress=progress)
    assert findings.queries == ("zorbium facts?",)
    slow = Researcher(researcher.search_backend, researcher.fetcher, ResearchLimits(plan_timeout=0.2))
    queries = await slow.plan("nothing here", llm=Planner('{"queries": ["x y"]}', delay=5), model="m")
    assert queries == ["nothing here"]


async def test_search_failures(web: FakeWeb, researcher: Researcher) -> None:
    """One failing query is tolerated; when every query fails, SearchFailed."""
    results = await researcher.search(["broken", "zorbium"])
    assert len(results) == 8
    with pytest.raises(SearchFailed):
        await researcher.search(["broken", "broken too"])


async def test_cancel_stops_fetches(web: FakeWeb, researcher: Researcher) -> None:
    """Cancelling a research turn while a page is being read closes that fetch's connection (awaited)."""
    reading = asyncio.Event()

    async def progress(step: Progress) -> None:
        if step.stage == "reading":
            reading.set()

    task = asyncio.create_task(researcher.run("slow", llm=Planner("{}"), model="m", progress=progress))
    await asyncio.wait_for(reading.wait(), 5)
    for _ in range(100):
        if web.stats.slow_open:
            break
        await asyncio.sleep(0.02)
    assert web.stats.slow_open == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(web.wait_slow_closed)
