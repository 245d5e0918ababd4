"""Protocol-level keepalive, sans-I/O: the caller passes `now` (seconds, monotonic) and acts on the answer.

Browsers cannot send websocket control pings, so liveness lives in the protocol: the server sends
`ping {ts}` every `interval`; any inbound message counts as liveness; nothing inbound for `timeout`
means the peer is gone. Pongs that echo a ping we sent give the round-trip time, and acknowledge
delivery: a ping goes out as an event with a `seq`, events arrive in order, so its pong proves the client
has every event up to that `seq` (`acked`), which the session then need not keep for a resume.
"""

from __future__ import annotations

from enum import Enum

MAX_OUTSTANDING = 8


class Due(Enum):
    NOTHING = "nothing"
    SEND_PING = "send_ping"
    TIMED_OUT = "timed_out"


class Heartbeat:
    __slots__ = ("interval", "timeout", "_last_inbound", "_next_ping", "_outstanding", "rtt", "acked")

    def __init__(self, now: float, interval: float | None, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout
        self._last_inbound = now
        self._next_ping = now + interval if interval else None
        # ping ts -> the seq it went out as (0 until written), oldest first, at most MAX_OUTSTANDING
        self._outstanding: dict[int, int] = {}
        self.rtt: float | None = None
        self.acked = 0  # every event up to this seq reached the client (0: nothing known)

    def inbound(self, now: float) -> None:
        self._last_inbound = now

    def poll(self, now: float) -> Due:
        # `last + timeout`, not `now - last`: the same float next_deadline() announces, so poll(deadline) fires
        if self.timeout is not None and now >= self._last_inbound + self.timeout:
            return Due.TIMED_OUT
        if self._next_ping is not None and now >= self._next_ping:
            return Due.SEND_PING
        return Due.NOTHING

    def ping_sent(self, now: float) -> int:
        """Record a ping; returns its `ts` (ms) to put on the wire."""
        ts = int(now * 1000)
        self._outstanding[ts] = 0
        if len(self._outstanding) > MAX_OUTSTANDING:
            del self._outstanding[next(iter(self._outstanding))]
        if self.interval:
            self._next_ping = now + self.interval
        return ts

    def ping_written(self, ts: int, seq: int) -> None:
        """The ping `ts` went out on this link as event `seq`: its pong will acknowledge every event up to it."""
        if ts in self._outstanding:
            self._outstanding[ts] = seq

    def pong(self, ts: int, now: float) -> float | None:
        """A pong arrived; returns the round-trip time in seconds if it answers one of our pings (and then
        `acked` covers that ping's seq, if it was written)."""
        if ts not in self._outstanding:
            return None
        while True:  # pings older than the one answered will not be answered now: forget them
            first, seq = next(iter(self._outstanding.items()))
            del self._outstanding[first]
            if first == ts:
                break
        self.acked = max(self.acked, seq)
        self.rtt = max(0.0, now - ts / 1000)
        return self.rtt

    def next_deadline(self) -> float | None:
        """When `poll` may next say something other than NOTHING (None: never)."""
        times = [t for t in (self._next_ping,) if t is not None]
        if self.timeout is not None:
            times.append(self._last_inbound + self.timeout)
        return min(times) if times else None
