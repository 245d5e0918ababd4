"""HTTP API of the document library: upload, list, get, delete, read a passage, search.

Authenticated like the rest of /api (realtime.http_api): a bearer token or the access-token cookie,
the account looked up on every request; errors are `{"error": {"code", "message"}}`.

Upload is the file itself as the request body (`POST /api/documents`), its name in the `X-Filename`
header (percent-encoded UTF-8 allowed). No multipart: nothing to parse but the bytes, no temporary
files, and the custom header is something a cross-site form cannot send (a cross-origin script must
pass a CORS preflight first), which keeps cookie-authenticated uploads safe from request forgery as the
JSON-only rule does for the other routes. The Content-Type is a hint at most: the format is sniffed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db import Database, DatabaseUnavailable, User
from db.documents import StoredDocument
from realtime.auth import TokenAuthority, origin_allowed, token_from_request
from realtime.documents.context import build_context
from realtime.documents.errors import HTTP_STATUS, DocumentError, EmbeddingDimensionMismatch
from realtime.documents.library import DocumentLibrary
from realtime.errors import AuthError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from realtime.http_api import HttpError, json_response, read_json

log = logging.getLogger("realtime.documents.http")

MAX_JSON_SIZE = 16 * 1024
MAX_QUERY_CHARS = 2000
MAX_SEARCH_RESULTS = 20
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Endpoint = Callable[[Request], Awaitable[Response]]


def document_json(document: StoredDocument) -> dict[str, Any]:
    return {
        "id": str(document.id),
        "name": document.name,
        "media_type": document.media_type,
        "size_bytes": document.size_bytes,
        "sha256": document.sha256,
        "title": document.title,
        "page_count": document.page_count,
        "char_count": document.char_count,
        "chunk_count": document.chunk_count,
        "embed_model": document.embed_model,
        "created_at": document.created_at.isoformat(),
    }


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _upstream_status(exc: UpstreamError) -> int:
    if isinstance(exc, UpstreamUnavailable):
        return 503
    return 504 if isinstance(exc, UpstreamTimeout) else 502


def _not_found() -> HttpError:
    return HttpError(404, "document_not_found", "No such document.")


class _Api:
    def __init__(
        self,
        get_library: Callable[[], DocumentLibrary | None],
        get_db: Callable[[], Database | None],
        authority: TokenAuthority,
        allowed_origins: tuple[str, ...],
    ) -> None:
        self.get_library = get_library
        self.get_db = get_db
        self.authority = authority
        self.allowed_origins = allowed_origins

    def endpoint(self, handler: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                if request.method in UNSAFE_METHODS and not origin_allowed(
                    request.headers.get("origin"), request.headers.get("host"), self.allowed_origins
                ):
                    raise HttpError(403, "origin_not_allowed", "This origin may not make this request.")
                return await handler(request)
            except HttpError as exc:
                return _error(exc.status, exc.code, exc.message, exc.headers)
            except DocumentError as exc:
                return _error(HTTP_STATUS.get(exc.code, 422), exc.code, exc.message)
            except UpstreamError as exc:
                return _error(_upstream_status(exc), exc.code, exc.message)
            except EmbeddingDimensionMismatch as exc:  # a configuration error: details go to the log
                return _error(502, exc.code, exc.safe_message)
            except DatabaseUnavailable as exc:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                return _error(
                    503,
                    "database_unavailable",
                    "The database is not reachable; try again shortly.",
                    {"Retry-After": "2"},
                )
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return _error(500, "internal_error", "Internal server error.")

        return run

    def library(self) -> DocumentLibrary:
        library = self.get_library()
        if library is None or library.store is None:
            raise HttpError(503, "database_disabled", "This server runs without a database: there is no library.")
        return library

    async def user(self, request: Request) -> User:
        db = self.get_db()
        if db is None:
            raise HttpError(503, "database_disabled", "This server runs without a database: accounts are off.")
        token = token_from_request(request.headers, request.cookies, request.query_params)
        if token is None:
            raise HttpError(401, "unauthorized", "A valid access token is required.", {"WWW-Authenticate": "Bearer"})
        try:
            principal = self.authority.verify(token)
        except AuthError as exc:
            raise HttpError(
                401, "unauthorized", "A valid access token is required.", {"WWW-Authenticate": "Bearer"}
            ) from exc
        user = await db.users.get(principal.user)
        if user is None:
            raise HttpError(401, "unauthorized", "A valid access token is required.", {"WWW-Authenticate": "Bearer"})
        return user

    async def upload(self, request: Request) -> Response:
        user = await self.user(request)
        library = self.library()
        raw_name = request.headers.get("x-filename")
        if not raw_name or not raw_name.strip():
            raise HttpError(400, "filename_required", "Name the file in the X-Filename header.")
        limit = library.limits.max_size
        too_large = HttpError(413, "document_too_large", f"A document may have at most {limit:,} bytes.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        if not body:
            raise HttpError(400, "document_empty", "The request body is empty: send the file as the body.")
        document = await library.add(
            str(user.id), unquote(raw_name), bytes(body), declared_type=request.headers.get("content-type")
        )
        return json_response({"document": document_json(document)}, 201)

    async def list(self, request: Request) -> Response:
        user = await self.user(request)
        documents = await self.library().list(str(user.id))
        return json_response({"documents": [document_json(d) for d in documents]})

    async def get(self, request: Request) -> Response:
        user = await self.user(request)
        document = await self.library().get(str(user.id), request.path_params["document_id"])
        if document is None:
            raise _not_found()
        return json_response({"document": document_json(document)})

    async def delete(self, request: Request) -> Response:
        user = await self.user(request)
        if not await self.library().delete(str(user.id), request.path_params["document_id"]):
            raise _not_found()
        return Response(status_code=204)

    async def passage(self, request: Request) -> Response:
        user = await self.user(request)
        raw = request.path_params["ordinal"]
        if not raw.isdigit():
            raise _not_found()
        passage = await self.library().passage(str(user.id), request.path_params["document_id"], int(raw))
        if passage is None:
            raise _not_found()
        return json_response({"passage": passage.to_json()})

    async def search(self, request: Request) -> Response:
        user = await self.user(request)
        library = self.library()
        data = await read_json(request, MAX_JSON_SIZE)
        query = data.get("query")
        if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
            raise HttpError(400, "invalid_request", f"'query' must be a string of 1 to {MAX_QUERY_CHARS} characters.")
        limit = data.get("limit", library.passages)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_RESULTS:
            raise HttpError(400, "invalid_request", f"'limit' must be a whole number from 1 to {MAX_SEARCH_RESULTS}.")
        ids = data.get("document_ids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise HttpError(400, "invalid_request", "'document_ids' must be a list of document ids.")
        mode = data.get("mode", "hybrid" if library.hybrid else "vector")
        if mode not in ("hybrid", "vector"):
            raise HttpError(400, "invalid_request", "'mode' must be 'hybrid' or 'vector'.")
        passages = await library.search(str(user.id), query, limit=limit, document_ids=ids, hybrid=mode == "hybrid")
        context = build_context(passages, max_chars=library.context_chars)
        return json_response(
            {
                "passages": [p.to_json() for p in passages],
                "context": {"text": context.text, "sources": [s.to_json() for s in context.sources]},
            }
        )


def routes(
    get_library: Callable[[], DocumentLibrary | None],
    get_db: Callable[[], Database | None],
    authority: TokenAuthority,
    *,
    allowed_origins: tuple[str, ...] = (),
) -> list[Route]:
    """The library's routes; `get_library` and `get_db` are called per request (None: answer 503)."""
    api = _Api(get_library, get_db, authority, allowed_origins)
    e = api.endpoint
    one = "/api/documents/{document_id}"
    return [
        Route("/api/documents", e(api.list), methods=["GET"]),
        Route("/api/documents", e(api.upload), methods=["POST"]),
        Route("/api/documents/search", e(api.search), methods=["POST"]),
        Route(one, e(api.get), methods=["GET"]),
        Route(one, e(api.delete), methods=["DELETE"]),
        Route(one + "/passages/{ordinal}", e(api.passage), methods=["GET"]),
    ]
