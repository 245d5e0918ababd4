"""Chunking: paragraphs packed to size in order, never across a page or section, with a sentence overlap."""

from __future__ import annotations

import pytest

from realtime.documents import Block, chunk_blocks
from realtime.documents.chunking import MAX_CHARS, split_sentences


def _sentences(tag: str, count: int) -> str:
    return " ".join(f"Sentence {tag}-{i} tells one small fact about the pump." for i in range(count))


def test_short_paragraphs_are_packed_together() -> None:
    """Short paragraphs of one section share a chunk, in order, separated by a blank line."""
    chunks = chunk_blocks([Block("One.", section="A"), Block("Two.", section="A"), Block("Three.", section="A")])
    assert [(c.ordinal, c.text, c.section) for c in chunks] == [(0, "One.\n\nTwo.\n\nThree.", "A")]


def test_chunks_never_span_pages_or_sections() -> None:
    """A new page or a new heading starts a new chunk, so each chunk has one anchor."""
    blocks = [
        Block("Page one text.", page=1),
        Block("Page two text.", page=2),
        Block("Intro", section="Intro", heading=True),
        Block("In the intro.", section="Intro"),
        Block("Setup", section="Setup", heading=True),
        Block("In setup.", section="Setup"),
    ]
    chunks = chunk_blocks(blocks)
    assert [(c.text, c.page, c.section) for c in chunks] == [
        ("Page one text.", 1, None),
        ("Page two text.", 2, None),
        ("In the intro.", None, "Intro"),
        ("In setup.", None, "Setup"),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert chunks[2].embedding_text() == "Intro\nIn the intro."


def test_long_text_is_split_at_sentences_with_overlap() -> None:
    """A long section becomes chunks within the size limit, cut between sentences; each later chunk starts
    with the previous one's last sentences, and no sentence is lost."""
    text = _sentences("a", 40)
    chunks = chunk_blocks([Block(text, section="S")], target_chars=600, max_chars=800, overlap_chars=120)
    assert len(chunks) > 3
    assert all(len(c.text) <= 800 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        carried = after.text.split("\n\n")[0]
        assert carried.endswith(split_sentences(before.text)[-1]) and len(carried) <= 120
    covered = {s for c in chunks for s in split_sentences(c.text)}
    assert covered == set(split_sentences(text))


def test_a_sentence_without_ends_is_cut_at_words() -> None:
    """A run-on 'sentence' longer than the limit is cut at spaces; a word longer still is cut itself."""
    words = " ".join(["lorem"] * 400)
    chunks = chunk_blocks([Block(words), Block("x" * 2500)])
    assert all(len(c.text) <= MAX_CHARS for c in chunks)
    assert "".join(c.text for c in chunks).count("x") == 2500


def test_sizes_are_checked() -> None:
    """An overlap as large as the target would never progress: refused."""
    with pytest.raises(ValueError):
        chunk_blocks([Block("x")], target_chars=100, max_chars=200, overlap_chars=100)
