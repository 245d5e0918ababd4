"""Endpointing from per-frame speech probabilities: pure state, no audio, no clock (times are stream ms).

Two pause lengths matter. After `segment_pause_ms` of silence the words spoken so far are final (their
transcript is published and never changes); after `silence_duration_ms` the user's turn is over. The
first silent frame is reported at once (`PauseStarted`) so the final decode can start speculatively
and be done by the time the segment pause is confirmed. There, the end-of-turn model (when
`turn_model` is on) may end the turn early: the caller asks it and, if it is sure, calls `end_now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from realtime.stages.vad import FRAME_MS


@dataclass(frozen=True, slots=True)
class TurnDetectionConfig:
    """Named and defaulted as the OpenAI Realtime server VAD, plus the minimum speech and segment pause."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_duration_ms: int = 100
    segment_pause_ms: int = 200
    turn_model: bool = True  # at the segment pause, end the turn early if the end-of-turn model is sure
    turn_model_threshold: float = 0.5

    @property
    def neg_threshold(self) -> float:
        """Hysteresis: inside speech, a frame is silence only below this (Silero's own recipe)."""
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    start_ms: int  # start of the first speech frame


@dataclass(frozen=True, slots=True)
class PauseStarted:
    end_ms: int  # end of the last speech frame: where the speculative final decode cuts


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    segment_closed: bool  # the pause had already closed the segment: this speech starts a new one


@dataclass(frozen=True, slots=True)
class SegmentEnded:
    end_ms: int


@dataclass(frozen=True, slots=True)
class TurnEnded:
    end_ms: int


TurnEvent = SpeechStarted | PauseStarted | SpeechResumed | SegmentEnded | TurnEnded


class Phase(Enum):
    SILENCE = "silence"
    ONSET = "onset"  # speech frames, not yet min_speech_duration_ms of them
    SPEECH = "speech"
    PAUSE = "pause"  # silence inside a turn, shorter than silence_duration_ms


class TurnDetector:
    __slots__ = ("config", "phase", "_onset_ms", "_speech_end_ms", "_segment_closed")

    def __init__(self, config: TurnDetectionConfig) -> None:
        self.config = config
        self.phase = Phase.SILENCE
        self._onset_ms = 0
        self._speech_end_ms = 0
        self._segment_closed = False

    @property
    def in_turn(self) -> bool:
        return self.phase in (Phase.SPEECH, Phase.PAUSE)

    def reset(self) -> None:
        self.phase = Phase.SILENCE
        self._segment_closed = False

    def feed(self, prob: float, end_ms: int) -> list[TurnEvent]:
        """One frame's speech probability, the frame ending at `end_ms` of the stream."""
        cfg = self.config
        start_ms = end_ms - FRAME_MS
        if self.phase is Phase.SILENCE:
            if prob >= cfg.threshold:
                self.phase, self._onset_ms = Phase.ONSET, start_ms
                return self._maybe_started(end_ms)
            return []
        if self.phase is Phase.ONSET:
            if prob < cfg.neg_threshold:
                self.phase = Phase.SILENCE  # a click, not speech
                return []
            return self._maybe_started(end_ms)
        if self.phase is Phase.SPEECH:
            if prob < cfg.neg_threshold:
                self.phase, self._speech_end_ms, self._segment_closed = Phase.PAUSE, start_ms, False
                return [PauseStarted(start_ms)]
            return []
        # PAUSE
        if prob >= cfg.threshold:
            self.phase = Phase.SPEECH
            return [SpeechResumed(self._segment_closed)]
        silent_for = end_ms - self._speech_end_ms
        events: list[TurnEvent] = []
        if not self._segment_closed and silent_for >= cfg.segment_pause_ms:
            self._segment_closed = True
            events.append(SegmentEnded(self._speech_end_ms))
        if silent_for >= cfg.silence_duration_ms:
            self.phase = Phase.SILENCE
            if not self._segment_closed:
                events.append(SegmentEnded(self._speech_end_ms))
            events.append(TurnEnded(self._speech_end_ms))
        return events

    @property
    def pause_ms(self) -> int | None:
        """Where the speech of the pause in progress ended (None when not pausing): names the pause."""
        return self._speech_end_ms if self.phase is Phase.PAUSE else None

    def end_now(self) -> list[TurnEvent]:
        """End the turn at the pause in progress (the end-of-turn model judged it over); nothing otherwise,
        since speech may have resumed, or the silence window ended the turn, while the model ran."""
        if self.phase is not Phase.PAUSE:
            return []
        self.phase = Phase.SILENCE
        events: list[TurnEvent] = [] if self._segment_closed else [SegmentEnded(self._speech_end_ms)]
        events.append(TurnEnded(self._speech_end_ms))
        return events

    def _maybe_started(self, end_ms: int) -> list[TurnEvent]:
        if end_ms - self._onset_ms >= self.config.min_speech_duration_ms:
            self.phase = Phase.SPEECH
            return [SpeechStarted(self._onset_ms)]
        return []
