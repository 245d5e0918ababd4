"""A session's ears: streamed mic audio -> VAD -> endpointing -> partial and final Whisper transcripts.

Audio is resampled to 16 kHz and kept in one bounded buffer. The VAD marks speech; while the user
speaks, the open segment is re-decoded on a schedule that backs off under load (one partial in flight
per session) and LocalAgreement-2 publishes a stable prefix that never changes. At the first silent
frame the final decode of the segment starts speculatively (its words go to a speculative reply as soon
as it is done). If the pause lasts `segment_pause_ms` its text is final (published at once) and the
end-of-turn model may end the turn there; after `silence_duration_ms` the turn is committed anyway.

Input is decoupled from the VAD: `append` checks and resamples a message, cuts its VAD frames and sends
them to the shared batcher (one request per stream at a time; what comes meanwhile goes in the next, so a
stream that fell behind catches up in one pass). The batcher answers every stream of a pass in one event
loop callback, and the results are applied there, message by message, exactly as if each message had been
judged on arrival. Only a frame whose turn events or speech report must be awaited hands the rest to the
listener's VAD task, which gives back once it is through. So the reader goes back to its socket at once,
and a 20 ms message costs no task switch on its way through the VAD (it used to cost two: at 300 sessions
that was ~19 000 a second). The backlog is bounded (MAX_VAD_BACKLOG_MS).

The listener owns its decode tasks and its VAD task; the session cancels them all through `aclose()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from realtime.errors import ClientError
from realtime.protocol import server_events as ev
from realtime.protocol.server_events import ServerEvent
from realtime.stages.agreement import LocalAgreement
from realtime.stages.audio import MODEL_RATE, Resampler, pcm16_to_float
from realtime.stages.stt import Transcript, is_hallucination
from realtime.stages.turn_detection import (
    PauseStarted,
    SegmentEnded,
    SpeechResumed,
    SpeechStarted,
    TurnDetectionConfig,
    TurnDetector,
    TurnEnded,
    TurnEvent,
)
from realtime.stages.turn_model import WINDOW as TURN_WINDOW
from realtime.stages.vad import VadRequest, VadStream
from realtime.voice import Voice

log = logging.getLogger("realtime.listener")

SAMPLES_PER_MS = MODEL_RATE // 1000
# Language detection on too little audio is unreliable (a short English phrase can come out Japanese):
# a detected language is trusted only from this much audio, and this sure.
DETECT_MIN_MS = 1_500
DETECT_MIN_PROB = 0.5
FIRST_PARTIAL_AFTER_MS = 150  # the first partial of a segment comes sooner than the regular interval


class InvalidAudio(ClientError):
    code = "invalid_audio"


class NotListening(ClientError):
    code = "not_listening"


# Audio a session may have waiting for the VAD. A client sending faster than real time fills it, and then
# `append` waits for the VAD to catch up: the reader stops taking messages, the websocket stops being read
# and TCP slows the client down. Nothing is dropped; a real-time client never gets near it.
MAX_VAD_BACKLOG_MS = 1_000

MIN_BUFFER_SAMPLES = 16_000  # one second at 16 kHz: the first allocation, then doubling


class SampleBuffer:
    """A turn's audio: appends in amortised O(chunk), not a copy of the whole buffer per chunk (which made
    a 30 s turn cost 139 µs per 20 ms chunk, quadratic in its length); dropping from the front is free."""

    def __init__(self, capacity: int = 0) -> None:
        # Empty until audio comes: a session that never sends audio (most idle ones) pays nothing.
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._end + n > len(self._buf):
            size = len(self)
            if size + n > len(self._buf) // 2:  # mostly full: grow; else compacting is enough
                grown = np.zeros(max(2 * len(self._buf), size + n, MIN_BUFFER_SAMPLES), dtype=np.float32)
                grown[:size] = self.view()
                self._buf = grown
            else:
                self._buf[:size] = self.view()
            self._start, self._end = 0, size
        self._buf[self._end : self._end + n] = samples
        self._end += n

    def view(self) -> np.ndarray:
        """The samples held (a view: copy it before keeping it across appends)."""
        return self._buf[self._start : self._end]

    def drop(self, n: int) -> None:
        self._start = min(self._end, self._start + n)

    def clear(self) -> None:
        self._start = self._end = 0


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    sample_rate: int = 24_000
    turn_detection: TurnDetectionConfig | None = field(default_factory=TurnDetectionConfig)
    language: str | None = None
    partials: bool = True
    partial_interval_ms: int = 300
    max_turn_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class CommittedTurn:
    item_id: str
    transcript: str
    audio_start_ms: int
    audio_end_ms: int
    language: str | None
    speech_end_at: float | None = None  # monotonic time the speech ended (estimated from the audio clock)
    transcript_at: float | None = None  # monotonic time its last words were final
    ended_by: str = "silence"  # turn_model (judged over at a pause) | silence | max_length | manual


@dataclass(slots=True)
class _Segment:
    start_ms: int
    agreement: LocalAgreement
    language: str | None = None
    partial_task: asyncio.Task[None] | None = None
    partial_at_ms: int = 0
    final_task: asyncio.Task[Transcript | None] | None = None
    final_cut_ms: int = 0


@dataclass(slots=True)
class _Heard:
    """One audio message on its way through the VAD: its 16 kHz samples, the VAD frames it completed, when it
    was taken off the socket; then the frames' probabilities and how far turn detection has got with them."""

    samples: np.ndarray
    frames: list[np.ndarray]
    taken_at: float | None
    probs: list[float] | None = None
    buffered: bool = False
    at: int = 0  # probabilities fed to turn detection
    events: list[TurnEvent] | None = None  # of the frame fed last, still to be awaited


