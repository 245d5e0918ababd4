"""The research turn's pure parts (no I/O): when to research, the planning prompt and its parsing, the
numbered sources and the context the answer is written from, and the [n] citations back to sources."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_QUERY_CHARS = 200

# "Fresh facts": words that say the answer depends on what is true now, or that ask for a web search.
_FRESH = re.compile(
    r"\b(today|tonight|yesterday|tomorrow|this (?:week|month|year|morning|evening)|right now|currently|current|"
    r"latest|newest|recent|recently|news|headlines?|breaking|live|score|scores|weather|forecast|price|prices|"
    r"stock|stocks|exchange rate|release date|released|election|search (?:the web|online|for)|look (?:it )?up|"
    r"google|web search|20[2-9]\d)\b",
    re.IGNORECASE,
)

PLAN_INSTRUCTIONS = (
    "You plan web searches for a voice assistant. Given the user's question, reply with JSON only: "
    '{"queries": ["...", "..."]} holding 1 to %d short web search queries (a few keywords each) whose '
    "results would answer it. Resolve words like 'it' or 'today' from the conversation."
)

MAX_PLANNED_QUERY_CHARS = 80  # in the schema: a grammar-constrained model cannot ramble on in one query


def plan_schema(max_queries: int) -> dict[str, Any]:
    """The JSON schema of a plan (Ollama `format`): the upstream constrains the model's output to it."""
    query = {"type": "string", "minLength": 2, "maxLength": MAX_PLANNED_QUERY_CHARS}
    queries = {"type": "array", "items": query, "minItems": 1, "maxItems": max_queries}
    return {"type": "object", "properties": {"queries": queries}, "required": ["queries"]}


ANSWER_INSTRUCTIONS = (
    "Answer the user's question from the numbered web sources below, briefly, for speech. After each "
    "sentence that uses a source, cite it with its number in square brackets, like [1]. Cite only the "
    "numbers given. If the sources do not answer the question, say so."
)
NO_SOURCES = (
    "A web search was made for the user's question, but no usable page was found. Say briefly that the "
    "search found nothing to answer from, and answer only if you are sure, without citations."
)

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def wants_research(text: str) -> bool:
    """The cheap "fresh facts" test of research mode `auto`: keywords about now, news, prices, or asking
    for a search. Deliberately simple (no model call): a false positive costs a search, a miss an answer
    from the model's own knowledge."""
    return bool(_FRESH.search(text))


def plan_messages(question: str, context: Sequence[str], max_queries: int) -> list[dict[str, str]]:
    """The planning request: the instructions, the last few turns for context, the question."""
    earlier = "\n".join(context)
    prompt = f"Conversation so far:\n{earlier}\n\nQuestion: {question}" if earlier else f"Question: {question}"
    return [{"role": "system", "content": PLAN_INSTRUCTIONS % max_queries}, {"role": "user", "content": prompt}]


def parse_plan(reply: str, question: str, max_queries: int) -> list[str]:
    """The queries of the model's JSON plan: strings, trimmed, deduplicated, at most `max_queries`. A plan
    that is not usable (small models are weak planners) falls back to the question itself."""
    queries: list[str] = []
    try:
        plan = json.loads(reply)
    except ValueError:
        plan = _salvage(reply)
    raw = plan.get("queries") if isinstance(plan, dict) else plan if isinstance(plan, list) else None
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, str):
            continue
        query = " ".join(item.split())[:MAX_QUERY_CHARS]
        if len(query) >= 2 and query.lower() not in (q.lower() for q in queries):
            queries.append(query)
    if not queries:
        queries = [" ".join(question.split())[:MAX_QUERY_CHARS]]
    return queries[:max_queries]


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _salvage(reply: str) -> list[str] | None:
    """The complete strings of a plan cut short (the token limit hit inside the list): `{"queries": ["a", "b`
    -> ["a"]."""
    start = reply.find("[")
    if start < 0:
        return None
    out = []
    for match in _JSON_STRING.finditer(reply, start):
        try:
            out.append(json.loads(match.group(0)))
        except ValueError:
            continue
    return out


@dataclass(frozen=True, slots=True)
class Source:
    """A page the answer may cite as [n]."""

    n: int
    url: str
    title: str
    text: str

    def to_wire(self) -> dict[str, Any]:
        return {"n": self.n, "url": self.url, "title": self.title}


def url_key(url: str) -> str:
    """The same page under small differences (fragment, trailing slash, host case) has one key."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def dedupe(urls: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for url in urls:
        key = url_key(url)
        if key not in seen:
            seen.add(key)
            out.append(url)
    return out


def context_text(sources: Sequence[Source]) -> str:
    """The system message the answer is written from: the instructions, then each source as
    `[n] title (url)` and its text."""
    if not sources:
        return NO_SOURCES
    parts = [ANSWER_INSTRUCTIONS, ""]
    for source in sources:
        parts.append(f"[{source.n}] {source.title} ({source.url})")
        parts.append(source.text)
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def cited(answer: str, sources: Sequence[Source]) -> list[Source]:
    """The sources `answer` cites as [n] or [n, m], first citation first; unknown numbers are ignored."""
    by_n = {s.n: s for s in sources}
    out: list[Source] = []
    for match in _CITATION.finditer(answer):
        for raw in match.group(1).split(","):
            source = by_n.get(int(raw))
            if source is not None and source not in out:
                out.append(source)
    return out
