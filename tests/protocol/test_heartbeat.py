"""Protocol keepalive, sans-I/O: pings on schedule, timeout on silence, RTT from matching pongs."""

from __future__ import annotations

from realtime.protocol.heartbeat import MAX_OUTSTANDING, Due, Heartbeat


def test_ping_is_due_every_interval() -> None:
    """A ping is due after each interval, counted from the last ping sent."""
    hb = Heartbeat(now=100.0, interval=10.0, timeout=30.0)
    assert hb.poll(105.0) is Due.NOTHING
    assert hb.poll(110.0) is Due.SEND_PING
    hb.ping_sent(110.0)
    assert hb.poll(115.0) is Due.NOTHING
    assert hb.next_deadline() == 120.0


def test_silence_times_out_and_inbound_postpones_it() -> None:
    """No inbound traffic for `timeout` seconds means the peer is gone; any inbound message resets that."""
    hb = Heartbeat(now=0.0, interval=None, timeout=30.0)
    hb.inbound(20.0)
    assert hb.poll(45.0) is Due.NOTHING
    assert hb.next_deadline() == 50.0
    assert hb.poll(50.0) is Due.TIMED_OUT


def test_timeout_wins_over_a_due_ping() -> None:
    """When both are due, the timeout is reported (a dead peer does not need another ping)."""
    hb = Heartbeat(now=0.0, interval=10.0, timeout=15.0)
    assert hb.poll(16.0) is Due.TIMED_OUT


def test_rtt_only_from_pongs_that_answer_our_pings() -> None:
    """A pong echoing one of our ping timestamps gives the RTT; an unknown ts is ignored."""
    hb = Heartbeat(now=0.0, interval=10.0, timeout=30.0)
    ts = hb.ping_sent(10.0)
    assert hb.pong(ts + 1, 10.5) is None
    assert hb.pong(ts, 10.25) == 0.25
    assert hb.rtt == 0.25
    assert hb.pong(ts, 11.0) is None  # answered already


def test_disabled_heartbeat_never_fires() -> None:
    """With interval and timeout off there is nothing to wait for."""
    hb = Heartbeat(now=0.0, interval=None, timeout=None)
    assert hb.poll(1e9) is Due.NOTHING
    assert hb.next_deadline() is None


def test_pong_acknowledges_the_seq_its_ping_went_out_as() -> None:
    """Events arrive in order, so a pong proves the client has every event up to its ping's seq; a pong to a
    ping never written, or not ours, acknowledges nothing, and the newest acknowledgement is kept."""
    hb = Heartbeat(now=0.0, interval=10.0, timeout=30.0)
    unwritten = hb.ping_sent(10.0)
    first = hb.ping_sent(20.0)
    hb.ping_written(first, 41)
    second = hb.ping_sent(30.0)
    hb.ping_written(second, 57)
    hb.ping_written(12345, 99)  # not a ping of ours: ignored
    assert hb.pong(unwritten, 30.1) is not None and hb.acked == 0
    assert hb.pong(second, 30.2) is not None and hb.acked == 57  # `first` is answered by implication
    assert hb.pong(first, 30.3) is None and hb.acked == 57


def test_unanswered_pings_are_bounded() -> None:
    """A peer that never answers leaves at most MAX_OUTSTANDING pings remembered; the oldest are forgotten."""
    hb = Heartbeat(now=0.0, interval=1.0, timeout=None)
    sent = []
    for i in range(MAX_OUTSTANDING + 5):
        sent.append(hb.ping_sent(float(i + 1)))
        hb.ping_written(sent[-1], i + 1)
    assert hb.pong(sent[0], 100.0) is None
    assert hb.pong(sent[-MAX_OUTSTANDING], 100.0) is not None and hb.acked == 5 + 1