@dataclass(slots=True)
class _Turn:
    item_id: str
    start_ms: int
    texts: list[str] = field(default_factory=list)
    language: str | None = None
    finalizing: asyncio.Task[None] | None = None  # the latest segment's finalization, awaited in order
    speech_end_at: float | None = None
    transcript_at: float | None = None
    ended_by: str = "silence"


class Listener:
    def __init__(
        self,
        *,
        config: ListenerConfig,
        voice: Voice,
        emit: Callable[[ServerEvent], Awaitable[None]],
        on_commit: Callable[[CommittedTurn], Awaitable[None]],
        new_id: Callable[[str], str],
        spawn: Callable[..., asyncio.Task[object]],
        on_speech: Callable[[int], Awaitable[None]] | None = None,
        on_tentative: Callable[[str], Awaitable[None]] | None = None,
        on_resumed: Callable[[], Awaitable[None]] | None = None,
        frame_latency: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._voice = voice
        self._vad, self._tokens = voice.vad, voice.tokens
        self._emit, self._on_commit, self._new_id, self._spawn = emit, on_commit, new_id, spawn
        self._on_speech, self._clock = on_speech, clock
        self._on_tentative, self._on_resumed = on_tentative, on_resumed
        self._speech_onset_ms: int | None = None
        self._resampler = Resampler(config.sample_rate)
        self._vad_stream = VadStream()
        self._detector = TurnDetector(config.turn_detection) if config.turn_detection else None
        self._audio = SampleBuffer()
        self._audio_base = 0  # stream sample index of _audio[0]
        self._total = 0  # samples received (16 kHz)
        self._vad_done = 0  # samples the VAD has judged
        self._turn: _Turn | None = None
        self._segment: _Segment | None = None
        self._last_cut_ms = 0
        self._committing: asyncio.Task[object] | None = None
        self._detected: str | None = None  # the language the user speaks, once detected with confidence
        self._tasks: set[asyncio.Task[object]] = set()
        # Input on its way through the VAD, in message order: queued (not yet sent), sent (one batcher request
        # at a time, carrying its messages: the stream's recurrent state moves on in the pass), judged (waiting
        # for the VAD task while turn detection needs awaiting). Counted in samples against MAX_VAD_BACKLOG_MS.
        self._frame_latency = frame_latency
        self._backlog: list[_Heard] = []
        self._request: VadRequest | None = None
        self._judged: deque[_Heard] = deque()
        self._backlog_samples = 0
        self._backlog_room = asyncio.Event()  # the backlog is under its bound
        self._backlog_room.set()
        self._backlog_done = asyncio.Event()  # nothing queued, sent or judged and not yet applied
        self._backlog_done.set()
        self._slow = asyncio.Event()  # the VAD task has judged messages to apply (or a failure to raise)
        self._slow_running = False  # the VAD task is applying: results that come meanwhile queue behind
        self._failure: BaseException | None = None
        self._vad_task: asyncio.Task[object] | None = None  # started by the first audio
        self._closed = False

    # ---- input -----------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self._total // SAMPLES_PER_MS

    async def append(self, pcm: bytes, *, taken_at: float | None = None) -> None:
        """Take one message of PCM16 audio. With server VAD it is queued for the VAD task (waiting only when
        the backlog is full), unless it completes no VAD frame and nothing is queued before it: then it is
        applied at once. `taken_at` (perf_counter) is when the reader took the message, for the frame-latency
        figure, which runs to the message's VAD results applied to turn detection."""
        if len(pcm) % 2:
            raise InvalidAudio("audio must be whole PCM16 samples (an even number of bytes)", param="audio")
        samples = self._resampler.process(pcm16_to_float(pcm))
        if self._detector is None:
            if len(samples):
                self._buffer(samples)
                await self._manual_progress()
                self._trim()
            self._frame_done(taken_at)
            return
        limit = MAX_VAD_BACKLOG_MS * SAMPLES_PER_MS
        while self._backlog_samples >= limit and not self._vad_stopped:
            self._backlog_room.clear()
            await self._backlog_room.wait()
        self._queue_for_vad(samples, taken_at)

    def try_append(self, pcm: bytes, *, taken_at: float | None = None) -> bool:
        """`append` without waiting, for a message handled as it comes off the socket: done, or False with
        nothing done when `append` would wait (a full backlog), has to await (manual mode) or raise."""
        if (
            self._detector is None
            or len(pcm) % 2
            or self._backlog_samples >= MAX_VAD_BACKLOG_MS * SAMPLES_PER_MS
            or self._vad_stopped
        ):
            return False
        self._queue_for_vad(self._resampler.process(pcm16_to_float(pcm)), taken_at)
        return True

    def _queue_for_vad(self, samples: np.ndarray, taken_at: float | None) -> None:
        """Cut the message's VAD frames (here: in message order) and send them to the batcher, or apply the
        message at once when it completes no frame and nothing is on its way before it (no VAD needed)."""
        if self._vad_stopped:
            return  # closed, or its VAD task failed (the session is closing)
        if not len(samples):
            self._frame_done(taken_at)
            return
        frames = self._vad_stream.take_frames(samples)
        if not frames and self._backlog_done.is_set():  # nothing for turn detection to judge
            self._buffer(samples)
            self._after_audio()
            self._frame_done(taken_at)
            return
        self._backlog.append(_Heard(samples, frames, taken_at))
        self._backlog_samples += len(samples)
        self._backlog_done.clear()
        if self._vad_task is None:
            self._vad_task = self._spawn(self._apply_slowly(), "vad")
        if self._request is None:
            self._send()

    def _send(self) -> None:
        """The frames of everything queued, in one request (one at a time: the next goes when it is answered)."""
        batch, self._backlog = self._backlog, []
        frames = batch[0].frames if len(batch) == 1 else [frame for heard in batch for frame in heard.frames]
        if not frames:  # messages that completed no frame, queued behind others: nothing to judge
            for heard in batch:
                heard.probs = []
            self._judged.extend(batch)
            self._apply_judged()
            return
        self._request = self._vad.submit(self._vad_stream, frames, partial(self._on_probabilities, batch))

    def _on_probabilities(self, batch: list[_Heard], result: list[float] | BaseException) -> None:
        """The batcher's answer to our request for `batch`, on the event loop: the next request goes out, then
        these messages are applied, here (no task switch) unless turn detection needs awaiting."""
        self._request = None
        if self._vad_stopped:
            return
        if isinstance(result, BaseException):
            self._fail(result)
            return
        at = 0
        for heard in batch:
            heard.probs = result[at : at + len(heard.frames)]
            at += len(heard.frames)
        self._judged.extend(batch)
        if self._backlog:
            self._send()
        self._apply_judged()

    def _apply_judged(self) -> None:
        """Apply the judged messages in order, as far as that needs no awaiting; from the first frame whose turn
        events (or speech report) must be awaited, the VAD task takes over until everything judged is applied."""
        if self._slow_running:
            return  # the VAD task applies them, in order
        try:
            while self._judged:
                heard = self._judged[0]
                if not self._advance(heard):
                    self._slow_running = True
                    self._slow.set()
                    return
                self._judged.popleft()
                self._applied(heard)
        except Exception as exc:  # raised in the VAD task, whose failure closes the session
            self._fail(exc)
            return
        self._settle()

    async def _apply_slowly(self) -> None:
        """The VAD task: applies judged messages when turn detection needs awaiting (a turn event, or speech
        to report for barge-in), then hands back; raises a VAD failure, which closes the session."""
        try:
            while True:
                await self._slow.wait()
                self._slow.clear()
                if self._failure is not None:
                    raise self._failure
                while self._judged:
                    heard = self._judged[0]
                    while heard.events is not None or not self._advance(heard):
                        await self._finish_frame(heard)  # the frame `_advance` stopped at, here or before
                    self._judged.popleft()
                    self._applied(heard)
                self._slow_running = False
                self._settle()
        finally:  # nobody waits on a task that is gone
            self._backlog_room.set()
            self._backlog_done.set()

    def _fail(self, exc: BaseException) -> None:
        """Raised in the VAD task; meanwhile `_vad_stopped` keeps everything else out."""
        self._failure = exc
        self._slow.set()

    def _advance(self, heard: _Heard) -> bool:
        """Apply one judged message (its audio buffered, its frames fed to turn detection) up to the first frame
        that needs awaiting: False then, with that frame's events kept for `_finish_frame`."""
        assert self._detector is not None and heard.probs is not None
        if not heard.buffered:
            heard.buffered = True
            self._buffer(heard.samples)
        probs = heard.probs
        while heard.at < len(probs):
            prob = probs[heard.at]
            heard.at += 1
            self._vad_done += 512
            events = self._detector.feed(prob, self._vad_done // SAMPLES_PER_MS)
            if events:
                heard.events = events
                return False
            self._maybe_partial()
            if self._on_speech is not None and self._speech_onset_ms is not None:
                heard.events = []  # only the speech report is left of this frame
                return False
        self._after_audio()
        return True

    async def _finish_frame(self, heard: _Heard) -> None:
        """The awaited rest of the frame `_advance` stopped at: its turn events, then the speech report."""
        events, heard.events = heard.events or [], None
        for event in events:
            await self._on_turn_event(event)
        self._maybe_partial()
        if self._on_speech is not None and self._speech_onset_ms is not None:
            await self._on_speech(self._vad_done // SAMPLES_PER_MS - self._speech_onset_ms)

    def _applied(self, heard: _Heard) -> None:
        self._backlog_samples -= len(heard.samples)
        self._frame_done(heard.taken_at)
        if self._backlog_samples < MAX_VAD_BACKLOG_MS * SAMPLES_PER_MS:
            self._backlog_room.set()

    def _settle(self) -> None:
        if not self._backlog and self._request is None and not self._judged and not self._slow_running:
            self._backlog_done.set()

    @property
    def _vad_stopped(self) -> bool:
        return self._closed or self._failure is not None or (self._vad_task is not None and self._vad_task.done())

    async def judged(self) -> None:
        """Until every message appended so far has been judged by the VAD and applied to turn detection."""
        await self._backlog_done.wait()

    def _buffer(self, samples: np.ndarray) -> None:
        self._audio.append(samples)
        self._total += len(samples)

    def _after_audio(self) -> None:
        """After a message's audio is buffered (and its frames judged): the turn's length limit, the trim."""
        self._enforce_max_turn()
        self._trim()

    def _frame_done(self, taken_at: float | None) -> None:
        if self._frame_latency is not None and taken_at is not None:
            self._frame_latency(time.perf_counter() - taken_at)

    async def commit(self) -> None:
        """Manual mode: the whole buffer is the user's turn."""
        await self.judged()
        if self._detector is not None and self._turn is None:
            raise NotListening("nothing to commit: the server VAD commits turns itself", param="type")
        if self._turn is None or (self._detector is None and not len(self._audio)):
            if not len(self._audio):
                raise InvalidAudio("the input audio buffer is empty", param="type")
            self._begin_turn(self._audio_base // SAMPLES_PER_MS)
        self._turn.ended_by = "manual"  # type: ignore[union-attr]
        self._close_segment(self.now_ms)
        await self._end_turn(self.now_ms)
        if self._detector is None:  # the committed audio went to the final decode (a copy); start afresh
            self._audio.clear()
            self._audio_base = self._total

    async def clear(self) -> None:
        """Drop buffered audio and any turn in progress (its transcript is never committed)."""
        await self.judged()  # what came before the clear is heard first, as it always was
        self._cancel_all()
        self._turn = self._segment = None
        self._audio.clear()
        self._audio_base = self._total
        if self._detector is not None:
            self._detector.reset()
        await self._emit(ev.audio_cleared())

    async def aclose(self) -> None:
        """Cancel and await every task of the listener (audio still waiting for the VAD is dropped)."""
        self._closed = True
        if self._request is not None:
            self._request.cancelled = True  # its pass skips it, or its answer is not delivered
        self._cancel_all()
        tasks = list(self._tasks)
        if self._vad_task is not None:
            self._vad_task.cancel()
            tasks.append(self._vad_task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ---- turn events -----------------------------------------------------------------------------

    async def _on_turn_event(self, event: object) -> None:
        match event:
            case SpeechStarted(start_ms=start_ms):
                self._speech_onset_ms = start_ms
                if self._turn is None:
                    pad = self.config.turn_detection.prefix_padding_ms if self.config.turn_detection else 0
                    self._begin_turn(max(self._audio_base // SAMPLES_PER_MS, start_ms - pad))
                    await self._emit(ev.speech_started(self._turn.item_id, start_ms))  # type: ignore[union-attr]
            case PauseStarted(end_ms=end_ms):
                self._speech_onset_ms = None
                if self._turn is not None:
                    # the audio clock runs ahead of the frame just judged by what is still buffered
                    self._turn.speech_end_at = self._clock() - (self.now_ms - end_ms) / 1000
                if self._segment is not None:
                    self._start_final(self._segment, self.now_ms)
                    if self._turn is not None and self._on_tentative is not None:
                        self._own(self._tentative_when_decoded(self._turn, self._segment), "tentative")
            case SpeechResumed(segment_closed=closed):
                self._speech_onset_ms = self._vad_done // SAMPLES_PER_MS - 32
                if self._on_resumed is not None:
                    await self._on_resumed()
                segment = self._segment
                if closed or segment is None:
                    pad = self.config.turn_detection.prefix_padding_ms if self.config.turn_detection else 0
                    self._open_segment(max(self._last_cut_ms, self.now_ms - pad))
                elif segment.final_task is not None:
                    segment.final_task.cancel()
                    segment.final_task = None
            case SegmentEnded(end_ms=end_ms):
                self._close_segment(end_ms)
                td, judge = self.config.turn_detection, self._voice.turn
                if self._turn is not None and td is not None and td.turn_model and judge is not None:
                    self._own(self._judge_end(self._turn, td.turn_model_threshold), "turn-model")
            case TurnEnded(end_ms=end_ms):
                await self._end_turn(end_ms)

    def _begin_turn(self, start_ms: int) -> None:
        self._turn = _Turn(item_id=self._new_id("item"), start_ms=start_ms)
        self._open_segment(start_ms)

    def _open_segment(self, start_ms: int) -> None:
        self._segment = _Segment(
            start_ms=max(start_ms, self._audio_base // SAMPLES_PER_MS),
            agreement=LocalAgreement(self._tokens.is_word_start),
            language=self.config.language or self._detected,
        )
        self._segment.partial_at_ms = self.now_ms - self.config.partial_interval_ms + FIRST_PARTIAL_AFTER_MS

    def _segment_audio(self, segment: _Segment, end_ms: int) -> np.ndarray:
        start = segment.start_ms * SAMPLES_PER_MS - self._audio_base
        end = end_ms * SAMPLES_PER_MS - self._audio_base
        return self._audio.view()[max(0, start) : max(0, end)].copy()

    def _start_final(self, segment: _Segment, cut_ms: int) -> None:
        if segment.final_task is not None and segment.final_cut_ms == cut_ms:
            return
        if segment.final_task is not None:
            segment.final_task.cancel()
        audio = self._segment_audio(segment, cut_ms)
        prefix = list(segment.agreement.stable)
        language = segment.language
        segment.final_cut_ms = cut_ms
        segment.final_task = self._own(self._decode(audio, prefix, language, final=True), "stt-final")

    async def _tentative_when_decoded(self, turn: _Turn, segment: _Segment) -> None:
        """Hand the words over for a speculative reply as soon as the pause's final decode is done, rather
        than at the segment pause: the reply gets that much more of a head start. Nothing is published
        here; if the user goes on speaking, the speculation is dropped (`on_resumed`)."""
        task = segment.final_task
        if task is None:
            return
        await asyncio.wait({task})
        if task.cancelled() or segment.final_task is not task or self._segment is not segment or turn is not self._turn:
            return  # speech resumed, or the segment closed and its publication speculates instead
        if turn.finalizing is not None and not turn.finalizing.done():
            return  # an earlier segment's words are not in yet
        transcript = task.result()
        if transcript is None or transcript.degenerate or is_hallucination(transcript):
            return
        assert self._on_tentative is not None
        await self._on_tentative(" ".join([*turn.texts, transcript.text]).strip())

    async def _judge_end(self, turn: _Turn, threshold: float) -> None:
        """Ask the end-of-turn model whether the pause in progress ends the turn; end it now if so."""
        judge = self._voice.turn
        assert judge is not None and self._detector is not None
        pause = self._detector.pause_ms
        held = self._audio.view()
        start = turn.start_ms * SAMPLES_PER_MS - self._audio_base
        audio = held[max(0, start, len(held) - TURN_WINDOW) :].copy()  # the model hears the last 8 s only
        probability = await judge.probability(audio)
        if probability is None or turn is not self._turn or self._detector.pause_ms != pause:
            return  # the judge was busy, or meanwhile the turn ended or this pause did (speech resumed)
        log.debug("end-of-turn model: %.2f after %d ms of turn audio", probability, len(audio) // SAMPLES_PER_MS)
        if probability < threshold:
            return
        turn.ended_by = "turn_model"
        for event in self._detector.end_now():
            await self._on_turn_event(event)

    def _close_segment(self, end_ms: int) -> None:
        """The segment's words are final: publish them (after the previous segment's, in order)."""
        segment, turn = self._segment, self._turn
        if segment is None or turn is None:
            return
        self._segment = None
        if segment.partial_task is not None:
            segment.partial_task.cancel()
        if segment.final_task is None:
            self._start_final(segment, self.now_ms)
        self._last_cut_ms = segment.final_cut_ms
        final_task = segment.final_task
        previous = turn.finalizing
        turn.finalizing = self._own(self._publish_segment(turn, segment, final_task, previous), "segment")

    async def _publish_segment(
        self,
        turn: _Turn,
        segment: _Segment,
        final_task: asyncio.Task[Transcript | None] | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        transcript = await final_task if final_task is not None else None
        if previous is not None:
            await previous
        if transcript is None or is_hallucination(transcript):
            if transcript is not None:
                log.info(
                    "dropped a likely hallucination: %r (no_speech %.2f)", transcript.text, transcript.no_speech_prob
                )
            return
        turn.texts.append(transcript.text)
        turn.transcript_at = self._clock()
        turn.language = turn.language or transcript.language
        if self.config.language is None and transcript.language_prob >= DETECT_MIN_PROB:
            self._detected = self._detected or transcript.language
        await self._emit(
            ev.transcription_segment(turn.item_id, transcript.text, segment.start_ms, segment.final_cut_ms)
        )
        await self._emit(ev.transcription_partial(turn.item_id, " ".join(turn.texts), ""))
        if self._on_tentative is not None and turn is self._turn and self._segment is None:
            # still pausing, turn not over: the reply may start now and be released when the turn ends
            await self._on_tentative(" ".join(turn.texts).strip())

    async def _end_turn(self, end_ms: int) -> None:
        turn = self._turn
        if turn is None:
            return
        self._turn = None
        self._segment = None
        self._committing = self._own(self._commit_turn(turn, end_ms), "commit")

    async def settled(self) -> None:
        """Until the last committed turn is transcribed and handed over (a response.create sent right after
        a manual commit then includes it)."""
        await self.judged()
        task = self._committing
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def _commit_turn(self, turn: _Turn, end_ms: int) -> None:
        if turn.finalizing is not None:
            await turn.finalizing
        transcript = " ".join(turn.texts).strip()
        if self._detector is not None:
            await self._emit(ev.speech_stopped(turn.item_id, end_ms))
        await self._emit(ev.transcription_completed(turn.item_id, transcript, end_ms - turn.start_ms, turn.language))
        if transcript:
            await self._emit(ev.audio_committed(turn.item_id))
            await self._on_commit(
                CommittedTurn(
                    turn.item_id,
                    transcript,
                    turn.start_ms,
                    end_ms,
                    turn.language,
                    speech_end_at=turn.speech_end_at,
                    transcript_at=turn.transcript_at,
                    ended_by=turn.ended_by,
                )
            )

    def _enforce_max_turn(self) -> None:
        """A turn that never pauses is committed at max_turn_ms rather than growing forever."""
        turn = self._turn
        if turn is not None and self.now_ms - turn.start_ms >= self.config.max_turn_ms:
            log.info("turn reached %d ms: committing", self.config.max_turn_ms)
            if self._detector is not None:
                self._detector.reset()
            turn.ended_by = "max_length"
            self._close_segment(self.now_ms)
            self._turn = None
            self._own(self._commit_turn(turn, self.now_ms), "commit")

    async def _manual_progress(self) -> None:
        """Without server VAD, the buffer is one growing segment; partials still flow (push-to-talk)."""
        if self._turn is None:
            self._begin_turn(self._audio_base // SAMPLES_PER_MS)
        self._maybe_partial()
        if self._turn is not None and self.now_ms - self._turn.start_ms >= self.config.max_turn_ms:
            await self.commit()

    # ---- partials --------------------------------------------------------------------------------

    def _maybe_partial(self) -> None:
        segment = self._segment
        if segment is None or not self.config.partials or segment.final_task is not None:
            return
        if segment.partial_task is not None and not segment.partial_task.done():
            return
        if self.now_ms - segment.partial_at_ms < self.config.partial_interval_ms:
            return
        segment.partial_at_ms = self.now_ms
        audio = self._segment_audio(segment, self.now_ms)
        segment.partial_task = self._own(self._partial(segment, audio), "stt-partial")

    async def _partial(self, segment: _Segment, audio: np.ndarray) -> None:
        prefix = list(segment.agreement.stable)
        transcript = await self._decode(audio, prefix, segment.language, final=False)
        turn = self._turn
        if turn is not None and turn.finalizing is not None:
            await turn.finalizing  # earlier segments are published first, so `stable` only ever grows
        if transcript is None or turn is None or turn is not self._turn or segment is not self._segment:
            return
        if transcript.degenerate:
            return
        if is_hallucination(transcript) and not prefix:
            return
        if segment.language is None:
            if len(audio) >= DETECT_MIN_MS * SAMPLES_PER_MS and transcript.language_prob >= DETECT_MIN_PROB:
                segment.language = self._detected = transcript.language
            else:
                # language not settled: show the guess, commit nothing decoded in a possibly wrong language
                stable = " ".join(turn.texts).strip()
                await self._emit(ev.transcription_partial(turn.item_id, stable, transcript.text))
                return
        segment.agreement.update(transcript.tokens)
        stable = " ".join([*turn.texts, self._tokens.text(segment.agreement.stable)]).strip()
        unstable = self._tokens.text(segment.agreement.tail)
        await self._emit(ev.transcription_partial(turn.item_id, stable, unstable))

    async def _decode(
        self, audio: np.ndarray, prefix: list[int], language: str | None, *, final: bool
    ) -> Transcript | None:
        if not len(audio):
            return None
        return await self._voice.transcribe(self, audio, prefix, language, final=final)

    # ---- housekeeping ----------------------------------------------------------------------------

    def _own(self, coro: Awaitable[object], name: str) -> asyncio.Task[object]:
        task = self._spawn(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _trim(self) -> None:
        """Keep only what a decode may still need: the open turn, or the prefix padding before speech."""
        pad = self.config.turn_detection.prefix_padding_ms if self.config.turn_detection else 0
        keep_from_ms = self.now_ms - pad - 100
        if self._turn is not None:
            keep_from_ms = min(keep_from_ms, self._turn.start_ms)
            if self._segment is not None:
                keep_from_ms = min(keep_from_ms, self._segment.start_ms)
        elif self._detector is None:
            return  # manual mode keeps the whole (bounded) buffer until commit or clear
        drop = keep_from_ms * SAMPLES_PER_MS - self._audio_base
        if drop > 0:
            drop = min(drop, len(self._audio))
            self._audio.drop(drop)
            self._audio_base += drop
