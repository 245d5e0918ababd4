"""Search backends against loopback servers speaking SearxNG's and Brave's real API shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from realtime.research import BraveSearch, SearchFailed, SearxngSearch
from tests.research.web import BRAVE_KEY, RESULTS, FakeWeb
from tests.support.server import free_port


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_searxng_results_in_rank_order(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """SearxNG's JSON results become (title, url, snippet) in its order, cut at the limit; tags are removed."""
    results = await SearxngSearch(web.url, http).search("zorbium melting point", 5)
    assert [r.url for r in results] == [web.url + path for path, _, _ in RESULTS[:5]]
    assert results[4].title == "Zorbium - Materials Handbook"
    assert results[4].snippet == "Zorbium is a silver-blue alloy."
    assert web.stats.queries[-1] == "zorbium melting point"


async def test_searxng_without_json_format_is_a_clear_failure(http: httpx.AsyncClient) -> None:
    """SearxNG answers 403 when its settings do not enable JSON: the error says which setting."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="Forbidden")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(SearchFailed, match="search.formats"):
            await SearxngSearch("http://searx.local", client).search("q", 5)


async def test_searxng_empty_and_broken(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """No results is an empty list; a server error is SearchFailed."""
    assert await SearxngSearch(web.url, http).search("nothing at all", 5) == []
    with pytest.raises(SearchFailed):
        await SearxngSearch(web.url, http).search("broken", 5)


async def test_searxng_unreachable(http: httpx.AsyncClient) -> None:
    """Nothing listening: SearchFailed saying the service is not reachable."""
    with pytest.raises(SearchFailed, match="not reachable"):
        await SearxngSearch(f"http://127.0.0.1:{free_port()}", http).search("q", 5)


async def test_searxng_answer_that_is_not_json(http: httpx.AsyncClient) -> None:
    """An HTML page where JSON was expected (a wrong URL): SearchFailed."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>hello</html>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(SearchFailed, match="not JSON"):
            await SearxngSearch("http://searx.local", client).search("q", 5)


async def test_brave_results_with_key(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """Brave's web results (count sent, key in X-Subscription-Token), with its <strong> marks removed."""
    results = await BraveSearch(BRAVE_KEY, http, base_url=web.url).search("zorbium", 3)
    assert [r.url for r in results] == [web.url + path for path, _, _ in RESULTS[:3]]
    assert results[1].snippet == "The Port of Velmora handled a record number of containers."


async def test_brave_wrong_key_and_no_results(web: FakeWeb, http: httpx.AsyncClient) -> None:
    """A wrong key is SearchFailed naming the key; an answer without a web section is no results."""
    with pytest.raises(SearchFailed, match="API key"):
        await BraveSearch("wrong", http, base_url=web.url).search("zorbium", 3)
    assert await BraveSearch(BRAVE_KEY, http, base_url=web.url).search("nothing", 3) == []
