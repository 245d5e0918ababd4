"""The context builder: passages numbered as sources within a budget, and [n] citations mapped back."""

from __future__ import annotations

from realtime.documents import CITATION_INSTRUCTIONS, EMPTY_CONTEXT, Passage, build_context, cited_sources
from realtime.documents.context import citation_numbers

MANUAL = Passage("d1", "manual.pdf", 3, "Prime the pump with two litres of water.", page=2)
GUIDE = Passage("d2", "guide.md", 0, "Replace the impeller every 400 hours.", section="Maintenance")
NOTES = Passage(None, "notes.txt", 4, "Keep the receipt.")


def test_sources_are_numbered_with_their_anchors() -> None:
    """Each passage becomes [n] with its document and page, section or position, after the instructions."""
    context = build_context([MANUAL, GUIDE, NOTES])
    assert context.text.startswith(CITATION_INSTRUCTIONS)
    assert "[1] manual.pdf, page 2\nPrime the pump" in context.text
    assert "[2] guide.md, section \u201cMaintenance\u201d\nReplace the impeller" in context.text
    assert "[3] notes.txt, passage 5\nKeep the receipt." in context.text
    assert [s.number for s in context.sources] == [1, 2, 3] and not context.truncated
    assert context.sources[0].to_json()["label"] == "manual.pdf, page 2"


def test_repeats_are_dropped_and_the_budget_kept() -> None:
    """The same passage twice is one source; passages past the budget are left out and flagged."""
    context = build_context([MANUAL, MANUAL, GUIDE, NOTES], max_chars=len(MANUAL.text) + len(GUIDE.text))
    assert [s.passage for s in context.sources] == [MANUAL, GUIDE] and context.truncated


def test_a_single_long_passage_is_cut_to_fit() -> None:
    """The first passage alone over the budget still reaches the model, cut."""
    context = build_context([Passage("d", "big.txt", 0, "word " * 1000)], max_chars=100)
    assert len(context.sources[0].passage.text) == 100 and context.truncated


def test_nothing_to_give_is_the_empty_context() -> None:
    """No passages: no text at all (the turn is sent as it is)."""
    assert build_context([]) is EMPTY_CONTEXT and EMPTY_CONTEXT.text == ""


def test_citations_map_back_to_sources() -> None:
    """[n] and [n, m] markers give their sources in first-cited order; unknown numbers are ignored."""
    context = build_context([MANUAL, GUIDE, NOTES])
    answer = "Prime it first [1]. Change the impeller [2, 1]. See also [7] and [3][2]."
    assert citation_numbers(answer) == [1, 2, 7, 3]
    assert [s.passage.document_name for s in cited_sources(answer, context)] == ["manual.pdf", "guide.md", "notes.txt"]
    assert cited_sources("No sources used.", context) == []
    assert context.source(2) is context.sources[1] and context.source(9) is None
