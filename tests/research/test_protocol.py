"""The research fields of the protocol: `research` in the settings object, the two research events."""

from __future__ import annotations

import pytest

from realtime.errors import InvalidMessage
from realtime.protocol import server_events as ev
from realtime.protocol.client_events import ResponseCreate, SessionUpdate, parse_client_event


@pytest.mark.parametrize(
    ("value", "mode"), [(True, "on"), (False, "off"), ("on", "on"), ("off", "off"), ("auto", "auto"), (None, None)]
)
def test_research_setting_values(value: object, mode: str | None) -> None:
    """research: a boolean (short for "on"/"off"), "on", "off", "auto", or null (the server default)."""
    create = parse_client_event({"type": "response.create", "response": {"research": value}})
    assert create == ResponseCreate({"research": mode})
    update = parse_client_event({"type": "session.update", "session": {"research": value}})
    assert update == SessionUpdate({"research": mode})


@pytest.mark.parametrize("value", ["yes", 1, "", {"on": True}])
def test_research_setting_rejects_other_values(value: object) -> None:
    """Anything else is invalid_event naming the field."""
    with pytest.raises(InvalidMessage) as caught:
        parse_client_event({"type": "response.create", "response": {"research": value}})
    assert caught.value.param == "response.research"


def test_research_events_on_the_wire() -> None:
    """Progress carries its stage (queries and sources when known); sources carry {n, url, title}."""
    progress = ev.research_progress("resp_2", "item_3", "searching", queries=["zorbium"])
    assert progress.to_wire(7) == {
        "type": "response.research.progress",
        "event_id": "evt_7",
        "seq": 7,
        "response_id": "resp_2",
        "item_id": "item_3",
        "stage": "searching",
        "queries": ["zorbium"],
    }
    reading = ev.research_progress("resp_2", "item_3", "reading", sources=4).to_wire(8)
    assert reading["sources"] == 4 and "queries" not in reading
    sources = ev.research_sources("resp_2", "item_3", [{"n": 1, "url": "https://a.example/", "title": "A"}])
    assert sources.to_wire(9)["sources"] == [{"n": 1, "url": "https://a.example/", "title": "A"}]
