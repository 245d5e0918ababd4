"""Property tests (hypothesis) of the sans-I/O protocol: codecs, client event parsing, state table, heartbeat.

Complements tests/protocol/test_fuzz.py (arbitrary input never escapes as a crash) with the properties
that make the decoders trustworthy: valid events survive both encodings unchanged, every refusal is a
documented error whose error event can be sent, and the state table and heartbeat keep their rules
over any sequence of steps.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from realtime import errors
from realtime.protocol.client_events import INPUT_SAMPLE_RATES, MAX_SAFE_INTEGER, parse_client_event
from realtime.protocol.codec import Encoding, encode_frame
from realtime.protocol.fields import safe_text
from realtime.protocol.heartbeat import MAX_OUTSTANDING, Due, Heartbeat
from realtime.protocol.state import ACCEPTS, TRANSITIONS, ConnectionState, LocalProtocolError, State, Trigger
from tests.fuzz import harness

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- valid client events, as a client would put them on the wire ----------------------------------

text = st.text(max_size=30)  # hypothesis never generates lone surrogates here: valid Unicode only
ids = st.text(min_size=1, max_size=64)
settings_values: dict[str, st.SearchStrategy[Any]] = {
    "model": st.text(min_size=1, max_size=40).filter(str.strip),
    "instructions": st.none() | text,
    "temperature": st.none() | st.floats(0.0, 2.0) | st.integers(0, 2),
    "max_output_tokens": st.none() | st.integers(1, 1_000_000),
    "reasoning": st.none() | st.booleans(),
}
audio_format = st.fixed_dictionaries(
    {"sample_rate": st.sampled_from(sorted(INPUT_SAMPLE_RATES))}, optional={"type": st.just("pcm16")}
)
turn_detection = st.fixed_dictionaries(
    {"type": st.just("server_vad")},
    optional={
        "threshold": st.floats(0.05, 0.95),
        "prefix_padding_ms": st.integers(0, 2_000),
        "silence_duration_ms": st.integers(100, 10_000),
        "min_speech_duration_ms": st.integers(0, 2_000),
        "segment_pause_ms": st.integers(64, 10_000),
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
        "interrupt_min_speech_ms": st.integers(0, 5_000),
    },
)
session_values = {
    **settings_values,
    "conversation_id": st.none() | st.text(max_size=64),
    "input_audio_format": st.none() | audio_format,
    "output_audio_format": st.none() | audio_format,
    "turn_detection": st.none() | turn_detection,
    "input_audio_transcription": st.none()
    | st.fixed_dictionaries({}, optional={"language": st.none() | st.text(max_size=16), "partials": st.booleans()}),
}


def _event(type_: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(type_), **fields}, optional={"event_id": ids})


def _item() -> st.SearchStrategy[dict[str, Any]]:
    def with_role(role: str) -> st.SearchStrategy[dict[str, Any]]:
        kind = "output_text" if role == "assistant" else "input_text"
        part = st.fixed_dictionaries({"type": st.just(kind), "text": text})
        return st.fixed_dictionaries(
            {"role": st.just(role), "content": st.lists(part, min_size=1, max_size=16)},
            optional={"type": st.just("message")},
        )

    return st.sampled_from(["user", "assistant", "system"]).flatmap(with_role)


wire_events = st.one_of(
    _event("session.update", {"session": st.fixed_dictionaries({}, optional=session_values)}),
    _event("conversation.item.create", {"item": _item()}),
    _event("response.create", {}),
    _event("response.create", {"response": st.fixed_dictionaries({}, optional=settings_values)}),
    _event("response.cancel", {}),
    _event("response.cancel", {"response_id": st.text(max_size=64)}),
    _event("input_audio_buffer.append", {"audio": st.binary(max_size=64)}),
    _event("input_audio_buffer.commit", {}),
    _event("input_audio_buffer.clear", {}),
    _event("models.status", {}),
    _event(
        "conversation.item.truncate",
        {"item_id": st.text(max_size=64), "audio_end_ms": st.integers(0, MAX_SAFE_INTEGER)},
    ),
    _event("ping", {"ts": st.integers(0, MAX_SAFE_INTEGER)}),
    _event("pong", {"ts": st.integers(0, MAX_SAFE_INTEGER)}),
)


@QUICK
@given(wire_events, st.sampled_from(list(Encoding)))
def test_documented_events_are_accepted_and_survive_a_round_trip(wire: dict[str, Any], encoding: Encoding) -> None:
    """Any event built by the rules of docs/protocol.md §4.1 parses, and re-encodes to the same event."""
    event = harness.decode_and_parse(encode_frame(wire, encoding), encoding)
    assert event is not None, f"a documented event was refused: {wire}"
    assert wire["type"] == event.TYPE and getattr(event, "event_id", None) == wire.get("event_id")


@QUICK
@given(wire_events)
def test_both_encodings_give_the_same_event(wire: dict[str, Any]) -> None:
    """The msgpack and the JSON frame of one event parse to equal events."""
    events = [harness.decode_and_parse(encode_frame(wire, enc), enc) for enc in Encoding]
    assert events[0] == events[1]


@QUICK
@given(wire_events, st.sampled_from(["extra", "Type", "session.x"]), st.integers() | st.text(max_size=3))
def test_an_unknown_field_is_refused_and_named(wire: dict[str, Any], key: str, value: Any) -> None:
    """An event with one field added that the protocol does not list is refused (invalid_event), naming it."""
    bad = {**wire, key: value}
    try:
        parse_client_event(bad)
    except errors.InvalidMessage as exc:
        assert exc.code == "invalid_event" and exc.param is not None and key in exc.param
    else:
        raise AssertionError(f"accepted an unknown field: {bad}")


@QUICK
@given(st.binary(max_size=512))
def test_any_bytes_are_refused_with_a_documented_sendable_error(data: bytes) -> None:
    """Arbitrary bytes (as msgpack, and as JSON text) are a valid event or a documented, sendable error."""
    harness.target_msgpack(data)
    harness.target_json(data)


@QUICK
@given(wire_events, st.data())
def test_mutated_valid_frames(wire: dict[str, Any], data: st.DataObject) -> None:
    """A valid frame with bytes flipped, cut or appended is a valid event or a documented error."""
    frame = bytearray(encode_frame(wire, Encoding.MSGPACK))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    harness.target_msgpack(bytes(frame))
    harness.target_msgpack(bytes(frame[:cut]))
    text = encode_frame(wire, Encoding.JSON)
    assert isinstance(text, str)
    harness.target_json(text[:cut].encode() + bytes(frame[cut:]))


NUMBER_FIELDS = {
    "session.update": ("session", ["temperature", "max_output_tokens"]),
    "response.create": ("response", ["temperature", "max_output_tokens"]),
}
huge_numbers = st.integers(-(10**400), 10**400) | st.floats(allow_nan=False) | st.integers(-(2**70), 2**70)


@QUICK
@given(st.sampled_from(sorted(NUMBER_FIELDS)), st.data(), huge_numbers)
def test_numbers_of_any_size_are_accepted_or_refused(type_: str, data: st.DataObject, number: int | float) -> None:
    """JSON numbers are unbounded (a 400-digit integer is valid JSON): in any number field they give an event
    or invalid_event, never an overflow."""
    obj, names = NUMBER_FIELDS[type_]
    name = data.draw(st.sampled_from(names))
    text = f'{{"type":"{type_}","{obj}":{{"{name}":{number!r}}}}}'.replace("inf", "1e999")
    harness.target_json(text.encode())
    nested = (
        f'{{"type":"session.update","session":{{"turn_detection":{{"type":"server_vad","threshold":{number!r}}}}}}}'
    )
    harness.target_json(nested.replace("inf", "1e999").encode())
    ping = f'{{"type":"ping","ts":{number!r}}}'.replace("inf", "1e999")
    harness.target_json(ping.encode())


@QUICK
@given(st.text(max_size=200) | st.text(alphabet=st.characters(categories=["Cs"]), max_size=20), st.integers(1, 80))
def test_safe_text_is_bounded_and_encodable(value: str, limit: int) -> None:
    """What an error message echoes of client text is UTF-8 encodable and bounded (even lone surrogates)."""
    out = safe_text(value, limit)
    out.encode("utf-8")
    assert len(out) <= 10 * limit + 3  # a lone surrogate becomes a 10-character \\U escape at most


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def test_every_error_a_client_can_get_is_documented() -> None:
    """Each ClientError code the /ws session can send (errors, session, listener, registry) appears in
    docs/protocol.md §8, and so in the harness checks; the close codes the harness allows are §9's."""
    import realtime.listener
    import realtime.registry
    import realtime.session

    modules = {m.__name__ for m in (errors, realtime.listener, realtime.registry, realtime.session)}
    never_sent = {"invalid_request", "limit_exceeded", "unauthorized"}  # base classes; HTTP 401 only (§8)
    codes = {cls.code for cls in _subclasses(errors.ClientError) if cls.__module__ in modules} - never_sent
    assert {"malformed_frame", "invalid_audio", "too_many_sessions", "conversation_not_found"} <= codes
    assert codes <= harness.documented_error_codes(), codes - harness.documented_error_codes()
    assert {1002, 1007, 1009, 1011, 4003} <= harness.documented_close_codes()


