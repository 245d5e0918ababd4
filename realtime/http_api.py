"""HTTP API: accounts (sign-up, log-in, log-out, me, websocket tickets) and the user's conversations.

JSON in and out; every error is `{"error": {"code", "message"}}` with its HTTP status. Tokens are the
server's JWTs (realtime.auth): `sub` is the user's id (a UUID string), `role: "admin"` marks admins,
24 h by default. A request authenticates with `Authorization: Bearer <token>` or the `access_token`
cookie (HttpOnly, SameSite=Lax) that sign-up and log-in set; the user is looked up on every request, so
the token of a deleted account stops working at once. Logging out clears the cookie; a JWT itself stays
valid until it expires (there is no revocation list).

Browsers cannot put a token in a websocket's headers: `POST /api/auth/ticket` trades it for a 30 s
single-use ticket for `/ws?ticket=...` (see `redeem_ticket`), so the token never sits in a URL.

Failed log-ins are limited per username and per client address in this process's memory
(`LoginLimiter`): several server processes each count their own, and a restart forgets. The client
address is the socket peer's, or what uvicorn takes from X-Forwarded-For when run with --proxy-headers
and --forwarded-allow-ips naming the proxy.

Unsafe requests (POST, PATCH, DELETE) from a browser must come from the same origin or an allowed one,
and bodies must be `application/json`, which a cross-site form cannot send: with SameSite=Lax that
keeps cookie-authenticated requests safe from cross-site request forgery.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db import Conversation, Database, DatabaseUnavailable, Message, User, UsernameTaken
from db.conversations import MAX_PAGE, MAX_TITLE_CHARS
from realtime.auth import TOKEN_COOKIE, Principal, TokenAuthority, origin_allowed, token_from_request
from realtime.errors import AuthError, RealtimeError

log = logging.getLogger("realtime.http_api")

TOKEN_TTL = 24 * 3600.0
TICKET_TTL = 30.0
MAX_BODY_SIZE = 16 * 1024
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{3,64}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
DEFAULT_PAGE = 20
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class HttpError(RealtimeError):
    """An error answer: HTTP status, stable code, a message written for the client, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def _unauthorized(message: str = "A valid access token is required.") -> HttpError:
    return HttpError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


class _Window:
    """Hits per key within a sliding window; keys are dropped once their newest hit expires."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        self._expire(now)
        hits = self._hits.get(key)
        if not hits:
            return 0.0
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) < self.limit:
            return 0.0
        return max(hits[-self.limit] + self.window - now, 0.001)

    def add(self, key: str, now: float) -> None:
        self._hits.setdefault(key, deque()).append(now)
        self._hits.move_to_end(key)
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)

    def remove(self, key: str, stamp: float | None = None) -> None:
        """Forget one hit at `stamp`, or all of the key's hits."""
        if stamp is None:
            self._hits.pop(key, None)
            return
        hits = self._hits.get(key)
        if hits and stamp in hits:
            hits.remove(stamp)

    def _expire(self, now: float) -> None:
        # keys are ordered by their last hit: stop at the first one still inside the window
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.window:
                break
            del self._hits[key]


class LoginLimiter:
    """Failed log-ins per username and per client address, in memory (per process). Sans-I/O: pass `now`.

    An attempt counts as a failure from the moment it starts, so parallel guesses cannot slip past the
    limit while their passwords are being checked; a success takes its attempt back and clears the
    username's failures (the right password was given), but not the address's.
    """

    def __init__(
        self,
        *,
        max_failures_per_user: int = 5,
        max_failures_per_ip: int = 20,
        window: float = 60.0,
        max_keys: int = 100_000,
    ) -> None:
        self._users = _Window(max_failures_per_user, window, max_keys)
        self._ips = _Window(max_failures_per_ip, window, max_keys)

    def begin(self, username: str, ip: str, now: float) -> float:
        """Start an attempt: 0 (and the attempt is counted), or the seconds to wait (and nothing counted)."""
        user_key = username.lower()
        wait = max(self._users.wait(user_key, now), self._ips.wait(ip, now))
        if wait > 0:
            return wait
        self._users.add(user_key, now)
        self._ips.add(ip, now)
        return 0.0

    def succeeded(self, username: str, ip: str, started: float) -> None:
        self._users.remove(username.lower())
        self._ips.remove(ip, started)

    def abandon(self, username: str, ip: str, started: float) -> None:
        """Take back an attempt that was never judged (the database was down)."""
        self._users.remove(username.lower(), started)
        self._ips.remove(ip, started)


