"""Pages for a research turn: fetched with httpx (bounded bytes and time, http/https only, robots.txt
honoured), their main text extracted with trafilatura (in a worker thread: it is CPU work).

A page that cannot be used raises FetchRefused with a short reason (`robots`, `type`, `status`,
`timeout`, `scheme`, `private`, `empty`, `unreadable`, `network`, `redirects`); the caller skips it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from realtime.research.errors import FetchRefused

log = logging.getLogger("realtime.research.fetch")

USER_AGENT = "realtime-voice-research/0.1 (+https://github.com/; a voice assistant's web research)"
ROBOTS_AGENT = "realtime-voice-research"  # the token robots.txt rules name
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown"})
MAX_ROBOTS_SIZE = 512 << 10  # RFC 9309: crawlers must parse at least 500 KiB
MAX_REDIRECTS = 4
ROBOTS_CACHE_SIZE = 256
ROBOTS_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_page_size: int = 2 << 20  # bytes read of one page; the rest is never downloaded
    page_timeout: float = 8.0  # one page, robots.txt and redirects included
    robots_timeout: float = 4.0
    max_page_chars: int = 4000  # extracted text kept per page
    allow_private: bool = False  # fetch loopback/private addresses (tests, intranet deployments)


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # where the text came from (after redirects)
    title: str
    text: str
    truncated: bool  # the page was longer than max_page_size, or its text than max_page_chars


class PageFetcher:
    def __init__(self, http: httpx.AsyncClient, limits: FetchLimits | None = None) -> None:
        self._http = http
        self.limits = limits or FetchLimits()
        self._robots: OrderedDict[str, tuple[float, RobotFileParser]] = OrderedDict()
        self._robots_locks: dict[str, asyncio.Lock] = {}  # one robots.txt request per origin at a time

    async def fetch(self, url: str) -> Page:
        """The page's main text. Raises FetchRefused; bounded by `page_timeout` as a whole."""
        try:
            async with asyncio.timeout(self.limits.page_timeout):
                return await self._fetch(url)
        except TimeoutError as exc:
            raise FetchRefused("timeout", url) from exc
        except httpx.HTTPError as exc:
            raise FetchRefused("network", f"{url}: {type(exc).__name__}") from exc

    async def _fetch(self, url: str) -> Page:
        for _ in range(MAX_REDIRECTS + 1):
            await self._check_url(url)
            headers = {"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,text/plain;q=0.8"}
            async with self._http.stream("GET", url, headers=headers, follow_redirects=False) as resp:
                if resp.is_redirect and "location" in resp.headers:
                    url = urljoin(url, resp.headers["location"])
                    continue
                if resp.status_code != 200:
                    raise FetchRefused("status", f"{url}: HTTP {resp.status_code}")
                kind = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind not in HTML_TYPES | TEXT_TYPES:
                    raise FetchRefused("type", f"{url}: {kind or 'no content type'}")
                body, cut = await _read_bounded(resp, self.limits.max_page_size)
                encoding = resp.encoding or "utf-8"
            try:
                text = body.decode(encoding, errors="replace")
            except LookupError:  # a charset Python does not know
                text = body.decode("utf-8", errors="replace")
            title = ""
            if kind in HTML_TYPES:
                try:
                    title, text = await asyncio.to_thread(extract_html, text, url)
                except Exception as exc:  # a page the extractor chokes on is one page less, not a failed turn
                    raise FetchRefused("unreadable", f"{url}: {type(exc).__name__}") from exc
            text = text.strip()
            if not text:
                raise FetchRefused("empty", url)
            limit = self.limits.max_page_chars
            return Page(url, title, text[:limit], cut or len(text) > limit)
        raise FetchRefused("redirects", url)

    async def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused("scheme", url)
        if not self.limits.allow_private:
            await _refuse_private(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        if not (await self._robots_for(parts.scheme, parts.netloc)).can_fetch(ROBOTS_AGENT, url):
            raise FetchRefused("robots", url)

    async def _robots_for(self, scheme: str, netloc: str) -> RobotFileParser:
        """The origin's robots.txt, cached (LRU, an hour). RFC 9309: a 4xx means no rules; a 5xx, a network
        failure or a timeout means "do not crawl" (until the cache entry expires)."""
        origin = f"{scheme}://{netloc}"
        lock = self._robots_locks.setdefault(origin, asyncio.Lock())
        try:
            async with lock:  # concurrent pages of one site wait for its first robots.txt request
                return await self._robots_cached(origin)
        finally:
            if not lock.locked():
                self._robots_locks.pop(origin, None)

    async def _robots_cached(self, origin: str) -> RobotFileParser:
        now = time.monotonic()
        cached = self._robots.get(origin)
        if cached is not None and now - cached[0] < ROBOTS_TTL:
            self._robots.move_to_end(origin)
            return cached[1]
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            async with asyncio.timeout(self.limits.robots_timeout):
                parser = await self._read_robots(origin, parser)
        except (TimeoutError, httpx.HTTPError) as exc:
            log.info("robots.txt of %s unreadable (%s): not crawling it", origin, type(exc).__name__)
            parser.disallow_all = True
        self._robots[origin] = (now, parser)
        self._robots.move_to_end(origin)
        while len(self._robots) > ROBOTS_CACHE_SIZE:
            self._robots.popitem(last=False)
        return parser

    async def _read_robots(self, origin: str, parser: RobotFileParser) -> RobotFileParser:
        url = origin + "/robots.txt"
        for _ in range(MAX_REDIRECTS + 1):
            async with self._http.stream("GET", url, headers={"User-Agent": USER_AGENT}) as resp:
                if resp.is_redirect and "location" in resp.headers:
                    url = urljoin(url, resp.headers["location"])
                    continue
                if 400 <= resp.status_code < 500:
                    parser.allow_all = True
                elif resp.status_code != 200:
                    parser.disallow_all = True
                else:
                    body, _ = await _read_bounded(resp, MAX_ROBOTS_SIZE)
                    parser.parse(body.decode("utf-8", errors="replace").splitlines())
                return parser
        parser.allow_all = True  # RFC 9309: after five redirects, treat as unavailable (4xx)
        return parser


async def _read_bounded(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more (the rest is not downloaded)."""
    chunks: list[bytes] = []
    size = 0
    async for data in resp.aiter_bytes():
        chunks.append(data)
        size += len(data)
        if size >= limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


async def _refuse_private(host: str, port: int) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or reserved addresses: search results
    must not make the server fetch from its own network. (A DNS answer that changes between this check
    and the connection is not caught; deployments that care put the fetcher behind an egress proxy.)"""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchRefused("network", f"{host}: cannot resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise FetchRefused("private", f"{host} is {address}")


def extract_html(html: str, url: str) -> tuple[str, str]:
    """(title, main text) of an HTML page: trafilatura's main content, falling back to its recall mode for
    short pages where the precise extraction finds nothing. Blocking: run it in a thread."""
    import trafilatura

    title = ""
    metadata = trafilatura.extract_metadata(html)
    if metadata is not None and metadata.title:
        title = " ".join(metadata.title.split())
    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True, deduplicate=False)
    if not text:
        text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True, favor_recall=True)
    return title, text or ""
