"""Starlette wiring only: routes, lifespan, the auth hand-off and the websocket transport adapter."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from db import Database, DatabaseUnavailable, EmbeddedPostgres
from realtime import http_api
from realtime.auth import Principal, TokenAuthority, origin_allowed, token_from_request
from realtime.config import Settings
from realtime.documents import DocumentLibrary, DocumentLimits, OllamaEmbeddings
from realtime.documents import http as documents_http
from realtime.errors import AuthError, CloseCode, LimitExceeded
from realtime.gpu_scheduler import GpuScheduler
from realtime.gpu_scheduler import routes as model_routes
from realtime.history import HistoryWriter
from realtime.metrics import Metrics
from realtime.models import build_scheduler
from realtime.openai_compat import PATH as OPENAI_PATH
from realtime.openai_compat import openai_realtime_endpoint
from realtime.protocol import server_events as ev
from realtime.protocol.codec import SUBPROTOCOLS, Encoding, choose_encoding, encode_frame
from realtime.protocol.server_events import ServerEvent
from realtime.registry import SessionRegistry
from realtime.research import Researcher, build_researcher
from realtime.session import HistoryStore, PeerClosed, Session
from realtime.stages.llm import ChatBackend, OllamaChat, OllamaTimeouts
from realtime.voice import SpeechOut, Voice
from realtime.ws_protocol import DIRECT_RECEIVE, DirectHandler

log = logging.getLogger("realtime.server")

WS_PATH = "/ws"
LLM_HTTP_SHARDS = 16


class StarletteTransport:
    """Adapts a Starlette WebSocket to the session's Transport interface."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> bytes | str:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            raise PeerClosed(message.get("code", CloseCode.NORMAL))
        if message.get("bytes") is not None:
            return message["bytes"]
        return message.get("text") or ""

    async def send(self, data: bytes | str) -> None:
        try:
            if isinstance(data, bytes):
                await self._ws.send_bytes(data)
            else:
                await self._ws.send_text(data)
        except WebSocketDisconnect as exc:
            raise PeerClosed(exc.code) from exc

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def set_direct(self, handler: DirectHandler | None) -> bool:
        """Install (None: remove) a handler offered each message as it comes off the socket, when the server's
        websocket protocol supports it (realtime.ws_protocol); False when it does not."""
        install = self._ws.scope.get("extensions", {}).get(DIRECT_RECEIVE)
        if install is None:
            return False
        install(handler)
        return True


