"""Fixtures of the research tests: the loopback web (search APIs and pages), a server researching on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerFactory
from tests.research.web import FakeWeb
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def web() -> Iterator[FakeWeb]:
    """SearxNG and Brave APIs and the fixture pages on loopback (see tests/research/web.py)."""
    server = FakeWeb().start()
    yield server
    server.stop()


def research_env(web: FakeWeb, **extra: str) -> dict[str, str]:
    """Server settings for research against the loopback web (loopback pages allowed, small bounds)."""
    return {
        "search_backend": "searxng",
        "searxng_url": web.url,
        "research_allow_private": "true",
        "research_results_per_query": "8",
        "max_research_page_size": str(256 << 10),
        "research_page_timeout": "3",
        **extra,
    }


@pytest.fixture(scope="session")
def research_server(server_factory: ServerFactory, fake_ollama: FakeOllama, web: FakeWeb) -> ServerProcess:
    """The server with SearxNG research on the loopback web, and the scripted research-echo model."""
    return server_factory(ollama_url=fake_ollama.url, llm_model="research-echo", voice="off", **research_env(web))