def _iso(value: datetime) -> str:
    return value.isoformat()


def user_json(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "role": user.role, "created_at": _iso(user.created_at)}


def message_json(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "status": message.status,
        "heard_text": message.heard_text,
        "audio_ms": message.audio_ms,
        "attachments": message.attachments,
        "timings": message.timings,
        "created_at": _iso(message.created_at),
    }


def conversation_json(conversation: Conversation, *, with_messages: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(conversation.id),
        "title": conversation.title,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "message_count": conversation.message_count,
    }
    if with_messages:
        out["messages"] = [message_json(m) for m in conversation.messages]
    return out


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    # user data and tokens: never stored by caches
    return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _error(exc: HttpError) -> JSONResponse:
    return json_response({"error": {"code": exc.code, "message": exc.message}}, exc.status, exc.headers)


def _cookie(value: str, max_age: int, secure: bool) -> str:
    parts = [f"{TOKEN_COOKIE}={value}", f"Max-Age={max_age}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age == 0:
        parts.insert(2, "Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


async def read_json(request: Request, max_size: int = MAX_BODY_SIZE) -> dict[str, Any]:
    """The request's JSON object body, at most `max_size` bytes (the documents API uses it too)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "Send a JSON body with Content-Type: application/json.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_size:
        raise HttpError(413, "body_too_large", f"The body may be at most {max_size} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_size:
            raise HttpError(413, "body_too_large", f"The body may be at most {max_size} bytes.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise HttpError(400, "invalid_json", "The body must be a JSON object.")
    return data


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise HttpError(400, "invalid_request", f"'{name}' must be a string.")
    return value


def _title(data: dict[str, Any]) -> str | None:
    value = data.get("title")
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpError(400, "invalid_request", "'title' must be a string or null.")
    value = value.strip()
    if len(value) > MAX_TITLE_CHARS:
        raise HttpError(400, "invalid_request", f"'title' may have at most {MAX_TITLE_CHARS} characters.")
    return value or None


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Endpoint = Callable[[Request], Awaitable[Response]]


class _Api:
    def __init__(
        self,
        get_db: Callable[[], Database | None],
        authority: TokenAuthority,
        *,
        cookie_secure: bool,
        token_ttl: float,
        ticket_ttl: float,
        allow_signup: bool,
        allowed_origins: tuple[str, ...],
        login_limiter: LoginLimiter,
        clock: Callable[[], float],
    ) -> None:
        self.get_db = get_db
        self.authority = authority
        self.cookie_secure = cookie_secure
        self.token_ttl = token_ttl
        self.ticket_ttl = ticket_ttl
        self.allow_signup = allow_signup
        self.allowed_origins = allowed_origins
        self.limiter = login_limiter
        self.clock = clock

    def endpoint(self, handler: Endpoint) -> Endpoint:
        """Checks shared by every route, and errors turned into JSON answers."""

        async def run(request: Request) -> Response:
            try:
                if request.method in UNSAFE_METHODS and not origin_allowed(
                    request.headers.get("origin"), request.headers.get("host"), self.allowed_origins
                ):
                    raise HttpError(403, "origin_not_allowed", "This origin may not make this request.")
                return await handler(request)
            except HttpError as exc:
                return _error(exc)
            except DatabaseUnavailable as exc:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                return _error(
                    HttpError(
                        503,
                        "database_unavailable",
                        "The database is not reachable; try again shortly.",
                        {"Retry-After": "2"},
                    )
                )
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return _error(HttpError(500, "internal_error", "Internal server error."))

        return run

    def db(self) -> Database:
        db = self.get_db()
        if db is None:
            raise HttpError(503, "database_disabled", "This server runs without a database: accounts are off.")
        return db

    async def current_user(self, request: Request, db: Database) -> User:
        token = token_from_request(request.headers, request.cookies, request.query_params)
        if token is None:
            raise _unauthorized()
        try:
            principal = self.authority.verify(token)
        except AuthError as exc:
            raise _unauthorized() from exc
        user = await db.users.get(principal.user)
        if user is None:  # deleted since, or a token for a subject that is no account here
            raise _unauthorized()
        return user

    def signed_in(self, user: User, status: int) -> JSONResponse:
        token = self.authority.issue(str(user.id), ttl=self.token_ttl, admin=user.is_admin)
        ttl = int(self.token_ttl)
        body = {"user": user_json(user), "access_token": token, "token_type": "bearer", "expires_in": ttl}
        return json_response(body, status, {"Set-Cookie": _cookie(token, ttl, self.cookie_secure)})

    # --- accounts

    async def signup(self, request: Request) -> Response:
        db = self.db()
        if not self.allow_signup:
            raise HttpError(403, "signup_disabled", "Sign-up is turned off on this server.")
        data = await read_json(request)
        username, password = _string(data, "username"), _string(data, "password")
        if not USERNAME_PATTERN.fullmatch(username):
            raise HttpError(
                400, "invalid_username", "A username has 3 to 64 characters: letters, digits, '.', '_' or '-'."
            )
        if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise HttpError(
                400,
                "invalid_password",
                f"A password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters.",
            )
        try:
            user = await db.users.create(username, password)
        except UsernameTaken as exc:
            raise HttpError(409, "username_taken", "This username is taken.") from exc
        log.info("signed up user %s", user.id)
        return self.signed_in(user, 201)

    async def login(self, request: Request) -> Response:
        db = self.db()
        data = await read_json(request)
        username, password = _string(data, "username"), _string(data, "password")
        if len(username) > 64 or len(password) > MAX_PASSWORD_CHARS:
            raise HttpError(400, "invalid_request", "The username or password is too long.")
        ip = _client_ip(request)
        started = self.clock()
        wait = self.limiter.begin(username, ip, started)
        if wait > 0:
            log.info("log-in refused for %r from %s: too many failures", username, ip)
            raise HttpError(
                429,
                "rate_limited",
                "Too many failed log-ins; try again later.",
                {"Retry-After": str(math.ceil(wait))},
            )
        try:
            user = await db.users.authenticate(username, password)
        except BaseException:
            self.limiter.abandon(username, ip, started)
            raise
        if user is None:
            log.info("log-in failed for %r from %s", username, ip)
            raise HttpError(401, "invalid_credentials", "Wrong username or password.")
        self.limiter.succeeded(username, ip, started)
        log.info("logged in user %s", user.id)
        return self.signed_in(user, 200)

    async def logout(self, request: Request) -> Response:
        return Response(status_code=204, headers={"Set-Cookie": _cookie("", 0, self.cookie_secure)})

    async def me(self, request: Request) -> Response:
        db = self.db()
        return json_response({"user": user_json(await self.current_user(request, db))})

    async def ticket(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        ticket = await db.tickets.issue(user.id, self.ticket_ttl)
        return json_response({"ticket": ticket, "expires_in": int(self.ticket_ttl)})

    # --- conversations

    async def list_conversations(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
            raise HttpError(400, "invalid_request", f"'limit' must be a whole number from 1 to {MAX_PAGE}.")
        try:
            page = await db.conversations.list(
                user.id, limit=int(raw_limit), before=request.query_params.get("before") or None
            )
        except ValueError as exc:
            raise HttpError(400, "invalid_cursor", "'before' is not a cursor this server gave out.") from exc
        items = [conversation_json(c) for c in page.items]
        return json_response({"conversations": items, "next_cursor": page.next_cursor})

    async def create_conversation(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        title = _title(await read_json(request))
        conversation = await db.conversations.create(user.id, title)
        return json_response(conversation_json(conversation, with_messages=True), 201)

    async def get_conversation(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        conversation = await db.conversations.get(user.id, request.path_params["conversation_id"])
        if conversation is None:
            raise _not_found()
        return json_response(conversation_json(conversation, with_messages=True))

    async def rename_conversation(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        data = await read_json(request)
        if "title" not in data:
            raise HttpError(400, "invalid_request", "'title' is required (a string, or null to clear it).")
        conversation = await db.conversations.rename(user.id, request.path_params["conversation_id"], _title(data))
        if conversation is None:
            raise _not_found()
        return json_response(conversation_json(conversation))

    async def delete_conversation(self, request: Request) -> Response:
        db = self.db()
        user = await self.current_user(request, db)
        if not await db.conversations.delete(user.id, request.path_params["conversation_id"]):
            raise _not_found()
        return Response(status_code=204)


def _not_found() -> HttpError:
    # another user's conversation answers exactly like a missing one
    return HttpError(404, "not_found", "No such conversation.")


def routes(
    get_db: Callable[[], Database | None],
    authority: TokenAuthority,
    *,
    cookie_secure: bool = False,
    token_ttl: float = TOKEN_TTL,
    ticket_ttl: float = TICKET_TTL,
    allow_signup: bool = True,
    allowed_origins: tuple[str, ...] = (),
    login_limiter: LoginLimiter | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Route]:
    """The API's routes. `get_db` is called per request (None: answer 503, the server has no database)."""
    api = _Api(
        get_db,
        authority,
        cookie_secure=cookie_secure,
        token_ttl=token_ttl,
        ticket_ttl=ticket_ttl,
        allow_signup=allow_signup,
        allowed_origins=allowed_origins,
        login_limiter=login_limiter or LoginLimiter(),
        clock=clock,
    )
    e = api.endpoint
    one = "/api/conversations/{conversation_id}"
    return [
        Route("/api/auth/signup", e(api.signup), methods=["POST"]),
        Route("/api/auth/login", e(api.login), methods=["POST"]),
        Route("/api/auth/logout", e(api.logout), methods=["POST"]),
        Route("/api/auth/me", e(api.me), methods=["GET"]),
        Route("/api/auth/ticket", e(api.ticket), methods=["POST"]),
        Route("/api/conversations", e(api.list_conversations), methods=["GET"]),
        Route("/api/conversations", e(api.create_conversation), methods=["POST"]),
        Route(one, e(api.get_conversation), methods=["GET"]),
        Route(one, e(api.rename_conversation), methods=["PATCH"]),
        Route(one, e(api.delete_conversation), methods=["DELETE"]),
    ]


async def redeem_ticket(db: Database | None, ticket: str) -> str | None:
    """The token subject (user id string) a websocket ticket stands for, once; None if invalid, used or expired.

    Raises db.DatabaseUnavailable when the database is down (refuse the websocket with "try again later").
    """
    if db is None:
        return None
    user_id = await db.tickets.redeem(ticket)
    return None if user_id is None else str(user_id)


async def principal_from_ticket(db: Database | None, ticket: str) -> Principal | None:
    """Like redeem_ticket, but the whole Principal (with the admin role from the account)."""
    subject = await redeem_ticket(db, ticket)
    if subject is None or db is None:
        return None
    user = await db.users.get(subject)
    if user is None:
        return None
    claims: dict[str, Any] = {"sub": subject, "ticket": True}
    if user.is_admin:
        claims["role"] = "admin"
    return Principal(user=subject, admin=user.is_admin, claims=claims)


__all__ = [
    "HttpError",
    "LoginLimiter",
    "principal_from_ticket",
    "redeem_ticket",
    "routes",
]
