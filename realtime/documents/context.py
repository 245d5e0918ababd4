"""Passages to the model's context, and the model's [n] citations back to passages. Sans-I/O.

`build_context()` numbers the passages as sources [1], [2]... under an instruction to cite them as [n];
the session puts `DocumentContext.text` in the turn's context (a system message, or ahead of the user's
message for small models) and keeps `sources`. When the answer is complete, `cited_sources()` maps the
[n] markers in it back to those sources, so the client can show which document and passage each
citation names. A marker with a number that was not given is ignored, never invented into a source.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CITATION_INSTRUCTIONS = (
    "Use the numbered sources below to answer the user's question when they are relevant. "
    "After each sentence that uses a source, cite it with its number in square brackets, like [1]. "
    "If the sources do not contain the answer, say so instead of guessing, and cite nothing."
)
MAX_CONTEXT_CHARS = 6000

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@dataclass(frozen=True, slots=True)
class Passage:
    """A piece of a document given to the model. `document_id` is None for an attachment kept in memory."""

    document_id: str | None
    document_name: str
    ordinal: int
    text: str
    page: int | None = None
    section: str | None = None
    score: float | None = None

    @property
    def anchor(self) -> str:
        """Where in the document: its page, else its section, else its position."""
        if self.page is not None:
            return f"page {self.page}"
        if self.section:
            return f"section \u201c{self.section}\u201d"
        return f"passage {self.ordinal + 1}"

    def to_json(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "document_name": self.document_name,
            "ordinal": self.ordinal,
            "page": self.page,
            "section": self.section,
            "text": self.text,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Source:
    """A passage as the model sees it: number `n`, cited as [n]."""

    number: int
    passage: Passage

    @property
    def label(self) -> str:
        return f"{self.passage.document_name}, {self.passage.anchor}"

    def to_json(self) -> dict[str, Any]:
        return {"n": self.number, "label": self.label, **self.passage.to_json()}


@dataclass(frozen=True, slots=True)
class DocumentContext:
    """The text to give the model, the sources it numbers, and whether passages were left out for size."""

    text: str
    sources: tuple[Source, ...]
    truncated: bool = False

    def source(self, number: int) -> Source | None:
        return self.sources[number - 1] if 1 <= number <= len(self.sources) else None


EMPTY_CONTEXT = DocumentContext(text="", sources=())


def build_context(
    passages: Iterable[Passage],
    *,
    max_chars: int = MAX_CONTEXT_CHARS,
    instructions: str = CITATION_INSTRUCTIONS,
) -> DocumentContext:
    """Number the passages (in the order given, repeats dropped) within `max_chars` of passage text.

    A passage that does not fit is left out (`truncated`); the first one is cut to fit instead, so a
    single long passage still reaches the model."""
    sources: list[Source] = []
    seen: set[tuple[str | None, str, int]] = set()
    used = 0
    truncated = False
    for passage in passages:
        key = (passage.document_id, passage.document_name, passage.ordinal)
        if key in seen:
            continue
        seen.add(key)
        if used + len(passage.text) > max_chars:
            truncated = True
            if sources:
                continue
            passage = dataclasses.replace(passage, text=passage.text[: max(max_chars - 1, 0)] + "\u2026")
        sources.append(Source(len(sources) + 1, passage))
        used += len(passage.text)
    if not sources:
        return EMPTY_CONTEXT
    parts = [instructions, ""]
    for source in sources:
        parts.append(f"[{source.number}] {source.label}")
        parts.append(source.passage.text)
        parts.append("")
    return DocumentContext(text="\n".join(parts).rstrip() + "\n", sources=tuple(sources), truncated=truncated)


def citation_numbers(answer: str) -> list[int]:
    """The numbers cited as [n] or [n, m] in `answer`, first appearance first, each once."""
    out: list[int] = []
    for match in _CITATION.finditer(answer):
        for raw in match.group(1).split(","):
            number = int(raw)
            if number not in out:
                out.append(number)
    return out


def cited_sources(answer: str, sources: Sequence[Source] | DocumentContext) -> list[Source]:
    """The sources that `answer` cites, in the order it first cites them; unknown numbers are ignored."""
    given = sources.sources if isinstance(sources, DocumentContext) else tuple(sources)
    by_number = {s.number: s for s in given}
    return [by_number[n] for n in citation_numbers(answer) if n in by_number]
