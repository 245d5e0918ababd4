"""Web search backends behind one small interface: `await backend.search(query, limit)`.

SearxNG's JSON API (self-hosted, the usual choice for local assistants) and the Brave Search API. Each
answer is bounded (time and bytes), every failure becomes SearchFailed, and results are plain values.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from realtime.research.errors import SearchFailed

log = logging.getLogger("realtime.research.search")

MAX_SEARCH_RESPONSE_SIZE = 2 << 20
MAX_TITLE_CHARS = 300
MAX_SNIPPET_CHARS = 1000
MAX_URL_CHARS = 2000
_TAGS = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchBackend(Protocol):
    """One web search: at most `limit` results, best first. Raises SearchFailed."""

    name: str

    async def search(self, query: str, limit: int) -> list[SearchResult]: ...


def _clean(text: object, limit: int) -> str:
    """Plain text from a result field: tags (Brave marks matches with <strong>) and entities removed."""
    if not isinstance(text, str):
        return ""
    text = " ".join(html.unescape(_TAGS.sub("", text)).split())
    return text[:limit]


def _result(url: object, title: object, snippet: object) -> SearchResult | None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
        return None
    return SearchResult(_clean(title, MAX_TITLE_CHARS) or url, url, _clean(snippet, MAX_SNIPPET_CHARS))


async def _get_json(
    http: httpx.AsyncClient, name: str, url: str, params: dict[str, Any], headers: dict[str, str], answer_timeout: float
) -> Any:
    """GET a JSON document, bounded in time and size; SearchFailed (with the status in the log) otherwise."""
    try:
        async with http.stream("GET", url, params=params, headers=headers, timeout=answer_timeout) as resp:
            body = b""
            async for data in resp.aiter_bytes():
                body += data
                if len(body) > MAX_SEARCH_RESPONSE_SIZE:
                    raise SearchFailed(f"The {name} search answered too much data.")
    except httpx.TimeoutException as exc:
        raise SearchFailed(f"The {name} search did not answer in time.") from exc
    except httpx.HTTPError as exc:
        raise SearchFailed(f"The {name} search service is not reachable.") from exc
    if resp.status_code != 200:
        log.warning("%s search answered HTTP %s: %s", name, resp.status_code, body[:200])
        raise SearchFailed(_status_message(name, resp.status_code))
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SearchFailed(f"The {name} search answered something that is not JSON.") from exc


def _status_message(name: str, status: int) -> str:
    if name == "SearxNG" and status == 403:
        # SearxNG answers 403 to format=json unless its settings.yml lists json under search.formats
        return "The SearxNG search refused JSON: enable 'json' in its search.formats setting."
    if status in (401, 403):
        return f"The {name} search refused the request (check its API key)."
    if status == 429:
        return f"The {name} search is rate-limiting this server."
    return f"The {name} search failed (HTTP {status})."


class SearxngSearch:
    """SearxNG's search API: GET {base}/search?q=...&format=json -> {"results": [{url, title, content}]}.

    The instance must allow the JSON format (settings.yml: `search: formats: [html, json]`)."""

    name = "SearxNG"

    def __init__(self, base_url: str, http: httpx.AsyncClient, *, timeout: float = 8.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = timeout

    async def search(self, query: str, limit: int) -> list[SearchResult]:
        params = {"q": query, "format": "json", "safesearch": 1}
        body = await _get_json(self._http, self.name, f"{self.base_url}/search", params, {}, self._timeout)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise SearchFailed("The SearxNG search answered without a result list.")
        out = [
            r
            for item in results
            if isinstance(item, dict) and (r := _result(item.get("url"), item.get("title"), item.get("content")))
        ]
        return out[:limit]


class BraveSearch:
    """The Brave Search API: GET {base}/res/v1/web/search?q=...&count=N with the key in the
    X-Subscription-Token header -> {"web": {"results": [{url, title, description}]}} (count at most 20)."""

    name = "Brave"
    DEFAULT_URL = "https://api.search.brave.com"

    def __init__(
        self, api_key: str, http: httpx.AsyncClient, *, base_url: str = DEFAULT_URL, timeout: float = 8.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._http = http
        self._timeout = timeout

    async def search(self, query: str, limit: int) -> list[SearchResult]:
        params = {"q": query, "count": max(1, min(limit, 20)), "safesearch": "moderate"}
        headers = {"Accept": "application/json", "X-Subscription-Token": self._key}
        url = f"{self.base_url}/res/v1/web/search"
        body = await _get_json(self._http, self.name, url, params, headers, self._timeout)
        web = body.get("web") if isinstance(body, dict) else None
        if web is None and isinstance(body, dict) and body.get("type") == "search":
            return []  # no web results for this query: Brave leaves the section out
        results = web.get("results") if isinstance(web, dict) else None
        if not isinstance(results, list):
            raise SearchFailed("The Brave search answered without a result list.")
        out = [
            r
            for item in results
            if isinstance(item, dict) and (r := _result(item.get("url"), item.get("title"), item.get("description")))
        ]
        return out[:limit]
