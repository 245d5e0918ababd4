"""The endpointing state machine: frame probabilities in, turn events out (pure, no audio, no clock)."""

from __future__ import annotations

from realtime.stages.turn_detection import (
    PauseStarted,
    Phase,
    SegmentEnded,
    SpeechResumed,
    SpeechStarted,
    TurnDetectionConfig,
    TurnDetector,
    TurnEnded,
    TurnEvent,
)
from realtime.stages.vad import FRAME_MS


def feed(detector: TurnDetector, probs: list[float], start_ms: int = 0) -> list[tuple[int, TurnEvent]]:
    """(frame end ms, event) for each event the frames produce."""
    out = []
    for i, prob in enumerate(probs):
        end_ms = start_ms + (i + 1) * FRAME_MS
        out.extend((end_ms, event) for event in detector.feed(prob, end_ms))
    return out


CFG = TurnDetectionConfig(silence_duration_ms=320, segment_pause_ms=128, min_speech_duration_ms=64)


def test_speech_pause_segment_and_turn_end_in_order() -> None:
    """Speech, then silence: started, the pause at the first silent frame, segment end, then turn end."""
    detector = TurnDetector(CFG)
    events = feed(detector, [0.9] * 10 + [0.1] * 12)
    assert [type(e) for _, e in events] == [SpeechStarted, PauseStarted, SegmentEnded, TurnEnded]
    pause_ms = events[1][1].end_ms
    assert pause_ms == 10 * FRAME_MS
    assert events[2][0] - pause_ms >= CFG.segment_pause_ms
    assert events[3][0] - pause_ms >= CFG.silence_duration_ms
    assert detector.phase is Phase.SILENCE


def test_a_click_shorter_than_the_minimum_is_not_speech() -> None:
    """One loud frame (32 ms < 64 ms minimum) then silence: no events at all."""
    assert feed(TurnDetector(CFG), [0.9, 0.1, 0.1, 0.1]) == []


def test_speech_resuming_in_the_pause_keeps_the_turn() -> None:
    """A short pause then more speech: resumed (segment still open), no turn end until the long silence."""
    detector = TurnDetector(CFG)
    events = feed(detector, [0.9] * 5 + [0.1] * 2 + [0.9] * 5)
    assert [type(e) for _, e in events] == [SpeechStarted, PauseStarted, SpeechResumed]
    assert events[2][1] == SpeechResumed(segment_closed=False)
    assert detector.in_turn


def test_end_now_ends_the_turn_only_during_a_pause() -> None:
    """The end-of-turn model's verdict ends a pausing turn at once (at the speech end); in speech or
    silence it changes nothing."""
    detector = TurnDetector(CFG)
    feed(detector, [0.9] * 5)
    assert detector.end_now() == [] and detector.phase is Phase.SPEECH
    events = feed(detector, [0.1] * 5, start_ms=5 * FRAME_MS)  # 160 ms: past the segment pause
    assert [type(e) for _, e in events] == [PauseStarted, SegmentEnded]
    end_ms = events[0][1].end_ms
    assert detector.pause_ms == end_ms
    assert detector.end_now() == [TurnEnded(end_ms)]
    assert detector.pause_ms is None
    assert detector.phase is Phase.SILENCE
    assert detector.end_now() == []
    assert feed(detector, [0.1] * 20, start_ms=10 * FRAME_MS) == []  # the silence window does not end it again


def test_end_now_before_the_segment_pause_closes_the_segment_too() -> None:
    """Ended before the segment pause: the segment is closed first, so its words are published."""
    detector = TurnDetector(CFG)
    events = feed(detector, [0.9] * 5 + [0.1])
    end_ms = events[-1][1].end_ms
    assert detector.end_now() == [SegmentEnded(end_ms), TurnEnded(end_ms)]
