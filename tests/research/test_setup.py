"""Research settings: REALTIME_SEARCH_BACKEND and its companions, read once, bad values named."""

from __future__ import annotations

import pytest

from realtime.config import load_settings
from realtime.errors import ConfigError
from realtime.research import BraveSearch, SearxngSearch, build_researcher


async def test_off_by_default() -> None:
    """No search backend unless configured: no researcher."""
    assert build_researcher(load_settings({})) is None


async def test_searxng_and_brave() -> None:
    """searxng needs its URL, brave its API key; each builds its backend with the page limits."""
    env = {"REALTIME_SEARCH_BACKEND": "searxng", "REALTIME_SEARXNG_URL": "http://searx.local:8888/"}
    researcher = build_researcher(load_settings({**env, "REALTIME_MAX_RESEARCH_PAGE_SIZE": "1000"}))
    assert researcher is not None
    assert isinstance(researcher.search_backend, SearxngSearch)
    assert researcher.search_backend.base_url == "http://searx.local:8888"
    assert researcher.fetcher.limits.max_page_size == 1000 and not researcher.fetcher.limits.allow_private
    await researcher.aclose()
    brave = build_researcher(load_settings({"REALTIME_SEARCH_BACKEND": "brave", "REALTIME_BRAVE_API_KEY": "k"}))
    assert brave is not None and isinstance(brave.search_backend, BraveSearch)
    await brave.aclose()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REALTIME_SEARCH_BACKEND": "google"}, "REALTIME_SEARCH_BACKEND"),
        ({"REALTIME_SEARCH_BACKEND": "searxng"}, "REALTIME_SEARXNG_URL"),
        ({"REALTIME_SEARCH_BACKEND": "brave"}, "REALTIME_BRAVE_API_KEY"),
        ({"REALTIME_RESEARCH_MAX_SOURCES": "0"}, "REALTIME_RESEARCH_MAX_SOURCES"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    """A bad or missing value fails at start, naming the variable."""
    with pytest.raises(ConfigError, match=names):
        load_settings(env)
