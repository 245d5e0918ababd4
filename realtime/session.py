"""One user's session on one connection: it owns its tasks, its conversation and the running response.

Tasks (reader, writer, heartbeat, response) are named, kept in one registry, and cancelled and awaited
when the session ends, whichever side ends it. Outbound events go through one bounded queue, so a
client that stops reading stalls its own response (backpressure) and is then closed with SLOW_CONSUMER,
never growing server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from db import Database, DatabaseUnavailable
from db.users import as_uuid
from realtime.config import Settings
from realtime.documents import Attachment, DocumentContext, DocumentLibrary, cited_sources
from realtime.errors import (
    ClientError,
    CloseCode,
    Forbidden,
    InvalidState,
    ItemNotFound,
    MessageTooLarge,
    ModelCannotSee,
    NoActiveResponse,
    RealtimeError,
    ServerError,
    UpstreamError,
    UpstreamRejected,
)
from realtime.gpu_scheduler import GpuError, GpuScheduler, ModelLoadFailed
from realtime.history import HistoryWriter, MessageRecord
from realtime.listener import CommittedTurn, InvalidAudio, Listener, ListenerConfig, NotListening
from realtime.metrics import Metrics
from realtime.models import LLM
from realtime.protocol import server_events as ev
from realtime.protocol.client_events import (
    ClientEvent,
    ConversationItemCreate,
    InputAudio,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    InputFile,
    InputImage,
    ItemDelete,
    ItemTruncate,
    Limits,
    ModelsStatus,
    Ping,
    Pong,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    ToolCancel,
    ToolConfirm,
    parse_client_event,
    peek_ids,
)
from realtime.protocol.codec import PROTOCOL_VERSION, Encoding, decode_frame, encode_frame, transcode
from realtime.protocol.heartbeat import Due, Heartbeat
from realtime.protocol.server_events import ServerEvent
from realtime.protocol.state import ConnectionState, State, Trigger
from realtime.research import Progress, Researcher, ResearchUnavailable, SearchFailed, wants_research
from realtime.speaker import Speaker, SpokenPiece, heard_text
from realtime.stages.audio import Resampler, pcm16_to_float
from realtime.stages.llm import ChatBackend, ChatDelta, ChatDone, ChatRequest, ChatToolCall
from realtime.stages.reasoning import Part, ThinkSplitter
from realtime.stages.stt import is_hallucination
from realtime.stages.tts import TtsFailed
from realtime.stages.turn_detection import TurnDetectionConfig
from realtime.stages.vision import CheckedImage, ImageLimits, check_image
from realtime.tools.loop import (
    PastCall,
    ToolTurn,
    as_fallback,
    describe,
    is_tools_refusal,
    past_calls,
    past_messages,
    record,
    spoken_answer,
)
from realtime.tools.registry import ToolBox, ToolOutcome, toolbox_for
from realtime.voice import SpeechOut, Voice

log = logging.getLogger("realtime.session")

ERROR_BURST = 50  # invalid messages tolerated in a burst...
ERROR_REFILL_PER_S = 5.0  # ...and per second after that, before the link is closed
CLOSE_TIMEOUT = 5.0
FLUSH_TIMEOUT = 2.0
RESEARCH_FILLER = "Let me search the web for that."  # spoken while a spoken research turn searches
MAX_SESSION_DOCUMENTS = 8  # attached documents a session keeps for later turns (the newest; docs/protocol.md)
DOCUMENT_BUSY_INTERVAL = 1.0  # while a long attachment is read, the link counts as alive this often


class SessionClosing(Exception):
    """Raised inside a session task when the session is ending; the task just stops."""


class _SessionLog(logging.LoggerAdapter):
    """Prefixes every record with the session id (convention: the session id in every record)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['session']}] {msg}", kwargs


class PeerClosed(Exception):
    """The client closed the link (or it broke)."""

    def __init__(self, code: int = CloseCode.NORMAL) -> None:
        super().__init__(code)
        self.code = code


