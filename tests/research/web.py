"""A loopback web for research tests: SearxNG's search API, the Brave Search API, and fixture pages.

One Starlette app on uvicorn in its own thread (as tests/support/fake_ollama.py), so the server under
test (a child process) and in-process tests reach it alike:

  GET /search?q=..&format=json    SearxNG: {"query", "number_of_results", "results": [{url, title, content,
                                  engine, ...}]}; any other format is 403, as SearxNG answers when JSON is
                                  not enabled in its settings
  GET /res/v1/web/search?q=&count= Brave: {"type": "search", "web": {"results": [{title, url, description}]}};
                                  401 without X-Subscription-Token: test-key
  /robots.txt                     Disallow: /private/ (or a 500 with robots="error")
  /pages/*.html, /pages/notes.txt the fixture pages (tests/research/pages)
  /private/leak.html              a page robots.txt excludes; it holds a wrong fact
  /pages/huge.html                HTML that never ends (20 MiB), for the size limit
  /slow/page.html                 headers at once, then one byte a second (open ones are counted)
  /files/zorbium.pdf              application/pdf, for the content-type check
  /go/<name>                      302 to /pages/<name>.html; /go/private to the excluded page

Which results a query gets: a query holding "slow" -> the slow page only; "nothing" -> none; "broken"
-> HTTP 500; anything else -> RESULTS (distractors, the excluded page, the huge, slow and PDF pages, and
the page with the fact, not first).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.server import free_port

PAGES = Path(__file__).with_name("pages")
BRAVE_KEY = "test-key"
HUGE_SIZE = 20 << 20

# (path, title the search engine shows, snippet), in the engine's rank order
RESULTS = [
    ("/private/leak.html", "Zorbium internal draft", "Draft figures for zorbium."),
    ("/pages/harbor.html", "Port of Velmora", "The Port of Velmora handled a record number of containers."),
    ("/files/zorbium.pdf", "Zorbium datasheet (PDF)", "Datasheet."),
    ("/pages/huge.html", "Everything about everything", "A very long page."),
    ("/pages/zorbium.html", "Zorbium - Materials Handbook", "Zorbium is a silver-blue <b>alloy</b>."),
    ("/pages/harbor.html#top", "Port of Velmora (top)", "The same page again."),
    ("/pages/weather.html", "Kestrel Ridge weather", "Heavy snow on the ridge."),
    ("/slow/page.html", "A slow page", "It takes its time."),
]


class WebStats:
    def __init__(self) -> None:
        self.slow_open = 0
        self.requests: list[str] = []  # paths, in order (robots.txt included)
        self.queries: list[str] = []


def create_app(stats: WebStats, base_url: str, *, robots: str = "ok") -> Starlette:
    def results_for(query: str) -> list[tuple[str, str, str]] | None:
        if "broken" in query:
            return None
        if "nothing" in query:
            return []
        if "slow" in query:
            return [("/slow/page.html", "A slow page", "It takes its time.")]
        return RESULTS

    async def searxng(request: Request) -> Response:
        query = request.query_params.get("q", "")
        stats.queries.append(query)
        if request.query_params.get("format") != "json":
            return PlainTextResponse("Forbidden", status_code=403)
        found = results_for(query)
        if found is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        results = [
            {
                "url": base_url + path,
                "title": title,
                "content": snippet,
                "engine": "fake",
                "engines": ["fake"],
                "positions": [i + 1],
                "score": 1.0 / (i + 1),
                "category": "general",
            }
            for i, (path, title, snippet) in enumerate(found)
        ]
        body = {
            "query": query,
            "number_of_results": len(results),
            "results": results,
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }
        return JSONResponse(body)

    async def brave(request: Request) -> Response:
        if request.headers.get("x-subscription-token") != BRAVE_KEY:
            return JSONResponse(
                {"type": "ErrorResponse", "error": {"status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID"}},
                status_code=401,
            )
        query = request.query_params.get("q", "")
        stats.queries.append(query)
        found = results_for(query)
        if found is None:
            return JSONResponse({"type": "ErrorResponse"}, status_code=500)
        count = int(request.query_params.get("count", "20"))
        body: dict[str, object] = {"type": "search", "query": {"original": query}}
        if found:
            results = [
                {
                    "type": "search_result",
                    "title": title,
                    "url": base_url + path,
                    "description": f"<strong>{snippet}</strong>",
                }
                for path, title, snippet in found[:count]
            ]
            body["web"] = {"type": "search", "results": results, "family_friendly": True}
        return JSONResponse(body)

    async def robots_txt(request: Request) -> Response:
        stats.requests.append(request.url.path)
        if robots == "error":
            return PlainTextResponse("oops", status_code=500)
        if robots == "missing":
            return PlainTextResponse("not found", status_code=404)
        return PlainTextResponse("User-agent: *\nDisallow: /private/\n")

    async def page(request: Request) -> Response:
        stats.requests.append(request.url.path)
        name = request.path_params["name"]
        path = PAGES / name
        if "/" in name or not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return Response(path.read_bytes(), media_type="text/plain" if name.endswith(".txt") else "text/html")

    async def private(request: Request) -> Response:
        stats.requests.append(request.url.path)
        return Response((PAGES / "leak.html").read_bytes(), media_type="text/html")

    async def huge(request: Request) -> Response:
        stats.requests.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            yield b"<html><head><title>Everything about everything</title></head><body><article>"
            yield b"<h1>Everything</h1><p>The Glimmerfield lighthouse keeper counts seagulls every morning.</p>"
            filler = b"<p>" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + b"</p>\n"
            sent = 0
            while sent < HUGE_SIZE:
                yield filler
                sent += len(filler)
                await asyncio.sleep(0)  # lets Starlette see the client go away (else it writes on)
            yield b"</article></body></html>"

        return StreamingResponse(body(), media_type="text/html")

    async def slow(request: Request) -> Response:
        stats.requests.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            stats.slow_open += 1
            try:
                yield b"<html><body><p>"
                for _ in range(120):
                    await asyncio.sleep(1.0)
                    yield b"."
                yield b"</p></body></html>"
            finally:
                stats.slow_open -= 1

        return StreamingResponse(body(), media_type="text/html")

    async def pdf(request: Request) -> Response:
        stats.requests.append(request.url.path)
        return Response(b"%PDF-1.4\n% zorbium melting point 1234\n%%EOF\n", media_type="application/pdf")

    async def go(request: Request) -> Response:
        stats.requests.append(request.url.path)
        name = request.path_params["name"]
        target = "/private/leak.html" if name == "private" else f"/pages/{name}.html"
        return RedirectResponse(target, status_code=302)

    return Starlette(
        routes=[
            Route("/search", searxng),
            Route("/res/v1/web/search", brave),
            Route("/robots.txt", robots_txt),
            Route("/pages/huge.html", huge),
            Route("/pages/{name}", page),
            Route("/private/{name}", private),
            Route("/slow/{name}", slow),
            Route("/files/{name}", pdf),
            Route("/go/{name}", go),
        ]
    )


class FakeWeb:
    """The loopback web on its own thread and loop (independent of the test's loop)."""

    def __init__(self, *, robots: str = "ok") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stats = WebStats()
        app = create_app(self.stats, self.url, robots=robots)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-web", daemon=True)

    def start(self) -> FakeWeb:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake web did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def wait_slow_closed(self, timeout: float = 5.0) -> bool:
        """Whether every slow-page response was closed (its client went away) within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.stats.slow_open and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stats.slow_open == 0