# ---- the state table, walked at random ------------------------------------------------------------


class StateTableWalk(RuleBasedStateMachine):
    """Any sequence of triggers: legal ones move as the table says, illegal ones change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ConnectionState()
        self.model = State.IDLE

    @rule(trigger=st.sampled_from(list(Trigger)))
    def apply(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.model, trigger))
        if target is None:
            try:
                self.conn.apply(trigger)
            except LocalProtocolError:
                return
            raise AssertionError(f"{self.model} accepted {trigger}")
        assert self.conn.apply(trigger) is target
        self.model = target

    @rule(event_type=st.sampled_from(sorted(ACCEPTS[State.IDLE])) | st.text(max_size=20))
    def accepts(self, event_type: str) -> None:
        assert self.conn.accepts(event_type) is (event_type in ACCEPTS[self.model])

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.conn.state is self.model

    @invariant()
    def closed_stays_closed(self) -> None:
        if self.model is State.CLOSED:
            assert not any(s is State.CLOSED for s, _ in TRANSITIONS)


StateTableWalk.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_state_table_walk = StateTableWalk.TestCase


# ---- the heartbeat, driven with a monotonic clock --------------------------------------------------


durations = st.none() | st.floats(0.01, 100.0)


class HeartbeatWalk(RuleBasedStateMachine):
    """Pings, pongs and inbound traffic at increasing times: the heartbeat's answers follow its rules."""

    def __init__(self) -> None:
        super().__init__()
        self.hb: Heartbeat | None = None
        self.now = 1_000.0
        self.last_inbound = self.now
        self.sent: list[int] = []

    @precondition(lambda self: self.hb is None)
    @rule(interval=durations, timeout=durations)
    def start(self, interval: float | None, timeout: float | None) -> None:
        self.hb = Heartbeat(self.now, interval, timeout)

    @precondition(lambda self: self.hb is not None)
    @rule(step=st.floats(0.0, 50.0))
    def tick(self, step: float) -> None:
        self.now += step

    @precondition(lambda self: self.hb is not None)
    @rule()
    def inbound(self) -> None:
        assert self.hb is not None
        self.hb.inbound(self.now)
        self.last_inbound = self.now

    @precondition(lambda self: self.hb is not None)
    @rule()
    def ping(self) -> None:
        assert self.hb is not None
        self.sent.append(self.hb.ping_sent(self.now))

    @precondition(lambda self: self.hb is not None)
    @rule(data=st.data())
    def pong(self, data: st.DataObject) -> None:
        assert self.hb is not None
        ts = data.draw(st.sampled_from(self.sent) if self.sent else st.integers(0, 2**53))
        rtt = self.hb.pong(ts, self.now)
        if rtt is not None:
            assert rtt >= 0 and ts in self.sent
            assert self.hb.pong(ts, self.now) is None or self.sent.count(ts) > 1  # answered once

    @invariant()
    def poll_follows_the_rules(self) -> None:
        hb = self.hb
        if hb is None:
            return
        due = hb.poll(self.now)
        timed_out = hb.timeout is not None and self.now >= self.last_inbound + hb.timeout
        assert (due is Due.TIMED_OUT) is timed_out
        assert len(hb._outstanding) <= MAX_OUTSTANDING
        deadline = hb.next_deadline()
        if deadline is None:
            assert due is Due.NOTHING and hb.timeout is None
        else:
            assert math.isfinite(deadline)
            if due is Due.NOTHING:
                assert deadline >= self.now  # nothing is due before the deadline it announced
            assert hb.poll(max(deadline, self.now)) is not Due.NOTHING


HeartbeatWalk.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_heartbeat_walk = HeartbeatWalk.TestCase


# ---- a real Session, fed a few frames --------------------------------------------------------------

frames = st.lists(
    wire_events.map(lambda w: encode_frame(w, Encoding.MSGPACK)) | st.binary(max_size=64), min_size=0, max_size=8
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_a_session_survives_any_frames(data: list[bytes | str]) -> None:
    """A real Session fed valid and garbage frames answers each with events, never fails or hangs."""
    harness.target_session(harness.join_session_input(Encoding.MSGPACK, data))
