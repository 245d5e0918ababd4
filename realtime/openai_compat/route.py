"""`GET /v1/realtime`: the OpenAI Realtime (GA) websocket, a second door onto the same sessions.

The handshake follows /ws (docs/protocol.md §2: Origin, then the token, then the session limits) with
OpenAI's conventions: the token comes as `Authorization: Bearer <token>` (what the OpenAI SDKs send
with the api key), or, from browsers, as the subprotocol `openai-insecure-api-key.<token>`; refusals
carry OpenAI-shaped error bodies. Then one ordinary Session runs with our JSON encoding behind an
OpenAITransport that translates every frame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from db import DatabaseUnavailable
from realtime.auth import Principal, origin_allowed, token_from_request
from realtime.errors import AuthError, CloseCode, LimitExceeded
from realtime.openai_compat.translator import Translator
from realtime.openai_compat.transport import OpenAITransport
from realtime.protocol import server_events as ev
from realtime.protocol.codec import Encoding
from realtime.protocol.server_events import ServerEvent
from realtime.session import HistoryStore

if TYPE_CHECKING:
    from realtime.server import Realtime

log = logging.getLogger("realtime.openai_compat")

PATH = "/v1/realtime"
SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


def _error_body(status: int, kind: str, code: str, message: str) -> JSONResponse:
    error = {"type": kind, "code": code, "message": message, "param": None, "event_id": None}
    return JSONResponse({"error": error}, status_code=status)


async def _refuse(websocket: WebSocket, status: int, kind: str, code: str, message: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_error_body(status, kind, code, message))
    else:
        await websocket.close(CloseCode.POLICY_VIOLATION)


def _offered(websocket: WebSocket) -> list[str]:
    return [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def _token(websocket: WebSocket, offered: list[str]) -> str | None:
    token = token_from_request(websocket.headers, websocket.cookies, websocket.query_params)
    if token is not None:
        return token
    return next((p[len(KEY_SUBPROTOCOL_PREFIX) :] for p in offered if p.startswith(KEY_SUBPROTOCOL_PREFIX)), None)


async def _history_store(rt: Realtime, principal: Principal) -> HistoryStore | None:
    """As on /ws: only accounts in the database (a `sub` that is a user id) are stored; a deleted account
    is refused (AuthError); a database that is down means no stored history."""
    if rt.db is None or rt.history is None or not _is_account(principal.user):
        return None
    try:
        user = await rt.db.users.get(principal.user)
    except DatabaseUnavailable:
        log.warning("database unavailable: session of %s not stored", principal.user)
        return None
    if user is None:
        raise AuthError("deleted user")
    return HistoryStore(user_id=principal.user, writer=rt.history, db=rt.db)


async def openai_realtime_endpoint(websocket: WebSocket) -> None:
    rt: Realtime = websocket.app.state.realtime
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), headers.get("host"), rt.settings.allowed_origins):
        log.info("refused OpenAI websocket: origin %r not allowed", headers.get("origin"))
        await _refuse(websocket, 403, "invalid_request_error", "origin_not_allowed", "This origin may not connect.")
        return
    offered = _offered(websocket)
    token = _token(websocket, offered)
    try:
        if token is None:
            raise AuthError("no token")
        principal = rt.authority.verify(token)
        store = await _history_store(rt, principal)
    except AuthError as exc:
        log.info("refused OpenAI websocket: %s", exc.message)
        message = "A valid access token is required (Authorization: Bearer <token>)."
        await _refuse(websocket, 401, "invalid_request_error", "invalid_api_key", message)
        return
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        rt.registry.check(principal.user)
    except LimitExceeded as exc:
        error = {"type": "invalid_request_error", "code": "session_limit_reached", "message": exc.message}
        error |= {"param": None, "event_id": None}
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "error", "event_id": "event_0", "error": error}))
            await websocket.close(CloseCode.TRY_AGAIN_LATER, exc.code)
        return
    first_events: list[ServerEvent] = []
    if store is None and rt.db is not None and _is_account(principal.user):
        first_events.append(
            ev.error("history_unavailable", "Stored history is unavailable; this session is not saved.")
        )
    translator = Translator(
        has_voice=rt.voice is not None, has_speech=rt.speech is not None, model=websocket.query_params.get("model")
    )
    transport = OpenAITransport(websocket, translator)
    session = rt.open_session(principal.user, Encoding.JSON, first_events=first_events, store=store, admin=False)
    transport.on_error_flood = lambda: session.request_close(
        CloseCode.TOO_MANY_ERRORS, "too many invalid messages", flush=True
    )
    session.log.info("opened for user %s (OpenAI dialect)", principal.user)
    await session.serve(transport, Encoding.JSON, heartbeat=False, resumable=False)


def _is_account(user: str) -> bool:
    try:
        uuid.UUID(user)
    except ValueError:
        return False
    return True
