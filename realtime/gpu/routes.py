"""Admin HTTP routes over the scheduler: `GET /api/models/status`, `POST /api/models/unload`.

Both need a token (Authorization: Bearer, or the access_token cookie) carrying the admin role: 401
without a valid token, 403 without the role. Errors are `{"error": {"code", "message"}}`.

POST /api/models/unload takes `{"model": "<name>" | null, "wait": false, "timeout": <seconds>}` (`model`
is required; null means every model). 200 `{"unloaded": [...], "in_use": []}` when all went; 409 with
the same lists and error `model_in_use` when some were in use (with wait: still in use at the deadline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from realtime.auth import Principal, origin_allowed, token_from_request
from realtime.errors import AuthError
from realtime.gpu.errors import UnknownModel
from realtime.gpu.scheduler import GpuScheduler

MAX_BODY_SIZE = 4096
MAX_WAIT_TIMEOUT = 600.0


class Verifier(Protocol):
    def verify(self, token: str) -> Principal: ...


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def models_status(scheduler: GpuScheduler) -> dict[str, Any]:
    """The status the route answers with, for a protocol event (e.g. `ServerEvent("models.status", ...)`)."""
    return scheduler.status()


def routes(
    get_scheduler: Callable[[], GpuScheduler | None],
    authority: Verifier,
    *,
    allowed_origins: tuple[str, ...] = (),
) -> list[Route]:
    """The routes to mount. `get_scheduler` is called per request (None: 503, the server has none)."""

    def endpoint(handler: Callable[[Request, GpuScheduler], Awaitable[Response]]) -> Callable[..., Any]:
        async def run(request: Request) -> Response:
            try:
                if request.method == "POST" and not origin_allowed(
                    request.headers.get("origin"), request.headers.get("host"), allowed_origins
                ):
                    raise _Refused(403, "origin_not_allowed", "This origin may not make this request.")
                _require_admin(request, authority)
                scheduler = get_scheduler()
                if scheduler is None:
                    raise _Refused(503, "models_disabled", "This server manages no models.")
                return await handler(request, scheduler)
            except _Refused as exc:
                return _json({"error": {"code": exc.code, "message": exc.message}}, exc.status, exc.headers)
            except UnknownModel as exc:
                return _json({"error": {"code": exc.code, "message": exc.message}}, 404)

        return run

    async def status(request: Request, scheduler: GpuScheduler) -> Response:
        return _json(models_status(scheduler))

    async def unload(request: Request, scheduler: GpuScheduler) -> Response:
        name, wait, timeout = await _unload_request(request)
        result = await scheduler.unload(name, wait=wait, timeout=timeout)
        body: dict[str, Any] = {"unloaded": list(result.unloaded), "in_use": list(result.in_use)}
        if result.complete:
            return _json(body)
        message = "In use, not unloaded: " + ", ".join(result.in_use) + "."
        if wait:
            message = "Still in use when the wait ended, not unloaded: " + ", ".join(result.in_use) + "."
        return _json({"error": {"code": "model_in_use", "message": message}, **body}, 409)

    return [
        Route("/api/models/status", endpoint(status), methods=["GET"]),
        Route("/api/models/unload", endpoint(unload), methods=["POST"]),
    ]


def _require_admin(request: Request, authority: Verifier) -> None:
    token = token_from_request(request.headers, request.cookies, {})
    unauthorized = _Refused(401, "unauthorized", "A valid access token is required.", {"WWW-Authenticate": "Bearer"})
    if token is None:
        raise unauthorized
    try:
        principal = authority.verify(token)
    except AuthError as exc:
        raise unauthorized from exc
    if not principal.admin:
        raise _Refused(403, "forbidden", "This needs the admin role.")


async def _unload_request(request: Request) -> tuple[str | None, bool, float | None]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _Refused(415, "unsupported_media_type", "The body must be application/json.")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_SIZE:
            raise _Refused(413, "body_too_large", f"The body is limited to {MAX_BODY_SIZE} bytes.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _Refused(400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(body, dict) or "model" not in body:
        raise _Refused(400, "invalid_request", 'Expected {"model": name or null, "wait": bool}.')
    name, wait, timeout = body["model"], body.get("wait", False), body.get("timeout")
    if name is not None and (not isinstance(name, str) or not name):
        raise _Refused(400, "invalid_request", "model must be a model name or null (every model).")
    if not isinstance(wait, bool):
        raise _Refused(400, "invalid_request", "wait must be true or false.")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_WAIT_TIMEOUT
    ):
        raise _Refused(400, "invalid_request", f"timeout must be a number of seconds in (0, {MAX_WAIT_TIMEOUT:g}].")
    return name, wait, None if timeout is None else float(timeout)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})
