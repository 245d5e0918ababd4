"""The researcher the server's settings describe, or None when research is off."""

from __future__ import annotations

import httpx

from realtime.config import Settings
from realtime.research.agent import Researcher, ResearchLimits
from realtime.research.fetch import FetchLimits, PageFetcher
from realtime.research.search import BraveSearch, SearchBackend, SearxngSearch

MAX_CONNECTIONS = 32


def build_researcher(settings: Settings) -> Researcher | None:
    """REALTIME_SEARCH_BACKEND: off -> None; searxng / brave -> a researcher with its own HTTP client (closed
    by `Researcher.aclose`), shared by the search backend and the page fetcher."""
    if settings.search_backend == "off":
        return None
    pool = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=8)
    http = httpx.AsyncClient(limits=pool, timeout=httpx.Timeout(settings.research_page_timeout))
    search: SearchBackend
    if settings.search_backend == "searxng":
        assert settings.searxng_url is not None  # config._check
        search = SearxngSearch(settings.searxng_url, http, timeout=settings.search_timeout)
    else:
        assert settings.brave_api_key is not None
        search = BraveSearch(settings.brave_api_key, http, base_url=settings.brave_url, timeout=settings.search_timeout)
    fetcher = PageFetcher(
        http,
        FetchLimits(
            max_page_size=settings.max_research_page_size,
            page_timeout=settings.research_page_timeout,
            robots_timeout=min(settings.research_page_timeout, 4.0),
            max_page_chars=settings.research_page_chars,
            allow_private=settings.research_allow_private,
        ),
    )
    research = ResearchLimits(
        max_queries=settings.research_max_queries,
        results_per_query=settings.research_results_per_query,
        max_sources=settings.research_max_sources,
        max_candidates=2 * settings.research_max_sources,
        plan_timeout=settings.research_plan_timeout,
    )
    return Researcher(search, fetcher, research, http=http)
