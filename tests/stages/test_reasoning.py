"""The <think> splitter: reasoning never leaks into the answer, however the stream is chunked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.stages.reasoning import Part, ThinkSplitter


def _run(chunks: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    pieces = [p for c in chunks for p in splitter.feed(c)] + splitter.flush()
    reasoning = "".join(t for part, t in pieces if part is Part.REASONING)
    answer = "".join(t for part, t in pieces if part is Part.ANSWER)
    return reasoning, answer


TEXT = "<think>The user says hi.\nI should greet.</think>\n\nHello there! <b>ok</b>"


def test_whole_text() -> None:
    """Tags are removed; reasoning and answer come apart; the answer's leading blank lines are dropped."""
    assert _run([TEXT]) == ("The user says hi.\nI should greet.", "Hello there! <b>ok</b>")


def test_every_two_way_split() -> None:
    """Splitting the stream at any single point gives the same result as one chunk."""
    expected = _run([TEXT])
    for i in range(len(TEXT) + 1):
        assert _run([TEXT[:i], TEXT[i:]]) == expected, i


def test_character_by_character() -> None:
    """One character per chunk still splits exactly."""
    assert _run(list(TEXT)) == _run([TEXT])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=12))
def test_any_chunking(cuts: list[int]) -> None:
    """Any chunking of the stream gives the same reasoning and answer."""
    points = sorted(set(cuts))
    chunks = [TEXT[a:b] for a, b in zip([0, *points], [*points, len(TEXT)], strict=True)]
    assert _run(chunks) == _run([TEXT])


def test_no_tags_is_all_answer() -> None:
    """Text without tags is all answer, including a '<' that never becomes a tag."""
    assert _run(["a < b and <thin", "g> is fine"]) == ("", "a < b and <thing> is fine")


def test_unclosed_think_stays_reasoning() -> None:
    """A stream that ends inside <think> keeps that text as reasoning, never answer."""
    assert _run(["<think>still thinking about <", "/thi"]) == ("still thinking about </thi", "")


def test_partial_open_tag_at_end_is_answer() -> None:
    """A held-back '<thi' at the end of the stream is released as answer text."""
    assert _run(["Hi <thi"]) == ("", "Hi <thi")
