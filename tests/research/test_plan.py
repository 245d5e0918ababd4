"""The research turn's pure parts: when to research, the plan, the numbered context, the citations."""

from __future__ import annotations

import pytest

from realtime.research import Source, cited, parse_plan, wants_research
from realtime.research.plan import context_text, dedupe


@pytest.mark.parametrize(
    "text",
    [
        "What's the weather in Paris today?",
        "latest news on the election",
        "What is the current price of gold?",
        "Can you search the web for zorbium?",
        "Who won the match in 2026?",
    ],
)
def test_fresh_facts_want_research(text: str) -> None:
    """Questions about now, news, prices, or asking for a search choose research in auto mode."""
    assert wants_research(text)


@pytest.mark.parametrize("text", ["Hello!", "Tell me a story about a dragon.", "What is 2 + 2?", "Translate 'cat'"])
def test_timeless_questions_do_not(text: str) -> None:
    """Small talk and timeless questions are answered without searching."""
    assert not wants_research(text)


@pytest.mark.parametrize(
    ("reply", "queries"),
    [
        ('{"queries": ["zorbium melting point", "zorbium alloy"]}', ["zorbium melting point", "zorbium alloy"]),
        ('{"queries": ["a  b ", "A B", "c d", "e f", "g h"]}', ["a b", "c d", "e f"]),
        ('["zorbium facts"]', ["zorbium facts"]),
        (
            '{"queries": ["zorbium melting point", "zorbium \\"alloy\\"", "zorb',
            ["zorbium melting point", 'zorbium "alloy"'],
        ),
        ('{"queries": []}', ["What is zorbium?"]),
        ('{"queries": [1, null, "x"]}', ["What is zorbium?"]),
        ("Sure! Here are some queries: zorbium", ["What is zorbium?"]),
        ("", ["What is zorbium?"]),
    ],
)
def test_plan_parsing_falls_back_to_the_question(reply: str, queries: list[str]) -> None:
    """The plan's queries are cleaned, deduplicated and capped; an unusable plan searches for the question."""
    assert parse_plan(reply, "What is zorbium?", 3) == queries


def test_dedupe_keeps_the_first_of_the_same_page() -> None:
    """Fragments, trailing slashes and host case do not make a page twice."""
    urls = ["http://A.example/x/#top", "http://a.example/x", "http://a.example/y", "https://a.example/x"]
    assert dedupe(urls) == ["http://A.example/x/#top", "http://a.example/y", "https://a.example/x"]


def test_context_numbers_sources_and_citations_map_back() -> None:
    """Sources appear as [n] title (url) with their text; [n] in the answer maps back, unknown numbers ignored."""
    sources = [Source(1, "http://a/1", "One", "First text."), Source(2, "http://a/2", "Two", "Second text.")]
    text = context_text(sources)
    assert "[1] One (http://a/1)\nFirst text." in text and "[2] Two (http://a/2)\nSecond text." in text
    assert cited("As [2] says, and [1, 2] and [7].", sources) == [sources[1], sources[0]]
    assert "no usable page" in context_text([])
