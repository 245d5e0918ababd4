"""The connection state table: every legal transition, and every illegal one refused without a change."""

from __future__ import annotations

import itertools

import pytest

from realtime.protocol.state import ACCEPTS, TRANSITIONS, ConnectionState, LocalProtocolError, State, Trigger


def _at(state: State) -> ConnectionState:
    """A ConnectionState driven to `state` through legal transitions only."""
    paths = {
        State.IDLE: [],
        State.RESPONDING: [Trigger.RESPONSE_START],
        State.CLOSING: [Trigger.CLOSE],
        State.CLOSED: [Trigger.CLOSE, Trigger.CLOSED],
    }
    conn = ConnectionState()
    for trigger in paths[state]:
        conn.apply(trigger)
    assert conn.state is state
    return conn


@pytest.mark.parametrize(("start", "trigger"), list(TRANSITIONS), ids=lambda x: x.value)
def test_legal_transition(start: State, trigger: Trigger) -> None:
    """Each transition in the table moves to its target state."""
    conn = _at(start)
    assert conn.apply(trigger) is TRANSITIONS[(start, trigger)]
    assert conn.state is TRANSITIONS[(start, trigger)]


ILLEGAL = [pair for pair in itertools.product(State, Trigger) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("start", "trigger"), ILLEGAL, ids=lambda x: x.value)
def test_illegal_transition_is_refused(start: State, trigger: Trigger) -> None:
    """A transition not in the table raises LocalProtocolError and leaves the state as it was."""
    conn = _at(start)
    with pytest.raises(LocalProtocolError):
        conn.apply(trigger)
    assert conn.state is start


def test_closed_is_terminal() -> None:
    """Nothing leaves CLOSED."""
    assert not [t for (s, t) in TRANSITIONS if s is State.CLOSED]


def test_nothing_is_handled_while_closing() -> None:
    """Once closing, no client event is acted on; while open, every event type is."""
    assert ACCEPTS[State.CLOSING] == frozenset() and ACCEPTS[State.CLOSED] == frozenset()
    assert ACCEPTS[State.IDLE] == ACCEPTS[State.RESPONDING]
    conn = _at(State.CLOSING)
    assert not conn.accepts("response.create")
    assert _at(State.IDLE).accepts("response.create")
