"""Prometheus metrics (`GET /metrics`): the turn timings each response.done reports, as histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


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
        self.late_chunks = Counter("realtime_audio_late_chunks", "Audio chunks sent after their play time", registry=r)
        self.sessions = Gauge("realtime_sessions", "Open sessions", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
