"""Answer text to speakable pieces: clause first, then sentences; markdown, code and URLs made speakable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.speaker import SpokenPiece, heard_text
from realtime.stages.chunker import SpeechChunker, speakable

ANSWER = (
    "Sure! Here is **what** you need, in short: Paris has 2,172,000 people. Dr. Smith agrees. "
    "See [the report](https://example.org/r) or https://www.insee.fr/en/stats for more.\n\n"
    "- First item\n- Second item\n\n```python\nprint('code is never spoken')\n```\nThat is all 😀."
)
EXPECTED = [
    "Sure! Here is what you need,",
    "in short: Paris has 2,172,000 people.",
    "Dr. Smith agrees.",
    "See the report or insee.fr for more.",
    "First item",
    "Second item",
    "That is all.",
]


def _run(chunks: list[str]) -> list[str]:
    chunker = SpeechChunker()
    out = [p for c in chunks for p in chunker.feed(c)]
    return out + chunker.flush()


def test_pieces_of_a_markdown_answer() -> None:
    """First clause (at least 3 words) first, then sentences and lines; code skipped; links read as text."""
    assert _run([ANSWER]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=15))
def test_any_token_split_gives_the_same_pieces(cuts: list[int]) -> None:
    """However the model's tokens split the text, the pieces are the same."""
    points = sorted(set(cuts))
    chunks = [ANSWER[a:b] for a, b in zip([0, *points], [*points, len(ANSWER)], strict=True)]
    assert _run(chunks) == EXPECTED


def test_first_piece_is_cut_when_no_clause_ends() -> None:
    """A first clause that runs on is cut after 8 words; later text waits for a sentence end."""
    chunker = SpeechChunker()
    assert chunker.feed("one two three four five six seven eight nine ten") == [
        "one two three four five six seven eight"
    ]
    assert chunker.feed(" eleven, twelve") == []


def test_the_first_cut_never_leaves_a_word_leaning_on_the_next() -> None:
    """Past the cap (5 here) the cut moves on (at most 3 words) until the piece does not end on a function
    word or a number, so "in the" | "east" and "7" | "days" are not split."""
    cases = {
        "The sun rises in the east every morning for us.": "The sun rises in the east",
        "A week is approximately 7 days and more than that.": "A week is approximately 7 days",
        "The first letter of the alphabet is usually A.": "The first letter of the alphabet",
        "one two three four the of a in five six": "one two three four the of a in",  # 3 more at most
    }
    for text, first in cases.items():
        chunker = SpeechChunker(first_max_words=5)
        pieces = [p for word in text.split(" ") for p in chunker.feed(word + " ")]
        assert pieces[0] == first


def test_the_first_piece_length_is_a_setting() -> None:
    chunker = SpeechChunker(first_max_words=5)
    assert chunker.feed("one two three four five six seven eight nine ten") == ["one two three four five"]


def test_force_cuts_at_a_word_boundary() -> None:
    """The time limit cuts at the last whole word, and only with enough words."""
    chunker = SpeechChunker()
    assert chunker.feed("ab") == [] and chunker.force() == []
    chunker.feed("out he went into the col")
    assert chunker.force() == ["about he went into the"]
    assert chunker.flush() == ["col"]


def test_numbers_and_abbreviations_are_not_split() -> None:
    """'2,172,000' and 'e.g.' do not end a piece; a symbol-only piece is never spoken."""
    assert _run(["We counted 2,172,000 birds, e.g. gulls and terns. ***"]) == [
        "We counted 2,172,000 birds,",
        "e.g. gulls and terns.",
    ]


def test_speakable_strips_markup() -> None:
    """Headings, emphasis, bullets and emoji go; words stay."""
    assert speakable("## **Bold** _move_ → `x` 🎉") == "Bold move x"


def test_heard_text_cuts_at_the_playback_position() -> None:
    """History keeps the whole pieces played and the started piece's words pro rata."""
    pieces = [SpokenPiece("Once upon a time,", 0, 1000), SpokenPiece("there lived an old fisherman.", 1000, 3000)]
    assert heard_text(pieces, 3000) == "Once upon a time, there lived an old fisherman."
    assert heard_text(pieces, 2000) == "Once upon a time, there lived"
    assert heard_text(pieces, 500) == "Once upon"
    assert heard_text(pieces, 0) == ""
