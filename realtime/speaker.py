"""A response's voice: answer text -> speakable pieces -> TTS -> audio chunks paced to a small lead.

Audio goes out in `chunk_ms` chunks tagged with the response id, a sequence number and their offset,
no more than `lead_ms` ahead of the playback clock (which starts when the first chunk is sent), so an
interruption wastes at most the lead and memory stays bounded. The speaker remembers which text each
stretch of audio carries, so history can be cut to what the listener actually heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from realtime.protocol import server_events as ev
from realtime.protocol.server_events import ServerEvent
from realtime.stages.audio import float_to_pcm16
from realtime.stages.chunker import SpeechChunker
from realtime.voice import SpeechOut

log = logging.getLogger("realtime.speaker")

PIECE_QUEUE = 64
FIRST_PIECE_TIMEOUT = 0.6  # seconds after the first answer text before the first piece is forced out
PIECE_TIMEOUT = 2.0  # later pieces: force a cut when a sentence runs on this long


@dataclass(slots=True)
class SpokenPiece:
    """A piece of text and the stretch of audio carrying it (end grows as its chunks are sent)."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class SpeakerStats:
    first_audio_at: float | None = None
    audio_ms: int = 0
    late_chunks: int = 0  # chunks sent after their playback time (a gap the listener may hear)
    pieces: list[SpokenPiece] = field(default_factory=list)


def heard_text(pieces: list[SpokenPiece], audio_end_ms: int) -> str:
    """The text of the audio up to `audio_end_ms`: whole pieces, then the started piece's words pro rata."""
    out = []
    for piece in pieces:
        if audio_end_ms >= piece.end_ms:
            out.append(piece.text)
            continue
        if audio_end_ms > piece.start_ms:
            share = (audio_end_ms - piece.start_ms) / max(1, piece.end_ms - piece.start_ms)
            words = piece.text.split()
            count = int(len(words) * share)
            if count:
                out.append(" ".join(words[:count]))
        break
    return " ".join(out)


class Speaker:
    def __init__(
        self,
        *,
        speech: SpeechOut,
        response_id: str,
        item_id: str,
        sample_rate: int,
        emit: Callable[[ServerEvent], Awaitable[None]],
        clock: Callable[[], float],
        lead_ms: int = 300,
        chunk_ms: int = 40,
        first_piece_max_words: int = 8,
        held: bool = False,
    ) -> None:
        self._speech = speech
        self._response_id, self._item_id = response_id, item_id
        self._rate = sample_rate
        self._emit = emit
        self._clock = clock
        self._lead = lead_ms / 1000
        self._chunk_samples = sample_rate * chunk_ms // 1000
        self._chunker = SpeechChunker(first_max_words=first_piece_max_words)
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PIECE_QUEUE)
        self._released = asyncio.Event()
        if not held:
            self._released.set()
        self._text_at: float | None = None
        self._last_piece_at: float | None = None
        self._started_at: float | None = None  # playback clock origin
        self._seq = 0
        self._spoken = False  # a piece has gone to synthesis
        self.stats = SpeakerStats()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None

    # ---- producer side (the response's LLM stream) ------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"speaker:{self._response_id}")
        self._timer = asyncio.get_running_loop().create_task(self._force_timer(), name="speaker-timer")

    async def feed(self, text: str) -> None:
        now = self._clock()
        if self._text_at is None:
            self._text_at = self._last_piece_at = now
        for piece in self._chunker.feed(text):
            await self._put(piece)

    async def finish(self) -> None:
        """The answer is complete: speak what is left, then end."""
        for piece in self._chunker.flush():
            await self._put(piece)
        if self._task is not None and not self._task.done():
            await self._pieces.put(None)

    def release(self) -> None:
        """Start sending audio (a speculative response was held until its turn was confirmed)."""
        self._released.set()

    async def wait(self) -> None:
        """Until the last chunk is sent (not played)."""
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        for task in (self._task, self._timer):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, self._timer) if t is not None), return_exceptions=True)

    def played_ms(self) -> int:
        """The server's estimate of what the listener has heard: the playback clock, capped at what was sent."""
        if self._started_at is None:
            return 0
        return min(self.stats.audio_ms, int((self._clock() - self._started_at) * 1000))

    @property
    def failure(self) -> BaseException | None:
        """Why the speaker stopped early (e.g. TtsFailed), if it did."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def _put(self, piece: str) -> None:
        self._last_piece_at = self._clock()
        if self._task is not None and self._task.done():
            return  # synthesis failed: the text still streams, the audio stops
        await self._pieces.put(piece)

    async def _force_timer(self) -> None:
        """Cut a piece when none came for too long (a model that never ends a sentence)."""
        while True:
            await asyncio.sleep(0.1)
            if self._last_piece_at is None or self._chunker.pending_words == 0:
                continue
            limit = FIRST_PIECE_TIMEOUT if not self.stats.pieces and self._pieces.empty() else PIECE_TIMEOUT
            if self._clock() - self._last_piece_at >= limit:
                for piece in self._chunker.force():
                    await self._put(piece)

    # ---- consumer side: synthesis and pacing ------------------------------------------------------

    async def _run(self) -> None:
        try:
            while (piece := await self._pieces.get()) is not None:
                await self._speak(piece)
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _speak(self, text: str) -> None:
        piece = SpokenPiece(text, self.stats.audio_ms, self.stats.audio_ms)
        pending = np.zeros(0, dtype=np.float32)
        # the first piece is what the listener waits for: the embedded LLM pauses until its audio is there
        hold = self._speech.first_piece() if not self._spoken else None
        self._spoken = True
        try:
            async with self._speech.lease() as tts, contextlib.aclosing(tts.stream(text, self._rate)) as chunks:
                async for chunk in chunks:
                    if hold is not None:
                        hold.end()
                    pending = np.concatenate([pending, chunk])
                    while len(pending) >= self._chunk_samples:
                        await self._send(pending[: self._chunk_samples], piece)
                        pending = pending[self._chunk_samples :]
        finally:
            if hold is not None:
                hold.end()
        if len(pending):
            await self._send(pending, piece)

    async def _send(self, samples: np.ndarray, piece: SpokenPiece) -> None:
        await self._released.wait()
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
            self.stats.first_audio_at = now
        offset_ms = self.stats.audio_ms
        ahead = self._started_at + offset_ms / 1000 - now
        if ahead > self._lead:
            await asyncio.sleep(ahead - self._lead)
        elif ahead < 0 and offset_ms:
            self.stats.late_chunks += 1
        if piece.end_ms == piece.start_ms:  # the piece's first chunk: its text goes just before
            await self._emit(ev.audio_transcript_delta(self._response_id, self._item_id, piece.text, offset_ms))
            self.stats.pieces.append(piece)
        self._seq += 1
        await self._emit(
            ev.audio_delta(self._response_id, self._item_id, self._seq, offset_ms, float_to_pcm16(samples))
        )
        self.stats.audio_ms += len(samples) * 1000 // self._rate
        piece.end_ms = self.stats.audio_ms
