"""Web research turns (docs/research.md): plan queries with the model, search (SearxNG or Brave), fetch and
extract pages (bounded, robots.txt honoured), answer from them with [n] citations.

What a session calls:

    findings = await researcher.run(question, llm=llm, model=model, progress=on_progress)
    ... a system message `findings.context` before the question, then stream the answer ...
    findings.sources  # [n] -> url, title: sent to the client as response.research.sources
"""

from realtime.research.agent import Findings, Progress, Researcher, ResearchLimits
from realtime.research.errors import FetchRefused, ResearchUnavailable, SearchFailed
from realtime.research.fetch import FetchLimits, Page, PageFetcher, extract_html
from realtime.research.plan import Source, cited, parse_plan, wants_research
from realtime.research.search import BraveSearch, SearchBackend, SearchResult, SearxngSearch
from realtime.research.setup import build_researcher

__all__ = [
    "BraveSearch",
    "FetchLimits",
    "FetchRefused",
    "Findings",
    "Page",
    "PageFetcher",
    "Progress",
    "ResearchLimits",
    "ResearchUnavailable",
    "Researcher",
    "SearchBackend",
    "SearchFailed",
    "SearchResult",
    "SearxngSearch",
    "Source",
    "build_researcher",
    "cited",
    "extract_html",
    "parse_plan",
    "wants_research",
]
