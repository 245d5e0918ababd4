"""Pages for research: bounded in bytes and time, robots.txt honoured, HTML to text with trafilatura."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from realtime.research import FetchLimits, FetchRefused, PageFetcher
from tests.research.web import FakeWeb

LOOPBACK = FetchLimits(max_page_size=256 << 10, page_timeout=2.0, robots_timeout=2.0, allow_private=True)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def refused(fetcher: PageFetcher, url: str) -> str:
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(url)
    return caught.value.reason


async def test_article_text_without_boilerplate(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """An HTML page gives its title and main text; navigation and footer are left out."""
    page = await PageFetcher(http, LOOPBACK).fetch(web.url + "/pages/zorbium.html")
    assert page.title.startswith("Zorbium")
    assert "melting point of 1234 degrees Celsius" in page.text
    assert "Log in" not in page.text and "Cookie settings" not in page.text
    assert not page.truncated


async def test_plain_text_page(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A text/plain page is used as it is."""
    page = await PageFetcher(http, LOOPBACK).fetch(web.url + "/pages/notes.txt")
    assert "Glimmerfield lighthouse was painted red" in page.text


async def test_robots_disallowed_path_is_not_fetched(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A path robots.txt disallows is refused before any request for it is made."""
    before = len(web.stats.requests)
    assert await refused(PageFetcher(http, LOOPBACK), web.url + "/private/leak.html") == "robots"
    assert "/private/leak.html" not in web.stats.requests[before:]


async def test_redirect_into_a_disallowed_path_is_refused(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """Each redirect hop is checked again: a redirect to an excluded path is not followed."""
    fetcher = PageFetcher(http, LOOPBACK)
    assert await refused(fetcher, web.url + "/go/private") == "robots"
    page = await fetcher.fetch(web.url + "/go/zorbium")
    assert page.url == web.url + "/pages/zorbium.html" and "1234" in page.text


async def test_robots_is_read_once_per_host(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """robots.txt is cached per origin: pages one after another and at once, one robots.txt request."""
    fetcher = PageFetcher(http, LOOPBACK)
    before = len(web.stats.requests)
    await asyncio.gather(*(fetcher.fetch(f"{web.url}/pages/{name}.html") for name in ("zorbium", "harbor", "weather")))
    await fetcher.fetch(f"{web.url}/pages/notes.txt")
    assert web.stats.requests[before:].count("/robots.txt") == 1


async def test_robots_server_error_means_do_not_crawl(http: httpx.AsyncClient) -> None:
    """RFC 9309: robots.txt answering 5xx means the whole site is off limits; a 404 means no rules."""
    broken, missing = FakeWeb(robots="error").start(), FakeWeb(robots="missing").start()
    try:
        fetcher = PageFetcher(http, LOOPBACK)
        assert await refused(fetcher, broken.url + "/pages/zorbium.html") == "robots"
        assert "1234" in (await fetcher.fetch(missing.url + "/pages/zorbium.html")).text
    finally:
        broken.stop()
        missing.stop()


async def test_huge_page_is_cut_at_the_size_limit(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A 20 MiB page: only max_page_size bytes are read, quickly, and its text is kept within the char limit."""
    fetcher = PageFetcher(http, LOOPBACK)
    started = time.monotonic()
    page = await fetcher.fetch(web.url + "/pages/huge.html")
    assert time.monotonic() - started < 2.0
    assert page.truncated and "Glimmerfield" in page.text
    assert len(page.text) <= fetcher.limits.max_page_chars


async def test_slow_page_times_out_and_its_connection_is_closed(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A page that drips bytes is abandoned at page_timeout, and the connection to it is closed."""
    limits = FetchLimits(page_timeout=0.5, allow_private=True)
    started = time.monotonic()
    assert await refused(PageFetcher(http, limits), web.url + "/slow/page.html") == "timeout"
    assert time.monotonic() - started < 1.5
    assert await asyncio.to_thread(web.wait_slow_closed)


async def test_non_html_content_is_refused(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A PDF (or any type other than HTML and plain text) is skipped, not parsed."""
    assert await refused(PageFetcher(http, LOOPBACK), web.url + "/files/zorbium.pdf") == "type"


async def test_error_status_is_refused(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A 404 page is skipped."""
    assert await refused(PageFetcher(http, LOOPBACK), web.url + "/pages/missing.html") == "status"


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd", "javascript:alert(1)"])
async def test_only_http_and_https(http: httpx.AsyncClient, url: str) -> None:
    """Other schemes are refused without any request."""
    assert await refused(PageFetcher(http, LOOPBACK), url) == "scheme"


async def test_private_addresses_refused_by_default(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """Search results cannot make the server fetch from loopback or private networks unless allowed."""
    fetcher = PageFetcher(http, FetchLimits())
    assert await refused(fetcher, web.url + "/pages/zorbium.html") == "private"
    assert await refused(fetcher, "http://10.1.2.3/") == "private"
    assert await refused(fetcher, "http://[::1]:9/") == "private"


async def test_unknown_charset_and_extractor_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A charset Python does not know is read as UTF-8; a page the extractor fails on is skipped, not fatal."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(404)
        html = b"<html><body><article><p>Zorbium melts at 1234 degrees Celsius, says the handbook.</p></article></body>"
        return httpx.Response(200, content=html, headers={"content-type": "text/html; charset=x-unknown-42"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetcher = PageFetcher(client, FetchLimits(allow_private=True))
        page = await fetcher.fetch("http://example.test/page")
        assert "1234 degrees" in page.text

        def broken(html: str, url: str) -> tuple[str, str]:
            raise ValueError("parser exploded")

        monkeypatch.setattr("realtime.research.fetch.extract_html", broken)
        assert await refused(fetcher, "http://example.test/other") == "unreadable"
