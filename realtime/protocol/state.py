"""The connection's state table: one dict says which transitions exist (h11 style).

A transition not in the table is our bug, not the peer's: `apply` raises LocalProtocolError and leaves
the state unchanged. What the client may send in each state is in ACCEPTS.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    IDLE = "idle"  # open, nothing being generated
    RESPONDING = "responding"  # a response is streaming
    CLOSING = "closing"  # close started (either side); no new work accepted
    CLOSED = "closed"


class Trigger(Enum):
    RESPONSE_START = "response_start"
    RESPONSE_END = "response_end"  # completed, cancelled, failed or cut short
    CLOSE = "close"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.IDLE, Trigger.RESPONSE_START): State.RESPONDING,
    (State.RESPONDING, Trigger.RESPONSE_END): State.IDLE,
    (State.IDLE, Trigger.CLOSE): State.CLOSING,
    (State.RESPONDING, Trigger.CLOSE): State.CLOSING,
    (State.CLOSING, Trigger.RESPONSE_END): State.CLOSING,
    (State.CLOSING, Trigger.CLOSED): State.CLOSED,
}

# Client events handled in each state. In CLOSING and CLOSED nothing is handled: the link is going away.
# In RESPONDING a new user message or response.create supersedes the running response (it is cancelled).
_ALL = frozenset(
    {
        "session.update",
        "conversation.item.create",
        "response.create",
        "response.cancel",
        "tool.confirm",
        "tool.cancel",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.truncate",
        "conversation.item.delete",
        "models.status",
        "ping",
        "pong",
    }
)
ACCEPTS: dict[State, frozenset[str]] = {
    State.IDLE: _ALL,
    State.RESPONDING: _ALL,
    State.CLOSING: frozenset(),
    State.CLOSED: frozenset(),
}


class LocalProtocolError(Exception):
    """We tried a transition the table does not have: a bug in the server, never the client's fault."""


class ConnectionState:
    """Holds the current state; the only way to change it is `apply`."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = State.IDLE

    @property
    def state(self) -> State:
        return self._state

    def apply(self, trigger: Trigger) -> State:
        new = TRANSITIONS.get((self._state, trigger))
        if new is None:
            raise LocalProtocolError(f"no transition from {self._state.value} on {trigger.value}")
        self._state = new
        return new

    def accepts(self, event_type: str) -> bool:
        return event_type in ACCEPTS[self._state]
