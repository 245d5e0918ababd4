"""A research turn's work before the answer: plan queries (an LLM call with a JSON schema), search,
fetch and extract the best pages concurrently (bounded), number them as sources.

The session streams the answer itself, from `Findings.context` (a system message) like any reply, and
sends the progress and sources events; cancelling its task cancels every search and fetch here (they
run in a TaskGroup, so they are awaited too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from realtime.errors import UpstreamRejected
from realtime.research.errors import FetchRefused, SearchFailed
from realtime.research.fetch import Page, PageFetcher
from realtime.research.plan import Source, context_text, dedupe, parse_plan, plan_messages, plan_schema
from realtime.research.search import SearchBackend, SearchResult
from realtime.stages.llm import ChatBackend, ChatDelta, ChatRequest

log = logging.getLogger("realtime.research")

MAX_PLAN_CHARS = 4000


@dataclass(frozen=True, slots=True)
class ResearchLimits:
    max_queries: int = 3
    results_per_query: int = 5
    max_sources: int = 4  # pages given to the model
    max_candidates: int = 8  # pages tried (fetched concurrently, `max_sources` at a time)
    plan_timeout: float = 15.0
    plan_max_tokens: int = 96


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a research turn is: planning -> searching (queries) -> reading (pages being read) -> answering."""

    stage: str
    queries: tuple[str, ...] = ()
    sources: int | None = None


@dataclass(frozen=True, slots=True)
class Findings:
    queries: tuple[str, ...]
    sources: tuple[Source, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # pages not used, by reason

    @property
    def context(self) -> str:
        return context_text(self.sources)


class Researcher:
    def __init__(
        self,
        search: SearchBackend,
        fetcher: PageFetcher,
        limits: ResearchLimits | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """`http`, when given, is the client the backend and fetcher share; `aclose` closes it."""
        self.search_backend = search
        self.fetcher = fetcher
        self.limits = limits or ResearchLimits()
        self._http = http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def run(
        self,
        question: str,
        *,
        llm: ChatBackend,
        model: str,
        context: Sequence[str] = (),
        progress: Callable[[Progress], Awaitable[None]],
    ) -> Findings:
        """Plan, search, read. Raises SearchFailed when every search failed; pages that cannot be read are
        skipped (the findings may have no sources: the model is then told the search found nothing)."""
        await progress(Progress("planning"))
        queries = tuple(await self.plan(question, llm=llm, model=model, context=context))
        await progress(Progress("searching", queries=queries))
        results = await self.search(queries)
        urls = dedupe(r.url for r in results)[: self.limits.max_candidates]
        titles = {r.url: r.title for r in reversed(results)}
        await progress(Progress("reading", queries=queries, sources=min(len(urls), self.limits.max_sources)))
        pages, skipped = await self.read(urls)
        sources = tuple(
            Source(i, page.url, page.title or titles.get(url, page.url), page.text)
            for i, (url, page) in enumerate(pages, 1)
        )
        log.info(
            "research: %d queries, %d pages tried, %d read, skipped %s", len(queries), len(urls), len(sources), skipped
        )
        await progress(Progress("answering", queries=queries, sources=len(sources)))
        return Findings(queries, sources, skipped)

    async def plan(self, question: str, *, llm: ChatBackend, model: str, context: Sequence[str] = ()) -> list[str]:
        """The model's queries (Ollama structured output: `format` is the JSON schema); the question itself
        when the plan is unusable, late, or the model fails."""
        limits = self.limits
        request = ChatRequest(
            model=model,
            messages=plan_messages(question, context, limits.max_queries),
            temperature=0.0,
            max_tokens=limits.plan_max_tokens,
            think=None,
            format=plan_schema(limits.max_queries),
        )
        reply = ""
        try:
            async with asyncio.timeout(limits.plan_timeout), contextlib.aclosing(llm.stream_chat(request)) as stream:
                async for chunk in stream:
                    if isinstance(chunk, ChatDelta):
                        reply += chunk.content
                        if len(reply) > MAX_PLAN_CHARS:
                            break
        except TimeoutError:
            log.info("research plan: no plan in %.0fs, searching for the question", limits.plan_timeout)
        except UpstreamRejected as exc:  # e.g. an Ollama-compatible server without structured output
            log.info("research plan refused (%s), searching for the question", exc.message)
        queries = parse_plan(reply, question, limits.max_queries)
        log.debug("research plan: %r -> %r", reply[:200], queries)
        return queries

    async def search(self, queries: Sequence[str]) -> list[SearchResult]:
        """Every query at once; results interleaved by rank (each query's first, then seconds...)."""
        limit = self.limits.results_per_query
        answers = await asyncio.gather(*(self.search_backend.search(q, limit) for q in queries), return_exceptions=True)
        failures = [a for a in answers if isinstance(a, BaseException)]
        for failure in failures:
            if not isinstance(failure, SearchFailed):
                raise failure
        if failures and len(failures) == len(answers):
            raise failures[0]
        lists = [a for a in answers if isinstance(a, list)]
        return [r for rank in range(limit) for results in lists if rank < len(results) for r in [results[rank]]]

    async def read(self, urls: Sequence[str]) -> tuple[list[tuple[str, Page]], dict[str, int]]:
        """Fetch the candidates concurrently (`max_sources` at a time) until `max_sources` pages are read (the
        other fetches are then cancelled); those pages in rank order, and the skipped pages' count by reason."""
        limits = self.limits
        gate = asyncio.Semaphore(limits.max_sources)
        pages: dict[int, Page] = {}
        skipped: dict[str, int] = {}
        tasks: list[asyncio.Task[None]] = []

        async def one(index: int, url: str) -> None:
            async with gate:
                try:
                    pages[index] = await self.fetcher.fetch(url)
                except FetchRefused as exc:
                    log.info("research: skipped %s (%s)", url, exc)
                    skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
                    return
            if len(pages) >= limits.max_sources:  # enough: stop the fetches still running or waiting
                for task in tasks:
                    if task is not asyncio.current_task():
                        task.cancel()

        async with asyncio.TaskGroup() as group:
            for index, url in enumerate(urls):
                tasks.append(group.create_task(one(index, url), name=f"research-fetch:{index}"))
        ordered = [(urls[i], pages[i]) for i in sorted(pages)]
        return ordered[: limits.max_sources], skipped
