"""Extracted blocks to retrieval chunks: paragraphs packed up to a target size, with a sentence overlap.

A chunk never spans two PDF pages or two sections, so every chunk has one anchor a citation can name
("page 3", "section Maintenance"). Paragraphs are packed in order until the next would pass
`target_chars`; a paragraph longer than that is cut at sentence ends (at word ends for a sentence that
is itself too long). Each chunk after the first of its group starts with the last
sentences of the one before, up to `overlap_chars`, so a fact cut at a boundary is whole in one of
them. The sizes keep a chunk within the embedding model's 256 tokens (about 1,000 characters of
English). Pure functions: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import groupby

from realtime.documents.extract import Block, ExtractedDocument

TARGET_CHARS = 700
MAX_CHARS = 950
OVERLAP_CHARS = 150

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrieval unit of a document: its position (0-based ordinal), text and anchor."""

    ordinal: int
    text: str
    page: int | None = None
    section: str | None = None

    def embedding_text(self) -> str:
        """What is embedded: the section's heading gives a short paragraph its topic."""
        return f"{self.section}\n{self.text}" if self.section else self.text


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def _pieces(text: str, max_chars: int) -> list[str]:
    """`text` in pieces of at most `max_chars`: whole sentences packed together, long sentences cut at words."""
    if len(text) <= max_chars:
        return [text]
    out: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        parts = [sentence] if len(sentence) <= max_chars else _wrap(sentence, max_chars)
        for part in parts:
            if current and len(current) + 1 + len(part) > max_chars:
                out.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    if current:
        out.append(current)
    return out


def _wrap(text: str, max_chars: int) -> list[str]:
    out: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:  # no spaces at all: cut it
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def _overlap(text: str, overlap_chars: int) -> str:
    """The last whole sentences of `text` that fit in `overlap_chars` ("" if even the last one does not)."""
    taken: list[str] = []
    size = 0
    for sentence in reversed(split_sentences(text)):
        if size + len(sentence) + 1 > overlap_chars:
            break
        taken.append(sentence)
        size += len(sentence) + 1
    if len(taken) == len(split_sentences(text)):
        return ""  # the whole piece: repeating it would add nothing
    return " ".join(reversed(taken))


def chunk_blocks(
    blocks: tuple[Block, ...] | list[Block],
    *,
    target_chars: int = TARGET_CHARS,
    max_chars: int = MAX_CHARS,
    overlap_chars: int = OVERLAP_CHARS,
) -> list[Chunk]:
    """Chunks in document order, ordinals 0, 1, 2...; headings become the `section` of what follows."""
    if not 0 <= overlap_chars < target_chars <= max_chars:
        raise ValueError("need 0 <= overlap_chars < target_chars <= max_chars")
    chunks: list[Chunk] = []
    body = [b for b in blocks if not b.heading]
    for (page, section), group in groupby(body, key=lambda b: (b.page, b.section)):
        # a paragraph over the target is cut so that a piece and the carried overlap still fit the target
        step = target_chars - overlap_chars
        pieces = [p for b in group for p in (_pieces(b.text, step) if len(b.text) > target_chars else [b.text])]
        current: list[str] = []
        size = 0
        for piece in pieces:
            if current and size + 2 + len(piece) > target_chars:
                chunks.append(Chunk(len(chunks), "\n\n".join(current), page, section))
                carried = _overlap(current[-1], overlap_chars)
                if carried and len(carried) + 2 + len(piece) <= max_chars:
                    current, size = [carried], len(carried)
                else:
                    current, size = [], 0
            size += len(piece) + (2 if current else 0)
            current.append(piece)
        if current:
            chunks.append(Chunk(len(chunks), "\n\n".join(current), page, section))
    return chunks


def chunk_document(document: ExtractedDocument, **sizes: int) -> list[Chunk]:
    return chunk_blocks(document.blocks, **sizes)