@dataclass
class Realtime:
    """What the routes share: settings, auth, live sessions, the LLM backend."""

    settings: Settings
    authority: TokenAuthority
    registry: SessionRegistry
    llm: ChatBackend
    voice: Voice | None = None
    speech: SpeechOut | None = None
    scheduler: GpuScheduler | None = None
    metrics: Metrics = field(default_factory=Metrics)
    http: httpx.AsyncClient | None = None  # for the model scheduler's Ollama requests (one of http_shards)
    http_shards: list[httpx.AsyncClient] = field(default_factory=list)  # the LLM client's pools
    db: Database | None = None
    embedded_db: EmbeddedPostgres | None = None
    history: HistoryWriter | None = None
    documents: DocumentLibrary | None = None  # attachments, and the library when there is a database
    research: Researcher | None = None  # web research turns, when REALTIME_SEARCH_BACKEND is not off
    sessions: dict[str, Session] = field(default_factory=dict)
    _none_left: asyncio.Event = field(default_factory=asyncio.Event)
    _reapers: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.metrics.replay_frames.set_function(lambda: sum(s.replay_size[0] for s in list(self.sessions.values())))
        self.metrics.replay_bytes.set_function(lambda: sum(s.replay_size[1] for s in list(self.sessions.values())))
        self.metrics.count_from(
            "realtime_llm_yields",
            "Times the embedded LLM was asked to pause while a reply's first piece was synthesized",
            lambda: self._llm_yield_figure("holds"),
        )
        self.metrics.count_from(
            "realtime_llm_yield_seconds",
            "Time the embedded LLM was asked to pause for first pieces",
            lambda: self._llm_yield_figure("held_seconds"),
        )

    def _llm_yield_figure(self, name: str) -> float:
        pauses = self.speech.llm_yield if self.speech is not None else None
        return float(getattr(pauses, name)) if pauses is not None else 0.0

    def open_session(
        self,
        user: str,
        encoding: Encoding,
        *,
        first_events: list[ServerEvent] | None = None,
        store: HistoryStore | None = None,
        admin: bool = False,
    ) -> Session:
        """A new session, registered until it ends (which may be long after its first link is gone)."""
        session = Session(
            user=user,
            admin=admin,
            settings=self.settings,
            llm=self.llm,
            voice=self.voice,
            speech=self.speech,
            scheduler=self.scheduler,
            metrics=self.metrics,
            store=store,
            research=self.research,
            documents=self.documents,
        )
        self.registry.add(session)
        self.sessions[session.session_id] = session
        self.metrics.sessions.set(len(self.sessions))
        self._none_left.clear()
        session.start(encoding, first_events=first_events)
        reaper = asyncio.get_running_loop().create_task(self._reap(session), name=f"{session.session_id}:reaper")
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return session

    async def _reap(self, session: Session) -> None:
        try:
            await session.wait_ended()
        finally:
            self.registry.remove(session)
            self.sessions.pop(session.session_id, None)
            self.metrics.sessions.set(len(self.sessions))
            if not self.sessions:
                self._none_left.set()

    def resumable(self, user: str, session_id: str, secret: str, last_seq: int) -> Session | None:
        """The session to resume, or None: unknown, ended, another user's, wrong secret, or too much missed."""
        session = self.sessions.get(session_id)
        # bytes: compare_digest refuses str with non-ASCII characters (TypeError), and the secret is the client's
        given = secret.encode("utf-8", "replace")
        if session is None or session.user != user or not secrets.compare_digest(session.resume_secret.encode(), given):
            return None
        return session if session.can_resume(last_seq) else None

    async def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Ask every session to close (queued events are flushed first) and wait, bounded, for them."""
        if not self.sessions:
            return
        for session in list(self.sessions.values()):
            session.request_close(code, reason, flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._none_left.wait()
        for reaper in list(self._reapers):
            reaper.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)


async def open_database(settings: Settings) -> tuple[Database | None, EmbeddedPostgres | None]:
    """The configured database, migrated: embedded (started here), a URL, or none."""
    if settings.database_url == "none":
        return None, None
    embedded, url = None, settings.database_url
    if url == "embedded":
        embedded = EmbeddedPostgres(settings.state_dir / "pgdata")
        url = await asyncio.to_thread(embedded.start)
    try:
        db = await Database.connect(url, max_size=settings.db_pool_size)
        try:
            applied = await db.migrate()
        except BaseException:
            await db.close()
            raise
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    if applied:
        log.info("database migrations applied: %s", ", ".join(applied))
    return db, embedded


def build_documents(settings: Settings, db: Database | None) -> DocumentLibrary:
    """Documents: attachments always, the stored library when there is a database (realtime/documents)."""
    embeddings = OllamaEmbeddings(
        settings.embed_url or settings.ollama_url,
        model=settings.embed_model,
        timeout=settings.embed_timeout,
        connect_timeout=settings.llm_connect_timeout,
    )
    limits = DocumentLimits(
        max_size=settings.max_document_size,
        max_pages=settings.max_document_pages,
        max_chars=settings.max_document_chars,
    )
    return DocumentLibrary(
        db,
        embeddings,
        limits=limits,
        max_documents=settings.max_library_documents,
        inline_chars=settings.attachment_inline_chars,
        context_chars=settings.document_context_chars,
        passages=settings.retrieval_passages,
        hybrid=settings.hybrid_search,
    )


def build_realtime(settings: Settings, llm: ChatBackend | None = None) -> Realtime:
    http: list[httpx.AsyncClient] = []
    if llm is None:
        # One kept-alive upstream connection per concurrently answering session, up to the session limit,
        # spread over pools of about 8 (see OllamaChat: a big pool costs CPU per request), sharing one TLS
        # context (building one per client is slow).
        shards = max(1, min(LLM_HTTP_SHARDS, settings.max_sessions // 8))
        per_shard = -(-settings.max_sessions // shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        tls = httpx.create_ssl_context()
        http = [httpx.AsyncClient(limits=limits, verify=tls) for _ in range(shards)]
        timeouts = OllamaTimeouts(
            connect=settings.llm_connect_timeout,
            first_token=settings.llm_first_token_timeout,
            idle=settings.llm_idle_timeout,
        )
        llm = OllamaChat(settings.ollama_url, http, timeouts)
    return Realtime(
        settings=settings,
        authority=TokenAuthority(settings),
        registry=SessionRegistry(settings.max_sessions, settings.max_sessions_per_user),
        llm=llm,
        http=http[0] if http else None,
        http_shards=http,
    )


async def metrics(request: Request) -> Response:
    rt: Realtime = request.app.state.realtime
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> JSONResponse:
    rt: Realtime = request.app.state.realtime
    return JSONResponse(
        {
            "status": "ok",
            "sessions": len(rt.registry),
            "detached_sessions": sum(1 for s in rt.sessions.values() if s.detached),
            "voice_in": rt.voice is not None,
            "voice_out": None if rt.speech is None else rt.speech.engine_name,
        }
    )


def _deny(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse before accepting: an HTTP response with a JSON body where the server supports it, else 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_deny(status, code, message))
    else:
        await websocket.close(CloseCode.POLICY_VIOLATION)


async def websocket_endpoint(websocket: WebSocket) -> None:
    rt: Realtime = websocket.app.state.realtime
    settings = rt.settings
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), headers.get("host"), settings.allowed_origins):
        log.info("refused websocket: origin %r not allowed", headers.get("origin"))
        await _refuse(websocket, 403, "origin_not_allowed", "This origin may not open a session.")
        return
    ticket = websocket.query_params.get("ticket")
    if ticket is not None:
        try:
            by_ticket = await http_api.principal_from_ticket(rt.db, ticket) if rt.db is not None else None
        except DatabaseUnavailable:
            await _refuse(websocket, 503, "database_unavailable", "Try again shortly.")
            return
        if by_ticket is None:
            await _refuse(websocket, 401, "unauthorized", "The ticket is invalid, used or expired.")
            return
        principal: Principal = by_ticket
    else:
        token = token_from_request(headers, websocket.cookies, websocket.query_params)
        try:
            if token is None:
                raise AuthError("no token")
            principal = rt.authority.verify(token)
        except AuthError as exc:
            log.info("refused websocket: %s", exc.message)
            await _refuse(websocket, 401, "unauthorized", "A valid access token is required.")
            return
    try:
        store = await _history_store(rt, principal)
    except AuthError:
        await _refuse(websocket, 401, "unauthorized", "This account no longer exists.")
        return
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    encoding = choose_encoding(offered)
    if encoding is None:
        supported = ", ".join(SUBPROTOCOLS)
        await _refuse(websocket, 400, "unsupported_subprotocol", f"Supported subprotocols: {supported}.")
        return
    await websocket.accept(subprotocol=encoding.subprotocol if offered else None)
    transport = StarletteTransport(websocket)
    query = websocket.query_params
    first_events: list[ServerEvent] = []
    if "resume" in query:
        last_seq = _int_or_none(query.get("last_seq"))
        session = None
        if last_seq is not None:
            session = rt.resumable(principal.user, query["resume"], query.get("resume_secret", ""), last_seq)
        if session is not None:
            session.log.info("resumed by user %s (%s) after seq %d", principal.user, encoding.value, last_seq)
            await session.serve(transport, encoding, resume_after=last_seq)
            return
        first_events.append(ev.error("resume_failed", RESUME_FAILED))
    try:
        rt.registry.check(principal.user)
    except LimitExceeded as exc:
        await _send_and_close(websocket, encoding, exc.code, exc.message, CloseCode.TRY_AGAIN_LATER)
        return
    if store is None and rt.db is not None and _as_uuid(principal.user) is not None:
        first_events.append(
            ev.error("history_unavailable", "Stored history is unavailable; this session is not saved.")
        )
    session = rt.open_session(principal.user, encoding, first_events=first_events, store=store, admin=principal.admin)
    session.log.info("opened for user %s (%s)", principal.user, encoding.value)
    await session.serve(transport, encoding)


async def _history_store(rt: Realtime, principal: Principal) -> HistoryStore | None:
    """Where the session's history goes: only for accounts in the database (a token whose `sub` is a user
    id). A deleted account is refused (AuthError); a database that is down means no stored history."""
    if rt.db is None or rt.history is None or _as_uuid(principal.user) is None:
        return None
    try:
        user = await rt.db.users.get(principal.user)
    except DatabaseUnavailable:
        log.warning("database unavailable: session of %s not stored", principal.user)
        return None
    if user is None:
        raise AuthError("deleted user")
    return HistoryStore(user_id=principal.user, writer=rt.history, db=rt.db)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


HISTORY_UNAVAILABLE = "Stored history is unavailable right now; this session is not being saved."
RESUME_FAILED = (
    "The session cannot be resumed (unknown, expired, not yours, or too much was missed); this is a new session."
)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _send_and_close(websocket: WebSocket, encoding: Encoding, code: str, message: str, close: int) -> None:
    data = encode_frame(ev.error(code, message).to_wire(1), encoding)
    with contextlib.suppress(Exception):
        if isinstance(data, bytes):
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(data)
        await websocket.close(close, code)


_PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = _PACKAGE_DIR / "static"  # the browser app
CLIENT_DIR = _PACKAGE_DIR.parent / "clients" / "js" / "src"  # the JS client library
VENDOR_DIR = _PACKAGE_DIR.parent / "clients" / "js" / "vendor"  # its vendored @msgpack/msgpack


async def index(request: Request) -> Response:
    return RedirectResponse("/static/")


def _web_routes() -> list[BaseRoute]:
    """The browser app and what it imports (no build step); missing directories are skipped."""
    routes: list[BaseRoute] = []
    for path, directory in (("/static", STATIC_DIR), ("/client", CLIENT_DIR), ("/vendor", VENDOR_DIR)):
        if directory.is_dir():
            routes.append(Mount(path, StaticFiles(directory=directory, html=path == "/static"), name=path[1:]))
    if STATIC_DIR.is_dir():
        routes.append(Route("/", index, methods=["GET"]))
    return routes


# Young collections between full ones (CPython's default is 10). A full collection walks every live
# object of every session at once: ~80 000 at 300 streaming sessions, a 30-75 ms stall of all of them,
# and under spoken turns the default ran one every ~3 s while finding almost nothing (0-150 objects a
# 30 s window: cycles die young). 100 makes them ~10x rarer (docs/reliability.md §4).
FULL_COLLECTION_EVERY = 100


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, models, pools: ~160 000 objects) out of the
    collector's reach. Otherwise each full collection walks them all, a 20-40 ms pause that stalls every
    session at once (measured under bench.turn_overhead); after the freeze a full collection walks only
    what turns left behind. Full collections are also made rarer (FULL_COLLECTION_EVERY); the lifespan
    restores the collector's thresholds at shutdown."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def create_app(
    settings: Settings,
    *,
    llm: ChatBackend | None = None,
    on_ready: Callable[[Realtime], Awaitable[None]] | None = None,
) -> Starlette:
    """The ASGI app. `llm` replaces the Ollama client (benchmarks and embedding programs pass one);
    `on_ready` runs once everything is up (the serve command prints its banner there)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = build_realtime(settings, llm)
        rt.db, rt.embedded_db = await open_database(settings)
        gc_thresholds = gc.get_threshold()
        try:
            if rt.db is not None:
                rt.history = HistoryWriter(
                    rt.db, max_queue=settings.history_queue_size, retry_for=settings.history_retry_for
                )
                await rt.history.start()
            rt.documents = build_documents(settings, rt.db)
            rt.research = build_researcher(settings)
            rt.scheduler = build_scheduler(settings, rt.http, llm_on_cpu=False)
            rt.voice = await Voice.load(settings, rt.scheduler)
            rt.speech = await SpeechOut.load(settings, rt.scheduler)
            app.state.realtime = rt
            _freeze_startup_heap()
            if on_ready is not None:
                await on_ready(rt)
            yield
        finally:
            gc.unfreeze()
            gc.set_threshold(*gc_thresholds)
            await rt.close_all()
            if rt.voice is not None:
                await rt.voice.aclose()
            if rt.scheduler is not None:
                await rt.scheduler.aclose()  # unloads every model (the LLM too, from Ollama)
            for client in rt.http_shards:
                await client.aclose()
            if rt.documents is not None:
                await rt.documents.aclose()
            if rt.research is not None:
                await rt.research.aclose()
            if rt.history is not None:
                await rt.history.aclose()  # sessions are closed: store what they left, then stop
            if rt.db is not None:
                await rt.db.close()
            if rt.embedded_db is not None:
                await asyncio.to_thread(rt.embedded_db.stop)

    def get_db() -> Database | None:
        rt = getattr(app.state, "realtime", None)
        return None if rt is None else rt.db

    limiter = http_api.LoginLimiter(
        max_failures_per_user=settings.login_max_failures,
        max_failures_per_ip=settings.login_max_failures_per_ip,
        window=settings.login_failure_window,
    )
    authority = TokenAuthority(settings)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute(WS_PATH, websocket_endpoint),
        WebSocketRoute(OPENAI_PATH, openai_realtime_endpoint),  # the OpenAI Realtime dialect
        *_web_routes(),
        *model_routes(
            lambda: getattr(app.state, "realtime", None) and app.state.realtime.scheduler,
            authority,
            allowed_origins=settings.allowed_origins,
        ),
        *documents_http.routes(
            lambda: getattr(app.state, "realtime", None) and app.state.realtime.documents,
            get_db,
            authority,
            allowed_origins=settings.allowed_origins,
        ),
        *http_api.routes(
            get_db,
            authority,
            cookie_secure=settings.cookie_secure,
            token_ttl=settings.token_ttl,
            allow_signup=settings.allow_signup,
            allowed_origins=settings.allowed_origins,
            login_limiter=limiter,
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return app
