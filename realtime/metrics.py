"""Prometheus metrics (`GET /metrics`): the turn timings each response.done reports, as histograms."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# One audio frame's handling: fine steps around the 10 ms target (bench/load.py reads it before and after).
_FRAME_BUCKETS = (0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.012, 0.015)
_FRAME_BUCKETS += (0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


_AUDIO_DIRECT_HELP = (
    "input_audio_buffer.append messages taken as they came off the socket (the others went through the"
    " session's reader: behind another message, or the VAD backlog full)"
)


class _FunctionCounter(Collector):
    """A counter whose value another object keeps, read when /metrics is rendered: for a count bumped on every
    audio message from the event loop only (a plain int needs no lock), or one kept by another part."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


def _running_tasks() -> float:
    """asyncio tasks of the loop rendering /metrics (NaN off the loop): a leak shows as steady growth."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return math.nan


class Metrics:
    """One registry per app (not the global one), so several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transcript = Histogram(
            "realtime_speech_end_to_transcript_seconds", "Speech end to final transcript", buckets=_BUCKETS, registry=r
        )
        self.first_token = Histogram(
            "realtime_speech_end_to_first_token_seconds", "Speech end to first LLM token", buckets=_BUCKETS, registry=r
        )
        self.first_audio = Histogram(
            "realtime_speech_end_to_first_audio_seconds", "Speech end to first audio byte", buckets=_BUCKETS, registry=r
        )
        self.response_first_token = Histogram(
            "realtime_response_first_token_seconds", "Response start to first token", buckets=_BUCKETS, registry=r
        )
        self.response_total = Histogram(
            "realtime_response_seconds", "Response start to response.done", buckets=_BUCKETS, registry=r
        )
        self.responses = Counter("realtime_responses", "Responses by final status", ["status"], registry=r)
        self.turns = Counter(
            "realtime_spoken_turns",
            "Committed spoken turns by what ended them: turn_model (early), silence, max_length, manual",
            ["ended_by"],
            registry=r,
        )
        self.late_chunks = Counter("realtime_audio_late_chunks", "Audio chunks sent after their play time", registry=r)
        self.sessions = Gauge("realtime_sessions", "Open sessions", registry=r)
        self.audio_frame = Histogram(
            "realtime_audio_frame_seconds",
            "input_audio_buffer.append: message taken by the session's reader to its VAD result applied",
            buckets=_FRAME_BUCKETS,
            registry=r,
        )
        self.audio_direct = 0  # a plain count (a Counter's lock costs ~4 % of the loop at 15 000 a second)
        self.count_from("realtime_audio_messages_direct", _AUDIO_DIRECT_HELP, lambda: self.audio_direct)
        self.replay_frames = Gauge(
            "realtime_replay_buffer_events",
            "Events kept for resume, all sessions (a client that answers pings releases what it has received)",
            registry=r,
        )
        self.replay_bytes = Gauge(
            "realtime_replay_buffer_bytes", "Bytes of the events kept for resume (their msgpack frames)", registry=r
        )
        self.tasks = Gauge("realtime_asyncio_tasks", "asyncio tasks alive in the server's event loop", registry=r)
        self.tasks.set_function(_running_tasks)

    def count_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """Expose a count kept elsewhere as the counter `name`."""
        self.registry.register(_FunctionCounter(name, documentation, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