class Transport(Protocol):
    """What a session needs from a websocket. `receive` raises PeerClosed when the link is gone."""

    async def receive(self) -> bytes | str: ...

    async def send(self, data: bytes | str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


# A handler a transport may call with each message as it arrives, before `receive` would return it (True:
# taken). Transports that can (the server's websocket) have `set_direct(handler | None) -> bool`.
DirectHandler = Callable[[bytes | str], bool]


@dataclass(frozen=True, slots=True)
class HistoryStore:
    """Where this session's history goes: the user's id in the database, the writer, the database."""

    user_id: str
    writer: HistoryWriter
    db: Database


class ConversationUnknown(ClientError):
    code = "conversation_not_found"


class StoreUnavailable(ServerError):
    code = "history_unavailable"
    safe_message = "Stored history is unavailable right now; try again shortly."


class LibraryUnavailable(ClientError):
    """`library` asked for where there is none: no database, or a token that is not an account's."""

    code = "library_unavailable"
    safe_message = "This session has no document library (it needs an account on a server with a database)."


class DocumentsUnavailable(ServerError):
    """The turn's documents could not be searched (embedding service or database down): answered without."""

    code = "documents_unavailable"
    safe_message = "The documents could not be searched right now; this answer does not use them."


@dataclass(eq=False)
class Link:
    """One websocket attachment of a session: its transport, encoding, heartbeat and tasks."""

    transport: Transport
    encoding: Encoding
    heartbeat: Heartbeat
    ended: asyncio.Future[CloseReason] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    resumable: bool = True  # False: a lost link ends the session (nobody can resume it)
    reading: bool = False  # the reader waits for the next message: taking one directly keeps the order
    direct: Callable[[DirectHandler | None], bool] | None = None  # the transport's `set_direct`, if it has one


# Links that end like this were lost, not closed (no close frame: 1005/1006 as the websocket layer
# reports it, a network error, our ping timeout): the session waits for a resume. Any other end (a
# clean close, a protocol violation, a slow reader) ends the session.
LOST_LINK_CODES = frozenset({1005, 1006, 4000})


@dataclass(frozen=True, slots=True)
class CloseReason:
    code: int
    reason: str
    by_peer: bool = False
    flush: bool = False  # send what is queued before closing (graceful shutdown)


DEFAULT_AUDIO_FORMAT: dict[str, Any] = {"type": "pcm16", "sample_rate": 24_000}
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "min_speech_duration_ms": 100,
    "segment_pause_ms": 200,
    "turn_model": True,
    "turn_model_threshold": 0.5,
    "create_response": True,
    "interrupt_response": True,
    "interrupt_min_speech_ms": 250,
}
DEFAULT_TRANSCRIPTION: dict[str, Any] = {"language": None, "partials": True}
AUDIO_FIELDS = ("input_audio_format", "turn_detection", "input_audio_transcription")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a client may change with session.update (the first five also per response)."""

    model: str
    instructions: str
    temperature: float | None = None
    max_output_tokens: int | None = None
    reasoning: bool | None = None
    research: str = "auto"  # web research: on | off | auto (when the question asks for fresh facts)
    input_audio_format: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_AUDIO_FORMAT))
    output_audio_format: dict[str, Any] | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))
    input_audio_transcription: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRANSCRIPTION))
    vision_model: str | None = None  # for responses with images in their context; None: `model`
    tools: dict[str, Any] | None = None  # None: off; {"confirm": [tool names] | None (server's list)}
    library: bool | list[str] = False  # the user's document library: all of it, off, or these documents

    def to_wire(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "tools": self.tools,
            "model": self.model,
            "vision_model": self.vision_model,
            "instructions": self.instructions,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
            "reasoning": self.reasoning,
            "research": self.research,
            "input_audio_format": self.input_audio_format,
            "output_audio_format": self.output_audio_format,
            "turn_detection": self.turn_detection,
            "input_audio_transcription": self.input_audio_transcription,
        }


@dataclass(slots=True)
class HistoryEntry:
    role: str
    content: str
    reasoning: str = ""
    status: str = "completed"
    item_id: str | None = None
    pieces: list[SpokenPiece] | None = None  # assistant audio: which text each stretch of audio carried
    images: tuple[CheckedImage, ...] = ()  # a user message's checked images (sent to the model as `images`)
    documents: tuple[Attachment, ...] = ()  # a user message's attached documents (their passages, per turn)
    tool_calls: tuple[PastCall, ...] = ()  # an assistant turn's tool calls, shown to the model in later turns

    @property
    def size(self) -> int:
        return len(self.content) + len(self.reasoning) + sum(call.size for call in self.tool_calls)


@dataclass(slots=True)
class Response:
    """A response being generated; filled in by its task, finished exactly once."""

    id: str
    item_id: str
    settings: SessionSettings
    started_at: float
    task: asyncio.Task[None] | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    chars: int = 0
    first_token_at: float | None = None
    first_text_at: float | None = None
    usage: dict[str, int | None] = field(default_factory=lambda: {"input_tokens": None, "output_tokens": None})
    finished: bool = False
    speaker: Speaker | None = None
    turn: CommittedTurn | None = None  # the spoken turn it answers (for speech-end timings)
    truncate_ms: int | None = None  # the client's report of what it played
    # A speculative response (started before its spoken turn was confirmed) holds its events here until
    # the turn commits; `released` is set when they are sent and the response becomes the session's.
    held: list[ServerEvent] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    tentative_text: str = ""
    interrupted_at: float | None = None  # when barge-in was decided
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # stored with the turn (attachments)
    documents: DocumentContext | None = None  # the numbered document passages it was given


class Session:
    def __init__(
        self,
        *,
        user: str,
        settings: Settings,
        admin: bool = False,
        llm: ChatBackend,
        voice: Voice | None = None,
        speech: SpeechOut | None = None,
        scheduler: GpuScheduler | None = None,
        metrics: Metrics | None = None,
        store: HistoryStore | None = None,
        research: Researcher | None = None,
        documents: DocumentLibrary | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_id: str | None = None,
    ) -> None:
        self.session_id = session_id or "sess_" + secrets.token_hex(8)
        self.user = user
        self.admin = admin
        self.resume_secret = secrets.token_urlsafe(24)
        self._settings = settings
        self._llm = llm
        self._voice = voice
        self._speech = speech
        self._scheduler = scheduler
        self._metrics = metrics
        self._store = store
        self._research = research
        self._documents = documents
        self.conversation_id: str | None = None
        self._listener: Listener | None = None
        self._clock = clock
        self._limits = Limits(
            max_text_chars=settings.max_text_chars,
            max_audio_bytes=settings.max_message_size,
            max_image_bytes=min(settings.max_image_size, settings.max_message_size),
            max_images=settings.max_images_per_message,
            max_file_bytes=min(settings.max_document_size, settings.max_message_size),
        )
        self._image_limits = ImageLimits(settings.max_image_size, settings.max_image_pixels)
        self._defaults = SessionSettings(
            model=settings.llm_model,
            instructions=settings.instructions,
            vision_model=settings.vision_model,
            input_audio_format=dict(DEFAULT_AUDIO_FORMAT) if voice is not None else None,
            output_audio_format=None,  # text only until the client asks for speech (it chooses the rate)
        )
        self.config = self._defaults
        self._conn = ConnectionState()
        self._out: asyncio.Queue[ServerEvent] = asyncio.Queue(maxsize=settings.outbound_queue_size)
        self._seq = 0
        self._link: Link | None = None
        self._send_lock = asyncio.Lock()  # numbering, remembering and sending an event is one step
        # For resume: the last events sent, as msgpack frames, oldest first, ending at `_seq`. Frames, not
        # events: bytes are invisible to the garbage collector, and at 4096 events a session the event objects
        # made every full collection walk millions of objects (a 50-100 ms stall of all sessions).
        self._replay: deque[bytes] = deque()
        self._replay_bytes = 0
        self._expiry: asyncio.Task[None] | None = None
        self._lifetime: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._links = 0
        self._first_encoding: Encoding | None = None
        self._ids = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Future[CloseReason] | None = None
        self._error_tokens = float(ERROR_BURST)
        self._error_at = clock()
        self.history: list[HistoryEntry] = []
        self._turn_lock = asyncio.Lock()  # typed and spoken turns change the running response one at a time
        self._speculation: Response | None = None
        self.response: Response | None = None
        self._toolbox: ToolBox | None = None  # the user's workspace and sandbox, made on first use
        self._confirmations: dict[str, asyncio.Future[bool]] = {}  # call id -> the user's answer
        self._prompted_tools: set[str] = set()  # models that refused native `tools` (fallback prompt)
        self._tool_tasks: dict[str, asyncio.Task[ToolOutcome]] = {}  # running calls, for tool.cancel
        self.log = _SessionLog(log, {"session": self.session_id})

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def encoding(self) -> Encoding | None:
        return self._link.encoding if self._link is not None else self._first_encoding

    @property
    def detached(self) -> bool:
        return self._link is None

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def start(self, encoding: Encoding, *, first_events: list[ServerEvent] | None = None) -> None:
        """Begin the session (session.created is queued); links come and go through `serve`."""
        self._first_encoding = encoding
        self._closing = asyncio.get_running_loop().create_future()
        self._listener = self._make_listener()
        for event in first_events or ():
            self._out.put_nowait(event)
        self._out.put_nowait(ev.session_created(self._session_info()))
        self._spawn(self._writer(), "writer")
        self._lifetime = asyncio.get_running_loop().create_task(self._live(), name=f"{self.session_id}:lifetime")

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def _live(self) -> None:
        assert self._closing is not None
        try:
            reason = await self._closing
        except asyncio.CancelledError:
            reason = CloseReason(CloseCode.GOING_AWAY, "server shutting down")
        try:
            await self._shutdown(reason)
        finally:
            self._ended.set()

    async def serve(
        self,
        transport: Transport,
        encoding: Encoding,
        *,
        resume_after: int | None = None,
        heartbeat: bool = True,
        resumable: bool = True,
    ) -> None:
        """Serve one websocket link until it ends. A dropped link leaves the session detached for
        `resume_grace` seconds, keeping what it sends for a resume; a clean close ends the session.

        A link whose client does not speak our ping/pong (the OpenAI dialect) has `heartbeat=False` (the
        transport's control pings still find dead peers), and one that cannot be resumed `resumable=False`."""
        s = self._settings
        beat = Heartbeat(self._clock(), s.ping_interval, s.ping_timeout) if heartbeat else Heartbeat(0.0, None, None)
        link = Link(transport, encoding, beat, resumable=resumable)
        link.ended = asyncio.get_running_loop().create_future()
        first = self._links == 0
        self._links += 1
        # the first link gets what was queued before it existed (session.created); a resume what it missed
        await self._attach(link, 0 if first else resume_after, announce=not first and resume_after is not None)
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({link.ended, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not self._ended.is_set():
            await self._detach(link, link.ended.result())
        if not self._ended.is_set() and self._closing is not None and self._closing.done():
            await self._ended.wait()  # the session is ending: return once its close is done

    def can_resume(self, last_seq: int) -> bool:
        """Whether every event after `last_seq` can still be replayed."""
        if self._ended.is_set() or last_seq < 0 or last_seq > self._seq:
            return False
        return last_seq >= self._oldest_kept - 1

    async def _attach(self, link: Link, resume_after: int | None, *, announce: bool) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        old = self._link
        async with self._send_lock:
            self._link = link
            if resume_after is not None:
                for packed in list(self._replay)[max(0, resume_after + 1 - self._oldest_kept) :]:
                    await self._send(link, transcode(packed, link.encoding))
        if old is not None and not old.ended.done():
            old.ended.set_result(CloseReason(CloseCode.SESSION_RESUMED, "session resumed on another link"))
        link.tasks = [self._spawn(self._reader(link), "reader"), self._spawn(self._heartbeat_loop(link), "heartbeat")]
        link.direct = getattr(link.transport, "set_direct", None)
        if link.direct is not None and not link.direct(lambda data: self._direct_frame(link, data)):
            link.direct = None
        if announce and resume_after is not None:
            self.log.info("resumed after seq %d (now %d)", resume_after, self._seq)
            await self._emit(ev.session_resumed(self._session_info(), resume_after))

    async def _detach(self, link: Link, reason: CloseReason) -> None:
        """The link is over; the session lives on for a resume, unless the client said goodbye."""
        self._undirect(link)
        for task in link.tasks:
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        if not reason.by_peer:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await link.transport.close(reason.code, reason.reason)
        if self._link is not link:
            return  # replaced by a newer link (a resume)
        async with self._send_lock:
            self._link = None
        grace = self._settings.resume_grace
        if grace is None or not link.resumable or reason.code not in LOST_LINK_CODES:
            self.request_close(reason.code, reason.reason, by_peer=True)
            return
        self.log.info("link lost (%s %s): detached, resumable for %.0fs", reason.code, reason.reason, grace)
        self._expiry = self._spawn(self._expire(grace), "resume-window")

    async def _expire(self, grace: float) -> None:
        await asyncio.sleep(grace)
        self.request_close(CloseCode.GOING_AWAY, "resume window expired", by_peer=True)

    def _link_lost(self, link: Link, reason: CloseReason) -> None:
        if link.ended is not None and not link.ended.done():
            link.ended.set_result(reason)

    def request_close(self, code: int, reason: str, *, by_peer: bool = False, flush: bool = False) -> None:
        """Ask the session to end (idempotent: the first reason wins)."""
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(CloseReason(code, reason, by_peer, flush))

    async def _shutdown(self, reason: CloseReason) -> None:
        if self._conn.state not in (State.CLOSING, State.CLOSED):
            self._conn.apply(Trigger.CLOSE)
        self.log.info("closing: code=%s reason=%s by_peer=%s", reason.code, reason.reason, reason.by_peer)
        if self._link is not None:
            self._undirect(self._link)
        if self._listener is not None:
            await self._listener.aclose()
        await self._abort_speculation()
        if self.response is not None:
            await self._cancel_response("session_closed")
        writer = next((t for t in self._tasks if t.get_name().endswith(":writer")), None)
        others = [t for t in self._tasks if t is not writer]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if writer is not None:
            if reason.flush and not reason.by_peer:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLUSH_TIMEOUT):
                        await self._out.join()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        self._tasks.clear()
        link, self._link = self._link, None
        if link is not None and not reason.by_peer:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await link.transport.close(reason.code, reason.reason)
        self._conn.apply(Trigger.CLOSED)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, SessionClosing):
            self.log.error("task %s failed", task.get_name(), exc_info=exc)
            self.request_close(CloseCode.INTERNAL_ERROR, "internal error")

    # ---- outbound --------------------------------------------------------------------------------

    async def _emit(self, event: ServerEvent) -> None:
        """Queue one event. Waits (bounded) when the client is not reading: backpressure on the producer."""
        try:
            self._out.put_nowait(event)
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(self._settings.send_timeout):
                await self._out.put(event)
        except TimeoutError:
            self.request_close(CloseCode.SLOW_CONSUMER, "client is not reading")
            raise SessionClosing from None

    async def _writer(self) -> None:
        """The only sender: numbers events here, so `seq` follows the wire order exactly, without gaps.

        Every event is also kept in a bounded replay buffer, and sent if a link is attached; while
        detached the session goes on and a resume replays what was missed. Text deltas already waiting
        behind one another are sent as one (`joined`): a model whose tokens arrive faster than they can
        be sent one by one costs one frame per burst, not one per token, and its last token is not
        queued behind the others' frames. Nothing waits to be joined: only what is already queued is."""
        carried: ServerEvent | None = None
        while True:
            event = carried if carried is not None else await self._out.get()
            carried, taken = None, 1
            while not self._out.empty():
                following = self._out.get_nowait()
                both = ev.joined(event, following)
                if both is None:
                    carried = following  # sent (and marked done) next round
                    break
                event, taken = both, taken + 1
            try:
                async with self._send_lock:
                    self._seq += 1
                    wire = event.to_wire(self._seq)
                    packed = encode_frame(wire, Encoding.MSGPACK)
                    self._remember(packed)
                    link = self._link
                    if link is not None:
                        if event.type == "ping":
                            link.heartbeat.ping_written(event.fields["ts"], self._seq)
                        json_link = link.encoding is not Encoding.MSGPACK
                        await self._send(link, encode_frame(wire, link.encoding) if json_link else packed)
            finally:
                for _ in range(taken):
                    self._out.task_done()

    async def _send(self, link: Link, data: bytes | str) -> None:
        """One encoded frame to the link; a link too slow or gone is lost (the session stays, for resume)."""
        if link.ended is None or link.ended.done():
            return
        try:
            async with asyncio.timeout(self._settings.send_timeout):
                await link.transport.send(data)
        except TimeoutError:
            self._link_lost(link, CloseReason(CloseCode.SLOW_CONSUMER, "client is not reading"))
        except (PeerClosed, OSError, RuntimeError):
            self._link_lost(link, CloseReason(CloseCode.ABNORMAL, "link lost", by_peer=True))

    @property
    def _oldest_kept(self) -> int:
        """The seq of the oldest frame in the replay buffer (`_seq + 1` when it is empty): they are consecutive."""
        return self._seq - len(self._replay) + 1

    def _remember(self, packed: bytes) -> None:
        """Keep the frame of event `_seq` for resume, within the bounds (oldest dropped first)."""
        self._replay.append(packed)
        self._replay_bytes += len(packed)
        limits = self._settings
        while self._replay and (
            len(self._replay) > limits.replay_buffer_events or self._replay_bytes > limits.replay_buffer_bytes
        ):
            self._drop_oldest()

    def _release(self, acked: int) -> None:
        """The client has every event up to `acked` (its pong to the ping sent as that event): a resume never
        needs them again, so a client that answers pings costs the server ~one ping interval of events, not
        the whole bound (8 MiB of audio a talking session, ~4 096 pings a long-idle one)."""
        while self._replay and self._oldest_kept <= acked:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        self._replay_bytes -= len(self._replay.popleft())

    @property
    def replay_size(self) -> tuple[int, int]:
        """Frames and bytes kept for a resume (for /metrics)."""
        return len(self._replay), self._replay_bytes

    # ---- inbound ---------------------------------------------------------------------------------

    async def _reader(self, link: Link) -> None:
        while True:
            link.reading = True
            try:
                data = await link.transport.receive()
            except PeerClosed as closed:
                self._link_lost(link, CloseReason(closed.code, "closed by client", by_peer=True))
                return
            finally:
                link.reading = False
            link.heartbeat.inbound(self._clock())
            if self._conn.state not in (State.IDLE, State.RESPONDING):
                continue
            await self._handle_frame(link, data)

    def _direct_frame(self, link: Link, data: bytes | str) -> bool:
        """Take an audio append as it comes off the socket (the transport's direct handler), without a task
        switch: the bulk of what a streaming client sends. Only while the reader waits for its next message
        (so nothing overtakes a message it is still handling), and only when the listener can take the audio
        without waiting. Anything else, an invalid message included, is left to the reader (False), which
        handles it as before: errors are answered there, once."""
        listener = self._listener
        if (
            not link.reading
            or link is not self._link
            or listener is None
            or self._conn.state not in (State.IDLE, State.RESPONDING)
        ):
            return False
        taken_at = time.perf_counter()
        try:
            raw = decode_frame(data, link.encoding, max_size=self._settings.max_message_size)
            if raw.get("type") != InputAudioAppend.TYPE:
                return False
            event = parse_client_event(raw, base64_binary=link.encoding is Encoding.JSON, limits=self._limits)
            if not self._conn.accepts(event.TYPE) or not isinstance(event, InputAudioAppend):
                return False
            if not listener.try_append(event.audio, taken_at=taken_at):
                return False
        except (ClientError, ServerError):
            return False
        except Exception:  # as a failed reader task: logged, the session closes with 1011
            self.log.exception("direct audio handling failed")
            self.request_close(CloseCode.INTERNAL_ERROR, "internal error")
            return True
        link.heartbeat.inbound(self._clock())
        if self._metrics is not None:
            self._metrics.audio_direct += 1
        return True

    def _undirect(self, link: Link) -> None:
        if link.direct is not None:
            link.direct(None)
            link.direct = None

    async def _handle_frame(self, link: Link, data: bytes | str) -> None:
        raw: dict[str, Any] | None = None
        encoding = link.encoding
        taken_at = time.perf_counter()
        try:
            raw = decode_frame(data, encoding, max_size=self._settings.max_message_size)
            event = parse_client_event(raw, base64_binary=encoding is Encoding.JSON, limits=self._limits)
            if not self._conn.accepts(event.TYPE):
                return
            await self._dispatch(link, event, taken_at)
        except (ClientError, ServerError) as exc:  # both carry a message safe to show
            event_id, event_type = peek_ids(raw) if raw is not None else (None, None)
            await self._client_error(exc, event_id, event_type)

    async def _client_error(self, exc: RealtimeError, event_id: str | None, event_type: str | None) -> None:
        now = self._clock()
        self._error_tokens = min(ERROR_BURST, self._error_tokens + (now - self._error_at) * ERROR_REFILL_PER_S)
        self._error_at = now
        self._error_tokens -= 1
        self.log.debug("client error %s: %s", exc.code, exc.message)
        await self._emit(ev.error(exc.code, exc.message, event_id=event_id, event_type=event_type, param=exc.param))
        if self._error_tokens < 0:
            self.request_close(CloseCode.TOO_MANY_ERRORS, "too many invalid messages", flush=True)

    async def _dispatch(self, link: Link, event: ClientEvent, taken_at: float | None = None) -> None:
        match event:
            case Pong():
                if link.heartbeat.pong(event.ts, self._clock()) is not None:
                    self._release(link.heartbeat.acked)
            case Ping():
                await self._emit(ev.pong(event.ts, event.event_id))
            case SessionUpdate():
                await self._update_session(event)
                await self._emit(ev.session_updated(self._session_info()))
            case InputAudioAppend():
                await self._require_listener().append(event.audio, taken_at=taken_at)
            case InputAudioCommit():
                await self._require_listener().commit()
            case InputAudioClear():
                await self._require_listener().clear()
            case ItemTruncate():
                await self._truncate(event)
            case ItemDelete():
                await self._delete_item(event)
            case ModelsStatus():
                if not self.admin:
                    raise Forbidden("Model status needs an admin token.", param="type")
                if self._scheduler is None:
                    raise InvalidState("This server has no model scheduler.", param="type")
                await self._emit(ev.models_status(self._scheduler.status(), event.event_id))
            case ConversationItemCreate():
                if self._listener is not None:
                    await self._listener.judged()  # a spoken turn in audio sent before it comes first
                await self._abort_speculation()
                text, content, images, documents = await self._item_content(event)
                async with self._turn_lock:
                    if event.role == "user" and self.response is not None:
                        await self._cancel_response("superseded")
                    item_id = self._new_id("item")
                    entry = HistoryEntry(event.role, text, item_id=item_id, images=images, documents=documents)
                    self.history.append(entry)
                    self._trim_history()
                    if images:
                        self._forget_old_images()
                    if documents:
                        self._forget_old_documents()
                    await self._emit(ev.item_created(item_id, event.role, content))
                    attachments = [image.metadata() for image in images]
                    attachments += [{"type": "document", **d.to_json()} for d in documents]
                    await self._record(item_id, event.role, text, attachments=attachments or None)
            case ResponseCreate():
                self._check_research(event.overrides, "response.research")  # refused: nothing changes
                self._check_library(event.overrides, "response.library")
                await self._abort_speculation()
                if self._listener is not None:
                    await self._listener.settled()
                async with self._turn_lock:
                    if self.response is not None:
                        await self._cancel_response("superseded")
                    await self._start_response(replace(self.config, **self._resolve(event.overrides)))
            case ToolConfirm():
                answer = self._confirmations.get(event.call_id)
                if answer is None or answer.done():
                    raise InvalidState("No tool call is waiting for that confirmation.", param="call_id")
                answer.set_result(event.approve)
            case ToolCancel():
                running = self._tool_tasks.get(event.call_id)
                if running is None or running.done():
                    raise InvalidState("No tool call with that id is running.", param="call_id")
                running.cancel()
            case ResponseCancel():
                async with self._turn_lock:
                    active = self.response
                    if active is None or (event.response_id is not None and event.response_id != active.id):
                        raise NoActiveResponse("There is no active response to cancel.", param="response_id")
                    await self._cancel_response("client_cancelled")

    def _resolve(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Null instructions mean the server's instructions; other nulls clear the session's own value
        (temperature: the model's default; max_output_tokens: REALTIME_MAX_OUTPUT_TOKENS; reasoning: the
        model's default; input_audio_format: stop listening; turn_detection: manual commits). The model
        cannot be null. Audio objects replace the previous ones, with defaults for fields not given."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("instructions", "vision_model") and value is None:
                value = getattr(self._defaults, name)
            elif name == "turn_detection" and value is not None:
                value = {**DEFAULT_TURN_DETECTION, **value}
            elif name == "input_audio_transcription":
                value = {**DEFAULT_TRANSCRIPTION, **(value or {})}
            elif name == "research" and value is None:
                value = self._defaults.research
            elif name == "library" and value is None:
                value = self._defaults.library
            out[name] = value
        return out

    async def _update_session(self, event: SessionUpdate) -> None:
        if self.response is not None and "model" in event.changes and event.changes["model"] != self.config.model:
            raise InvalidState("The model cannot change while a response is running.", param="session.model")
        self._check_research(event.changes, "session.research")
        self._check_library(event.changes, "session.library")
        changes = dict(event.changes)
        if "conversation_id" in changes:
            await self._continue_conversation(changes.pop("conversation_id"))
        before = self.config
        self.config = replace(self.config, **self._resolve(changes))
        if any(getattr(before, name) != getattr(self.config, name) for name in AUDIO_FIELDS):
            if self._listener is not None:
                await self._listener.judged()  # audio sent before the update is heard with the old settings
                await self._listener.aclose()
            self._listener = self._make_listener()

    # ---- voice input -----------------------------------------------------------------------------

    def _make_listener(self) -> Listener | None:
        voice, cfg = self._voice, self.config
        if voice is None or cfg.input_audio_format is None:
            return None
        td = cfg.turn_detection
        detection = None
        if td is not None:
            detection = TurnDetectionConfig(
                threshold=td["threshold"],
                prefix_padding_ms=td["prefix_padding_ms"],
                silence_duration_ms=td["silence_duration_ms"],
                min_speech_duration_ms=td["min_speech_duration_ms"],
                segment_pause_ms=td["segment_pause_ms"],
                turn_model=td["turn_model"],
                turn_model_threshold=td["turn_model_threshold"],
            )
        config = ListenerConfig(
            sample_rate=cfg.input_audio_format["sample_rate"],
            turn_detection=detection,
            language=cfg.input_audio_transcription.get("language"),
            partials=cfg.input_audio_transcription.get("partials", True),
            partial_interval_ms=self._settings.partial_interval_ms,
            max_turn_ms=self._settings.max_turn_ms,
        )
        return Listener(
            config=config,
            voice=voice,
            emit=self._emit,
            on_commit=self._on_spoken_turn,
            new_id=self._new_id,
            spawn=self._spawn,
            on_speech=self._on_user_speech,
            on_tentative=self._speculate,
            on_resumed=self._abort_speculation,
            # bench/load.py reads it: reader took the message -> its VAD results applied to turn detection
            frame_latency=self._metrics.audio_frame.observe if self._metrics is not None else None,
            clock=self._clock,
        )

    def _require_listener(self) -> Listener:
        if self._listener is None:
            if self._voice is None:
                raise NotListening("Voice input is not available on this server.", param="type")
            raise NotListening("The session is not listening (input_audio_format is null).", param="type")
        return self._listener

    async def _on_spoken_turn(self, turn: CommittedTurn) -> None:
        """A committed spoken turn becomes a user message, and (server VAD) starts the reply."""
        if self._metrics is not None:
            self._metrics.turns.labels(turn.ended_by).inc()
        if self._confirmations and (answer := spoken_answer(turn.transcript)) is not None:
            await self._answer_by_voice(turn, answer)
            return
        async with self._turn_lock:
            if self.response is not None:
                await self._cancel_response("superseded")
            speculation, self._speculation = self._speculation, None
            self.history.append(HistoryEntry("user", turn.transcript, item_id=turn.item_id))
            self._trim_history()
            content = [{"type": "input_audio", "transcript": turn.transcript}]
            await self._emit(ev.item_created(turn.item_id, "user", content))
            await self._record(
                turn.item_id,
                "user",
                turn.transcript,
                audio_ms=turn.audio_end_ms - turn.audio_start_ms,
                timings={"language": turn.language},
            )
            td = self.config.turn_detection
            if td is None or not td.get("create_response", True):
                await self._drop(speculation)
            elif speculation is not None and speculation.tentative_text == turn.transcript:
                await self._adopt(speculation, turn)
            else:
                await self._drop(speculation)
                await self._start_response(self.config, turn=turn)

    # ---- speculative responses -------------------------------------------------------------------

    async def _speculate(self, transcript: str) -> None:
        """The user paused after final words: start the reply now, held until the turn is confirmed.

        The LLM and TTS get the rest of the silence window (silence_duration_ms - segment_pause_ms) as a
        head start; if the user goes on speaking the speculation is dropped and nobody saw it.
        """
        td = self.config.turn_detection
        if not transcript or td is None or not td.get("create_response", True) or self.response is not None:
            return
        if self._speculation is not None:
            if self._speculation.tentative_text == transcript:
                return
            await self._abort_speculation()
        research = self._wants_research(self.config, transcript)
        if research and self.config.research != "on" and self._document_turn(self.config):
            research = False  # "auto" does not research a question about the user's documents
        if self._conn.state is not State.IDLE or research:
            return  # a research turn starts once the turn is confirmed: no searches for words not yet final
        messages = [*self._llm_messages(self.config), {"role": "user", "content": transcript}]
        settings = self._for_images(self.config, messages)
        response = self._new_response(settings, held=True)
        response.tentative_text = transcript
        self._speculation = response
        spoken = self._spoken_format(settings)
        await self._emit_for(response, ev.response_created(response.id, response.item_id, settings.model, spoken))
        self._start_speaker(response)
        response.task = self._spawn(self._answer(response, messages), f"speculative:{response.id}")

    async def _abort_speculation(self) -> None:
        speculation, self._speculation = self._speculation, None
        await self._drop(speculation)

    async def _drop(self, response: Response | None) -> None:
        """Stop a speculative response that was never shown: no events, no history."""
        if response is None:
            return
        if response.task is not None and not response.task.done():
            response.task.cancel()
            await asyncio.gather(response.task, return_exceptions=True)
        if response.speaker is not None:
            await response.speaker.aclose()
        response.finished = True

    async def _adopt(self, response: Response, turn: CommittedTurn) -> None:
        """The turn is confirmed as speculated: the held reply becomes the session's, its events go out."""
        if self._conn.state is not State.IDLE:
            await self._drop(response)
            return
        self._conn.apply(Trigger.RESPONSE_START)
        self.response = response
        response.turn = turn
        held = response.held or []
        while held:  # events the task adds meanwhile join the end of this list, so order holds
            await self._emit(held.pop(0))
        response.held = None
        response.released.set()
        if response.speaker is not None:
            response.speaker.release()

    async def _emit_for(self, response: Response, event: ServerEvent) -> None:
        if response.held is not None:
            response.held.append(event)
        else:
            await self._emit(event)

    async def _on_user_speech(self, duration_ms: int) -> None:
        """Barge-in: the user has been speaking over the assistant's audio long enough to mean it."""
        if self._confirmations:
            return  # the user is answering a tool confirmation, not interrupting
        response, td = self.response, self.config.turn_detection
        if response is None or response.speaker is None or response.speaker.stats.first_audio_at is None:
            return
        if td is None or not td.get("interrupt_response", True) or duration_ms < td["interrupt_min_speech_ms"]:
            return
        async with self._turn_lock:
            if self.response is response:
                self.log.info("barge-in after %d ms of speech: interrupting %s", duration_ms, response.id)
                response.interrupted_at = self._clock()
                await self._cancel_response("barge_in", status="interrupted")

    async def _item_content(
        self, event: ConversationItemCreate
    ) -> tuple[str, list[dict[str, Any]], tuple[CheckedImage, ...], tuple[Attachment, ...]]:
        """An item's text, its content as echoed, its images and its documents: audio parts are transcribed
        (as a spoken turn is); images are decoded and checked (off the loop) and echoed as their metadata, not
        bytes; documents are read (and a long one chunked and embedded) and echoed as their metadata."""
        texts: list[str] = []
        content: list[dict[str, Any]] = []
        images: list[CheckedImage] = []
        documents: list[Attachment] = []
        for i, part in enumerate(event.content):
            if isinstance(part, InputAudio):
                transcript = await self._transcribe_clip(part.audio)
                texts.append(transcript)
                content.append({"type": "input_audio", "transcript": transcript})
            elif isinstance(part, InputImage):
                try:
                    image = await asyncio.to_thread(check_image, part.image, self._image_limits)
                except ClientError as exc:
                    exc.param = f"item.content[{i}].image"
                    raise
                images.append(image)
                content.append({**image.metadata(), "type": "input_image"})
            elif isinstance(part, InputFile):
                document = await self._read_document(part, f"item.content[{i}].file")
                documents.append(document)
                content.append({"type": "input_file", **document.to_json()})
            else:
                texts.append(part.text)
                content.append(part.to_wire())
        return "".join(texts), content, tuple(images), tuple(documents)

    async def _read_document(self, part: InputFile, param: str) -> Attachment:
        """Read an attached document (DocumentError for one that cannot be used, naming the part).

        A long one is embedded here, which can take a minute on a CPU; the reader waits meanwhile, so the
        client's messages (its pongs too) wait unread: the link's silence timer is held off until it is done."""
        if self._documents is None:
            raise InvalidState("This server does not read documents.", param=param)
        reading = asyncio.ensure_future(self._documents.attach(part.filename, part.file, declared_type=part.mime_type))
        try:
            while not (await asyncio.wait({reading}, timeout=DOCUMENT_BUSY_INTERVAL))[0]:
                if self._link is not None:
                    self._link.heartbeat.inbound(self._clock())
            return reading.result()
        except RealtimeError as exc:  # the document's problem, or the embedding service's (UpstreamError)
            exc.param = param
            raise
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    async def _transcribe_clip(self, pcm: bytes) -> str:
        fmt = self.config.input_audio_format
        if self._voice is None or fmt is None:
            raise NotListening("Audio content needs voice input (input_audio_format is null).", param="item.content")
        if len(pcm) % 2:
            raise InvalidAudio("audio must be whole PCM16 samples (an even number of bytes)", param="item.content")
        rate = fmt["sample_rate"]
        if len(pcm) // 2 > rate * self._settings.max_turn_ms // 1000:
            raise MessageTooLarge(f"audio content is longer than {self._settings.max_turn_ms} ms", param="item.content")
        samples = Resampler(rate).process(pcm16_to_float(pcm), last=True)
        language = self.config.input_audio_transcription.get("language")
        transcript = await self._voice.transcribe(object(), samples, [], language, final=True)
        return "" if transcript is None or is_hallucination(transcript) else transcript.text.strip()

    async def _delete_item(self, event: ItemDelete) -> None:
        """Remove an item from the history the model sees (a stored conversation keeps it)."""
        async with self._turn_lock:
            if self.response is not None and self.response.item_id == event.item_id:
                raise InvalidState("The running response's item cannot be deleted.", param="item_id")
            index = next((i for i, h in enumerate(self.history) if h.item_id == event.item_id), None)
            if index is None:
                raise ItemNotFound(f"No item '{event.item_id}' in this session.", param="item_id")
            del self.history[index]
            await self._emit(ev.item_deleted(event.item_id))

    async def _truncate(self, event: ItemTruncate) -> None:
        """The client says how much of an assistant item it played: history keeps only that much."""
        if self.response is not None and self.response.item_id == event.item_id:
            self.response.truncate_ms = event.audio_end_ms
            await self._emit(ev.item_truncated(event.item_id, event.audio_end_ms, ""))
            return
        entry = next((h for h in reversed(self.history) if h.item_id == event.item_id), None)
        if entry is None or entry.pieces is None:
            raise ItemNotFound(f"No assistant audio item '{event.item_id}' in this session.", param="item_id")
        entry.content = heard_text(entry.pieces, event.audio_end_ms)
        entry.status = "truncated"
        await self._emit(ev.item_truncated(event.item_id, event.audio_end_ms, entry.content))
        await self._record(event.item_id, "assistant", "", heard=entry.content, truncation=True)

    def _session_info(self) -> dict[str, Any]:
        s = self._settings
        return {
            "id": self.session_id,
            "user": self.user,
            "protocol": PROTOCOL_VERSION,
            "encoding": self.encoding.value if self.encoding is not None else None,
            "resume_secret": self.resume_secret,
            "resume_grace_ms": int(s.resume_grace * 1000) if s.resume_grace else None,
            "conversation_id": self.conversation_id,
            "history_stored": self._store is not None,
            **self.config.to_wire(),
            "limits": {
                "max_message_size": s.max_message_size,
                "max_text_chars": s.max_text_chars,
                "max_response_chars": s.max_response_chars,
                "max_image_size": min(s.max_image_size, s.max_message_size),
                "max_image_pixels": s.max_image_pixels,
                "max_images_per_message": s.max_images_per_message,
                "max_file_size": self._limits.max_file_bytes,
                "max_session_documents": MAX_SESSION_DOCUMENTS,
            },
            "ping_interval_ms": int(s.ping_interval * 1000) if s.ping_interval else None,
            "ping_timeout_ms": int(s.ping_timeout * 1000) if s.ping_timeout else None,
        }

    # ---- stored history --------------------------------------------------------------------------

    async def _record(
        self,
        item_id: str,
        role: str,
        content: str,
        *,
        reasoning: str = "",
        status: str = "completed",
        heard: str | None = None,
        audio_ms: int | None = None,
        timings: dict[str, Any] | None = None,
        truncation: bool = False,
        attachments: list[dict[str, Any]] | None = None,
    ) -> None:
        """Hand a finished message to the history writer (never waits on the database)."""
        store = self._store
        if store is None:
            return
        if self.conversation_id is None:
            self.conversation_id = str(uuid.uuid4())
        record = MessageRecord(
            user_id=store.user_id,
            conversation_id=self.conversation_id,
            key=f"{self.session_id}:{item_id}",
            role=role,
            content=content,
            reasoning=reasoning,
            status=status,
            heard_text=heard,
            audio_ms=audio_ms,
            timings=timings,
            attachments=attachments,
            title=content[:60] if role == "user" else None,
            truncation=truncation,
            on_lost=self._history_lost,
        )
        if not store.writer.submit(record):
            await self._history_lost(record, "the history queue is full")

    async def _history_lost(self, record: MessageRecord, why: str) -> None:
        self.log.error("history lost for %s: %s", record.key, why)
        if self._conn.state in (State.IDLE, State.RESPONDING):
            item_id = record.key.partition(":")[2]
            await self._emit(
                ev.error(
                    "history_write_failed",
                    f"A message ({item_id}) could not be saved to your conversation history.",
                    param=item_id,
                )
            )

    async def _continue_conversation(self, conversation_id: str | None) -> None:
        """Switch the session to a stored conversation (its messages become the history) or a new one."""
        if self._store is None:
            raise InvalidState("This server keeps no history for this user.", param="session.conversation_id")
        if self.response is not None:
            raise InvalidState("The conversation cannot change while a response runs.", param="session.conversation_id")
        if conversation_id is None:
            self.conversation_id, self.history = None, []
            return
        try:
            conversation = await self._store.db.conversations.get(self._store.user_id, conversation_id)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable() from exc
        if conversation is None:
            raise ConversationUnknown("No such conversation for this user.", param="session.conversation_id")
        self.conversation_id = str(conversation.id)
        self.history = [
            HistoryEntry(
                m.role,
                m.heard_text if m.heard_text is not None else m.content,
                m.reasoning,
                m.status,
                tool_calls=past_calls(m.attachments) if m.role == "assistant" else (),
            )
            for m in conversation.messages
        ]
        self._trim_history()

    # ---- heartbeat -------------------------------------------------------------------------------

    async def _heartbeat_loop(self, link: Link) -> None:
        heartbeat = link.heartbeat
        while True:
            due = heartbeat.poll(self._clock())
            if due is Due.TIMED_OUT:
                self.log.info("no traffic for %.1fs: the link is dead", heartbeat.timeout or 0)
                self._link_lost(link, CloseReason(CloseCode.PING_TIMEOUT, "ping timeout"))
                return
            if due is Due.SEND_PING:
                await self._emit(ev.ping(heartbeat.ping_sent(self._clock())))
                continue
            deadline = heartbeat.next_deadline()
            if deadline is None:
                return
            await asyncio.sleep(max(0.0, deadline - self._clock()))

    @property
    def rtt(self) -> float | None:
        return self._link.heartbeat.rtt if self._link is not None else None

    # ---- responses -------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"

    def _llm_messages(self, settings: SessionSettings) -> list[dict[str, Any]]:
        """The system prompt and the history; images go with their message (Ollama's `images`). The history
        holds at most max_context_images of them (_forget_old_images), so the request stays bounded. An
        assistant turn's tool calls come before its answer, as the model made them (native `tool_calls` and
        `role: tool` messages, or their fallback text for a model on the tool prompt), so later turns can
        build on what the tools did; they are bounded (PastCall) and trimmed with the rest of the history."""
        messages: list[dict[str, Any]] = []
        if settings.instructions:
            messages.append({"role": "system", "content": settings.instructions})
        for h in self.history:
            messages += past_messages(h.tool_calls)
            if h.images:
                messages.append({"role": h.role, "content": h.content, "images": [i.base64() for i in h.images]})
            elif h.content:
                messages.append({"role": h.role, "content": h.content})
        if settings.model in self._prompted_tools:
            return as_fallback(messages)
        return messages

    def _forget_old_images(self) -> None:
        """Only the newest max_context_images can reach the model, so older ones are dropped from memory
        too (their messages stay): a long session holds a bounded number of images."""
        room = self._settings.max_context_images
        for h in reversed(self.history):
            if h.images:
                h.images = h.images[-room:] if room > 0 else ()
                room -= len(h.images)

    # ---- documents (docs/documents.md) ---------------------------------------------------------------

    def _forget_old_documents(self) -> None:
        """The session keeps the newest MAX_SESSION_DOCUMENTS attached documents (their messages stay)."""
        room = MAX_SESSION_DOCUMENTS
        for h in reversed(self.history):
            if h.documents:
                h.documents = h.documents[-room:] if room > 0 else ()
                room -= len(h.documents)

    def _kept_documents(self) -> list[Attachment]:
        """The documents attached to messages still in the history, oldest first."""
        return [d for h in self.history for d in h.documents]

    def _library_user(self) -> str | None:
        """The account whose library this session may search; None without a library."""
        lib = self._documents
        if lib is None or lib.store is None or as_uuid(self.user) is None:
            return None
        return self.user

    def _check_library(self, changes: Mapping[str, Any], param: str) -> None:
        if changes.get("library") and self._library_user() is None:
            raise LibraryUnavailable(param=param)

    def _document_turn(self, settings: SessionSettings) -> bool:
        """Whether a response with these settings is given document passages (attachments or the library)."""
        return self._documents is not None and (bool(settings.library) or any(h.documents for h in self.history))

    async def _answer(self, response: Response, messages: list[dict[str, Any]]) -> None:
        """A plain reply, given the turn's document passages first when there are any."""
        if self._document_turn(response.settings):
            messages = await self._with_documents(response, messages)
        await self._generate(response, messages)

    async def _with_documents(self, response: Response, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with a system message of numbered passages (the attachments', and the library's when
        the settings ask) right before the last user message; the sources are sent first. If the documents
        cannot be searched (embedding service or database down) the reply goes on with the short attachments
        only, after a `documents_unavailable` error."""
        assert self._documents is not None
        library = response.settings.library
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user" and m["content"]), "")
        attached = self._kept_documents()
        try:
            context = await self._documents.turn_context(
                self._library_user() if library else None,
                question,
                attachments=attached,
                library=library is True,
                document_ids=library if isinstance(library, list) else None,
            )
        except (ServerError, DatabaseUnavailable) as exc:
            self.log.warning("response %s: documents unavailable (%s)", response.id, exc.__cause__ or exc)
            failure = DocumentsUnavailable()
            await self._emit_for(response, ev.error(failure.code, failure.message, response_id=response.id))
            context = await self._documents.turn_context(None, question, attachments=[a for a in attached if a.inline])
        if not context.text:
            return messages
        response.documents = context
        sources = [source.to_json() for source in context.sources]
        await self._emit_for(response, ev.document_sources(response.id, response.item_id, sources))
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
        return [*messages[:last], {"role": "system", "content": context.text}, *messages[last:]]

    @staticmethod
    def _for_images(settings: SessionSettings, messages: list[dict[str, Any]]) -> SessionSettings:
        """A response whose context holds images goes to the vision model, if the session names one."""
        if settings.vision_model and any("images" in m for m in messages):
            return replace(settings, model=settings.vision_model)
        return settings

    async def _require_vision(self, model: str) -> None:
        """ModelCannotSee unless the upstream says `model` has vision (a backend that cannot tell is trusted)."""
        lookup = getattr(self._llm, "capabilities", None)
        if lookup is None:
            return
        capabilities = await lookup(model)
        if capabilities is not None and "vision" not in capabilities:
            raise ModelCannotSee(
                f"The model '{model}' cannot see images. Set the session's vision_model to a model with "
                "vision, or delete the items with images."
            )

    def _trim_history(self) -> None:
        """Keep the newest entries within max_history_chars, reasoning included (the newest one always stays)."""
        total = sum(h.size for h in self.history)
        while len(self.history) > 1 and total > self._settings.max_history_chars:
            total -= self.history.pop(0).size

    async def _start_response(self, settings: SessionSettings, *, turn: CommittedTurn | None = None) -> None:
        if self._conn.state is not State.IDLE:
            return  # the session started closing while a superseded response was being cancelled
        messages = self._llm_messages(settings)
        settings = self._for_images(settings, messages)
        response = self._new_response(settings)
        response.turn = turn
        response.released.set()
        self._conn.apply(Trigger.RESPONSE_START)
        self.response = response
        spoken = self._spoken_format(settings)
        await self._emit(ev.response_created(response.id, response.item_id, settings.model, spoken))
        self._start_speaker(response)
        question = self._research_question(settings)
        if question and settings.research != "on" and self._document_turn(settings):
            question = ""  # "auto" does not research a question about the user's documents
        work = self._research_turn(response, messages, question) if question else self._answer(response, messages)
        response.task = self._spawn(work, f"response:{response.id}")

    def _new_response(self, settings: SessionSettings, *, held: bool = False) -> Response:
        return Response(
            id=self._new_id("resp"),
            item_id=self._new_id("item"),
            settings=settings,
            started_at=self._clock(),
            held=[] if held else None,
        )

    def _spoken_format(self, settings: SessionSettings) -> dict[str, Any] | None:
        """The audio format of a response with these settings; None when it is not spoken."""
        return settings.output_audio_format if self._speech is not None else None

    def _start_speaker(self, response: Response) -> None:
        settings = response.settings
        if self._speech is None or settings.output_audio_format is None:
            return
        response.speaker = Speaker(
            speech=self._speech,
            response_id=response.id,
            item_id=response.item_id,
            sample_rate=settings.output_audio_format["sample_rate"],
            emit=lambda event: self._emit_for(response, event),
            clock=self._clock,
            lead_ms=self._settings.audio_lead_ms,
            chunk_ms=self._settings.audio_chunk_ms,
            first_piece_max_words=self._settings.first_piece_max_words,
            held=response.held is not None,
        )
        response.speaker.start()

    async def _generate(self, response: Response, messages: list[dict[str, Any]]) -> None:
        settings = response.settings
        max_tokens = settings.max_output_tokens or self._settings.max_output_tokens
        request = ChatRequest(
            model=settings.model,
            messages=messages,
            temperature=settings.temperature,
            max_tokens=max_tokens,
            think=settings.reasoning,
        )
        splitter = ThinkSplitter()
        status, reason, error = "completed", None, None
        try:
            if any("images" in m for m in messages):
                await self._require_vision(settings.model)
            tools = self._tool_turn(settings)
            async with self._llm_lease(settings.model):
                while True:  # one round per model call; more only while the model calls tools
                    if tools is not None:
                        tools.start_round()
                    round_request = request if tools is None else tools.request(request)
                    try:
                        async with contextlib.aclosing(self._llm.stream_chat(round_request)) as stream:
                            async for chunk in stream:
                                if isinstance(chunk, ChatDone):
                                    usage = {"input_tokens": chunk.prompt_tokens, "output_tokens": chunk.output_tokens}
                                    response.usage = usage
                                    if chunk.done_reason == "length":
                                        status, reason = "incomplete", "max_output_tokens"
                                    break
                                if isinstance(chunk, ChatToolCall):
                                    if tools is not None:
                                        tools.calls.append(chunk)
                                    continue
                                assert isinstance(chunk, ChatDelta)
                                pieces: list[tuple[Part, str]] = []
                                if chunk.thinking:
                                    pieces.append((Part.REASONING, chunk.thinking))
                                content = chunk.content if tools is None else tools.text(chunk.content)
                                if content:
                                    pieces.extend(splitter.feed(content))
                                if not await self._send_pieces(response, pieces):
                                    status, reason = "incomplete", "max_response_chars"
                                    break
                    except UpstreamRejected as exc:
                        if tools is None or tools.fallback or not is_tools_refusal(exc.message):
                            raise
                        self.log.info("%s has no native tool calls: tools described in a prompt", settings.model)
                        self._prompted_tools.add(settings.model)
                        tools.fallback = True
                        tools.rounds -= 1
                        continue
                    if tools is None or status != "completed":
                        break
                    leftover = tools.end_round()
                    if leftover and not await self._send_pieces(response, splitter.feed(leftover)):
                        status, reason = "incomplete", "max_response_chars"
                        break
                    if not tools.calls:
                        break
                    await self._run_tool_calls(response, tools)
                    if tools.rounds >= tools.max_rounds:
                        status, reason = "incomplete", "max_tool_rounds"
                        break
            if status == "completed" or reason == "max_output_tokens":
                await self._send_pieces(response, splitter.flush())
            if response.speaker is not None:
                await response.speaker.finish()
                await response.speaker.wait()  # the reply is over when its last audio is sent
        except (UpstreamError, ModelCannotSee) as exc:
            self.log.warning("response %s failed: %s (%s)", response.id, exc.code, exc.__cause__ or exc)
            status, reason, error = "failed", "error", {"code": exc.code, "message": exc.message}
            await self._emit_for(response, ev.error(exc.code, exc.message, response_id=response.id))
        except GpuError as exc:
            self.log.warning("response %s: model unavailable (%s)", response.id, exc.code)
            status, reason, error = "failed", "error", {"code": exc.code, "message": exc.message}
            await self._emit_for(response, ev.error(exc.code, exc.message, response_id=response.id))
        except TtsFailed as exc:
            self.log.warning("response %s: speech failed (%s)", response.id, exc.__cause__ or exc)
            status, reason = "incomplete", "tts_failed"
            error = {"code": exc.code, "message": exc.message}
            await self._emit_for(response, ev.error(exc.code, exc.message, response_id=response.id))
        await response.released.wait()  # a speculative reply ends only once it is the session's
        await self._finish(response, status, reason, error)

    # ---- tools (docs/security.md) ----------------------------------------------------------------------

    def _tool_turn(self, settings: SessionSettings) -> ToolTurn | None:
        """The tool loop of a response with tools on; None when off (or the workspace cannot be made)."""
        if settings.tools is None:
            return None
        if self._toolbox is None:
            try:
                self._toolbox = toolbox_for(self._settings, self.user)
            except (RealtimeError, OSError) as exc:
                self.log.error("tools unavailable: %s", exc)
                return None
        confirm = settings.tools.get("confirm")
        return ToolTurn(
            schemas=self._toolbox.schemas(),
            confirm=frozenset(self._settings.tools_confirm if confirm is None else confirm),
            max_rounds=self._settings.tool_max_rounds,
            fallback=settings.model in self._prompted_tools,
        )

    async def _run_tool_calls(self, response: Response, tools: ToolTurn) -> None:
        """Run one round's calls in order, each announced, streamed and reported to the client."""
        await response.released.wait()  # a speculative reply touches nothing before its turn is confirmed
        box = self._toolbox
        assert box is not None
        results: list[tuple[ChatToolCall, str, str]] = []
        for call in tools.calls:
            call_id = self._new_id("call")
            await self._emit_for(
                response, ev.tool_call(response.id, response.item_id, call_id, call.name, call.arguments)
            )
            if call.name in tools.confirm and not await self._confirm_tool(response, call_id, call):
                status, outcome = "declined", ToolOutcome("The user declined this call; it did not run.", ok=False)
            else:

                async def stream_output(text: str, call_id: str = call_id) -> None:
                    await self._emit_for(response, ev.tool_output_delta(response.id, call_id, text))

                running = asyncio.create_task(
                    box.call(call_id, call.name, call.arguments, stream_output), name=f"{self.session_id}:{call_id}"
                )
                self._tool_tasks[call_id] = running
                try:
                    outcome = await running
                    status = "completed" if outcome.ok else "failed"
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():  # the response itself is cancelled
                        response.tool_calls.append(record(call_id, call, "cancelled", "", {}, round_no=tools.rounds))
                        raise
                    status, outcome = "cancelled", ToolOutcome("The user cancelled this call.", ok=False)
                finally:
                    del self._tool_tasks[call_id]
                    if not running.done():
                        running.cancel()
                        await asyncio.gather(running, return_exceptions=True)
            await self._emit_for(
                response, ev.tool_result(response.id, call_id, call.name, status, outcome.content, outcome.details)
            )
            response.tool_calls.append(
                record(call_id, call, status, outcome.content, outcome.details, round_no=tools.rounds)
            )
            results.append((call, call_id, outcome.content))
        tools.add_results(results)

    async def _confirm_tool(self, response: Response, call_id: str, call: ChatToolCall) -> bool:
        """Ask the user (event, and aloud in a spoken response); no answer in time means no."""
        timeout = self._settings.tool_confirm_timeout
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._confirmations[call_id] = answer
        try:
            await self._emit_for(
                response,
                ev.tool_confirmation_request(response.id, call_id, call.name, call.arguments, int(timeout * 1000)),
            )
            if response.speaker is not None:
                question = f" Shall I {describe(call.name, call.arguments)}? Please say yes or no. "
                await self._send_pieces(response, [(Part.ANSWER, question)])
            try:
                async with asyncio.timeout(timeout):
                    return await answer
            except TimeoutError:
                return False
        finally:
            self._confirmations.pop(call_id, None)

    async def _answer_by_voice(self, turn: CommittedTurn, approve: bool) -> None:
        """A spoken yes or no answers the oldest pending confirmation (shown as the user's item)."""
        for answer in self._confirmations.values():
            if not answer.done():
                answer.set_result(approve)
                break
        content = [{"type": "input_audio", "transcript": turn.transcript}]
        await self._emit(ev.item_created(turn.item_id, "user", content))

    # ---- research turns (docs/research.md) ------------------------------------------------------------

    def _check_research(self, changes: Mapping[str, Any], param: str) -> None:
        if changes.get("research") == "on" and self._research is None:
            raise ResearchUnavailable(param=param)

    def _wants_research(self, settings: SessionSettings, question: str) -> bool:
        if settings.research == "on":
            return True
        return settings.research == "auto" and self._research is not None and wants_research(question)

    def _research_question(self, settings: SessionSettings) -> str:
        """The question a response should research first (the last user message), or "" for a plain reply."""
        question = next((h.content for h in reversed(self.history) if h.role == "user" and h.content), "")
        return question if question and self._wants_research(settings, question) else ""

    async def _research_turn(self, response: Response, messages: list[dict[str, Any]], question: str) -> None:
        """Plan, search and read (progress events; a spoken response says it is searching), send the sources,
        then answer like any response, from a system message holding the numbered sources."""
        settings = response.settings
        said_filler = False

        async def progress(step: Progress) -> None:
            nonlocal said_filler
            event = ev.research_progress(
                response.id, response.item_id, step.stage, queries=step.queries, sources=step.sources
            )
            await self._emit_for(response, event)
            if step.stage == "searching" and response.speaker is not None and not said_filler:
                said_filler = True
                await response.speaker.feed(RESEARCH_FILLER + "\n")  # a line ends its piece: spoken now

        try:
            if self._research is None:
                raise ResearchUnavailable()
            earlier = [f"{m['role']}: {m['content']}" for m in messages[-5:-1] if m["role"] in ("user", "assistant")]
            async with self._llm_lease(settings.model):
                findings = await self._research.run(
                    question, llm=self._llm, model=settings.model, context=earlier, progress=progress
                )
        except (ResearchUnavailable, SearchFailed, UpstreamError, GpuError) as exc:
            self.log.warning("response %s: research failed: %s (%s)", response.id, exc.code, exc.__cause__ or exc)
            error = {"code": exc.code, "message": exc.message}
            await self._emit_for(response, ev.error(exc.code, exc.message, response_id=response.id))
            if response.speaker is not None:
                await response.speaker.finish()
                await response.speaker.wait()
            await response.released.wait()
            await self._finish(response, "failed", "error", error)
            return
        sources = [source.to_wire() for source in findings.sources]
        await self._emit_for(response, ev.research_sources(response.id, response.item_id, sources))
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
        context = {"role": "system", "content": findings.context}
        await self._generate(response, [*messages[:last], context, *messages[last:]])

    @contextlib.asynccontextmanager
    async def _llm_lease(self, model: str) -> AsyncIterator[None]:
        """The scheduler's lease on the LLM while it streams, so it is never unloaded mid-reply. Models
        other than the configured one are not the scheduler's; if the LLM cannot even be loaded, the chat
        request itself then reports the upstream's failure precisely."""
        if self._scheduler is None or model != self._settings.llm_model:
            yield
            return
        try:
            lease = await self._scheduler.acquire(LLM)
        except ModelLoadFailed:
            yield
            return
        try:
            yield
        finally:
            self._scheduler.release(lease)

    async def _send_pieces(self, response: Response, pieces: list[tuple[Part, str]]) -> bool:
        """Emit deltas; False once text had to be cut at max_response_chars.

        Text is recorded only once its event is queued, so a response cancelled while waiting on a slow
        client never claims text the client will not receive.
        """
        for part, text in pieces:
            room = self._settings.max_response_chars - response.chars
            cut = len(text) > room
            text = text[:room]
            if text:
                now = self._clock()
                if part is Part.REASONING:
                    await self._emit_for(response, ev.reasoning_delta(response.id, response.item_id, text))
                    response.reasoning.append(text)
                else:
                    await self._emit_for(response, ev.text_delta(response.id, response.item_id, text))
                    response.text.append(text)
                    response.first_text_at = response.first_text_at or now
                    if response.speaker is not None:
                        await response.speaker.feed(text)
                response.first_token_at = response.first_token_at or now
                response.chars += len(text)
            if cut:
                return False
        return True

    async def _cancel_response(self, reason: str, *, status: str = "cancelled") -> None:
        """Stop the running response now (upstream stream closed, no more audio) and report it."""
        response = self.response
        if response is None:
            return
        task = response.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._finish(response, status, reason, None)

    async def _finish(self, response: Response, status: str, reason: str | None, error: dict[str, str] | None) -> None:
        if response.finished:
            return
        response.finished = True
        text, reasoning = "".join(response.text), "".join(response.reasoning)
        speaker = response.speaker
        audio: dict[str, Any] | None = None
        kept = text
        if speaker is not None:
            await speaker.aclose()  # no audio of this response after this point
            stats = speaker.stats
            played = stats.audio_ms if status in ("completed", "incomplete") else speaker.played_ms()
            if response.truncate_ms is not None:
                played = min(played, response.truncate_ms)
            if played < stats.audio_ms or status in ("interrupted", "cancelled"):
                kept = heard_text(stats.pieces, played)  # history keeps only what was heard
            audio = {"duration_ms": stats.audio_ms, "played_ms": played, "heard_text": kept}
        if kept or reasoning or response.tool_calls:
            pieces = list(speaker.stats.pieces) if speaker is not None else None
            calls = past_calls(response.tool_calls)
            entry = HistoryEntry("assistant", kept, reasoning, status, response.item_id, pieces, tool_calls=calls)
            self.history.append(entry)
            self._trim_history()
        self.response = None
        self._conn.apply(Trigger.RESPONSE_END)
        now = self._clock()

        def ms(t: float | None) -> int | None:
            return None if t is None else int((t - response.started_at) * 1000)

        first_audio_at = speaker.stats.first_audio_at if speaker is not None else None
        metrics: dict[str, int | None] = {
            "first_token_ms": ms(response.first_token_at),
            "first_text_ms": ms(response.first_text_at),
            "first_audio_ms": ms(first_audio_at),
            "total_ms": ms(now),
            "rtt_ms": None if self.rtt is None else int(self.rtt * 1000),
        }
        if speaker is not None:
            metrics["late_audio_chunks"] = speaker.stats.late_chunks
        if response.interrupted_at is not None:
            # barge-in decided -> LLM and TTS stopped and awaited (no chunk can follow): the stop latency
            metrics["interrupt_to_stop_ms"] = int((now - response.interrupted_at) * 1000)
        turn = response.turn
        if turn is not None and turn.speech_end_at is not None:

            def since_speech(t: float | None) -> int | None:
                return None if t is None or turn.speech_end_at is None else int((t - turn.speech_end_at) * 1000)

            metrics["speech_end_to_transcript_ms"] = since_speech(turn.transcript_at)
            metrics["speech_end_to_first_token_ms"] = since_speech(response.first_token_at)
            metrics["speech_end_to_first_audio_ms"] = since_speech(first_audio_at)
        self._observe(response, status, metrics)
        citations = None
        if response.documents is not None:
            citations = [source.to_json() for source in cited_sources(text, response.documents)]
        if text or reasoning or response.tool_calls:
            cited = [{"type": "citation", **{k: v for k, v in c.items() if k != "score"}} for c in citations or ()]
            await self._record(
                response.item_id,
                "assistant",
                text,
                reasoning=reasoning,
                status=status,
                heard=kept if kept != text else None,
                audio_ms=audio["duration_ms"] if audio is not None else None,
                timings=metrics,
                attachments=[*response.tool_calls, *cited] or None,
            )
        if self._conn.state is not State.IDLE:
            return  # closing: nobody to tell
        await self._emit(
            ev.response_done(
                response.id,
                response.item_id,
                status,
                text=text,
                reasoning=reasoning,
                usage=response.usage,
                metrics=metrics,
                reason=reason,
                error=error,
                audio=audio,
                citations=citations,
            )
        )

    def _observe(self, response: Response, status: str, metrics: dict[str, int | None]) -> None:
        m = self._metrics
        if m is None:
            return
        m.responses.labels(status=status).inc()
        pairs = [
            (m.transcript, "speech_end_to_transcript_ms"),
            (m.first_token, "speech_end_to_first_token_ms"),
            (m.first_audio, "speech_end_to_first_audio_ms"),
            (m.response_first_token, "first_token_ms"),
            (m.response_total, "total_ms"),
        ]
        for histogram, key in pairs:
            value = metrics.get(key)
            if value is not None:
                histogram.observe(value / 1000)
        if response.speaker is not None:
            m.late_chunks.inc(response.speaker.stats.late_chunks)
