"""The writer's rule for sending queued deltas as one (`server_events.joined`)."""

from __future__ import annotations

from realtime.protocol import server_events as ev


def test_text_deltas_of_one_item_join_in_order() -> None:
    both = ev.joined(ev.text_delta("resp_1", "item_1", "Hel"), ev.text_delta("resp_1", "item_1", "lo"))
    assert both is not None
    assert both.type == "response.text.delta"
    assert dict(both.fields) == {"response_id": "resp_1", "item_id": "item_1", "delta": "Hello"}


def test_reasoning_deltas_join_too() -> None:
    both = ev.joined(ev.reasoning_delta("resp_1", "item_1", "a "), ev.reasoning_delta("resp_1", "item_1", "b"))
    assert both is not None and both.fields["delta"] == "a b"


def test_different_kinds_responses_or_items_never_join() -> None:
    text = ev.text_delta("resp_1", "item_1", "x")
    for other in (
        ev.reasoning_delta("resp_1", "item_1", "x"),  # reasoning stays apart from the answer
        ev.text_delta("resp_2", "item_1", "x"),
        ev.text_delta("resp_1", "item_2", "x"),
        ev.response_created("resp_1", "item_1", "m"),
        ev.error("bad", "no"),
    ):
        assert ev.joined(text, other) is None
        assert ev.joined(other, text) is None


def test_a_joined_delta_stays_small() -> None:
    big = ev.text_delta("resp_1", "item_1", "a" * (ev.MAX_JOINED_DELTA - 1))
    assert ev.joined(big, ev.text_delta("resp_1", "item_1", "b")) is not None
    assert ev.joined(big, ev.text_delta("resp_1", "item_1", "bc")) is None
