"""Protocol keepalive, sans-I/O: pings on schedule, timeout on silence, RTT from matching pongs."""

from __future__ import annotations

from realtime.protocol.heartbeat import Due, Heartbeat


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
