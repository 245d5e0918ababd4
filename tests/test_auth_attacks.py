"""Attacks on authentication, against the real server: forged and stale tokens from every source, a deleted
account, someone else's session, a cross-site page, oversized handshakes. Each is refused with the answer
docs/protocol.md §2 documents: an HTTP status and JSON body before the websocket opens, or an error event.

Cases tests/test_auth.py, tests/test_persistence.py and tests/test_resume.py already cover exactly are not
repeated; docs/reliability.md lists them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from db import EmbeddedPostgres
from realtime.client import RealtimeClient
from tests.conftest import ServerFactory, create_database
from tests.support.fake_ollama import FakeOllama
from tests.support.server import TEST_SECRET, ServerProcess
from tests.test_auth import BAD_TOKENS

UNAUTHORIZED = {"code": "unauthorized", "message": "A valid access token is required."}
ORIGIN_REFUSED = {"code": "origin_not_allowed", "message": "This origin may not open a session."}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _json_b64(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj).encode())


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 600, **extra}


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], key: str = TEST_SECRET) -> str:
    """A token signed by hand with HS256 whatever the header claims (pyjwt would refuse to lie)."""
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
    sig = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _good() -> str:
    return jwt.encode(_claims(), TEST_SECRET, algorithm="HS256")


def _flip_signature() -> str:
    head, body, sig = _good().split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    return f"{head}.{body}.{_b64(bytes(raw))}"


def _header_swapped() -> str:
    """The header changed to another HMAC algorithm, the HS256 signature kept."""
    _, body, sig = _good().split(".")
    return f"{_json_b64({'alg': 'HS512', 'typ': 'JWT'})}.{body}.{sig}"


def _none_keeping_signature() -> str:
    _, body, sig = _good().split(".")
    return f"{_json_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.{sig}"


# Kinds tests/test_auth.py does not have (it checks its own kinds through the Authorization header).
NEW_BAD_TOKENS: dict[str, Callable[[], str]] = {
    "alg None (capitalised)": lambda: f"{_json_b64({'alg': 'None'})}.{_json_b64(_claims())}.",
    "alg NONE": lambda: f"{_json_b64({'alg': 'NONE'})}.{_json_b64(_claims())}.",
    "alg none, signature kept": _none_keeping_signature,
    "HS256, empty signature": lambda: _good().rsplit(".", 1)[0] + ".",
    "signature bit flipped": _flip_signature,
    "header alg swapped": _header_swapped,
    "alg confusion RS256 signed with the secret": lambda: _hmac_token({"alg": "RS256", "typ": "JWT"}, _claims()),
    "not yet valid (nbf)": lambda: jwt.encode(_claims(nbf=int(time.time()) + 600), TEST_SECRET, algorithm="HS256"),
    "forged admin role, wrong key": lambda: jwt.encode(_claims(role="admin"), "k" * 40, algorithm="HS256"),
    "sub not a string": lambda: _hmac_token({"alg": "HS256", "typ": "JWT"}, _claims(sub=42)),
    "sub over 256 chars": lambda: jwt.encode(_claims(sub="a" * 257), TEST_SECRET, algorithm="HS256"),
    "two tokens glued": lambda: _good() + "." + _good(),
}
SOURCES = ["header", "cookie", "query"]


def _where(token: str, source: str, url: str) -> tuple[str, dict[str, str]]:
    if source == "header":
        return url, {"Authorization": f"Bearer {token}"}
    if source == "cookie":
        return url, {"Cookie": f"access_token={token}"}
    return f"{url}?access_token={token}", {}


async def _refusal(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any]:
    """The HTTP status and (JSON, when it is) body that refused the handshake."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers or {}, open_timeout=5, **kwargs):
            pass
    response = refused.value.response
    try:
        body = json.loads(response.body or b"")
    except ValueError:
        body = (response.body or b"").decode(errors="replace")
    return response.status_code, body


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", list(NEW_BAD_TOKENS))
async def test_forged_tokens_are_refused_from_every_source(fake_server: ServerProcess, kind: str, source: str) -> None:
    """Forged, mangled and not-yet-valid tokens: 401 `unauthorized`, whichever way they are sent."""
    url, headers = _where(NEW_BAD_TOKENS[kind](), source, fake_server.ws_url)
    assert await _refusal(url, headers) == (401, {"error": UNAUTHORIZED})


@pytest.mark.parametrize("source", ["cookie", "query"])
@pytest.mark.parametrize("kind", [k for k in BAD_TOKENS if k != "oversized"])
async def test_known_bad_tokens_are_refused_from_cookie_and_query(
    fake_server: ServerProcess, kind: str, source: str
) -> None:
    """tests/test_auth.py's bad tokens (alg none, expired, wrong key, tampered...) sent as cookie or query: 401."""
    url, headers = _where(BAD_TOKENS[kind](), source, fake_server.ws_url)
    assert await _refusal(url, headers) == (401, {"error": UNAUTHORIZED})


async def test_bad_bearer_does_not_fall_back_to_a_good_cookie(fake_server: ServerProcess) -> None:
    """A present Bearer header wins even when its token is bad: 401, though the cookie is good (§2)."""
    headers = {"Authorization": f"Bearer {BAD_TOKENS['expired']()}", "Cookie": f"access_token={fake_server.token()}"}
    assert await _refusal(fake_server.ws_url, headers) == (401, {"error": UNAUTHORIZED})


async def test_expiry_has_five_seconds_of_leeway_and_no_more(fake_server: ServerProcess) -> None:
    """A token expired 2 s ago still opens a session (clock skew); one expired 30 s ago is refused."""
    now = int(time.time())
    fresh = jwt.encode({"sub": "skewed", "exp": now - 2}, TEST_SECRET, algorithm="HS256")
    async with await RealtimeClient.connect(fake_server.ws_url, fresh) as client:
        assert client.session["user"] == "skewed"
    stale = jwt.encode({"sub": "skewed", "exp": now - 30}, TEST_SECRET, algorithm="HS256")
    assert await _refusal(fake_server.ws_url, {"Authorization": f"Bearer {stale}"}) == (401, {"error": UNAUTHORIZED})


async def test_a_plain_token_gets_no_admin_event(fake_server: ServerProcess) -> None:
    """models.status needs the admin role: a normal token gets the `forbidden` error event, the session goes on."""
    async with await RealtimeClient.connect(fake_server.ws_url, fake_server.token("mallory")) as client:
        await client.send({"type": "models.status", "event_id": "m1"})
        error = (await client.recv())["error"]
        assert (error["code"], error["event_id"]) == ("forbidden", "m1")
        assert (await client.ask("still here?")).status == "completed"


# ---- someone else's session -------------------------------------------------------------------------


async def test_resume_with_stolen_id_and_secret_while_the_owner_is_connected(fake_server: ServerProcess) -> None:
    """Another user with the victim's session id and secret: resume_failed and a fresh session of their own;
    the victim's link is not taken over (no 4002) and its session still answers."""
    victim = await RealtimeClient.connect(fake_server.ws_url, fake_server.token("victim"))
    session_id, secret, last_seq = victim.resume_args()
    thief = await RealtimeClient.connect(
        fake_server.ws_url, fake_server.token("thief"), resume=(session_id, secret, last_seq)
    )
    first, second = await thief.recv(), await thief.recv()
    assert first["type"] == "error" and first["error"]["code"] == "resume_failed"
    assert second["type"] == "session.created"
    assert second["session"]["id"] != session_id and second["session"]["user"] == "thief"
    result = await victim.ask("mine")
    assert result.status == "completed" and result.text == "You said: mine"
    await thief.close()
    await victim.close()


@pytest.mark.parametrize(
    "query",
    [
        "resume={id}&resume_secret={secret}&last_seq=abc",
        "resume={id}&resume_secret={secret}&last_seq=-1",
        "resume={id}&resume_secret={secret}&last_seq=1e3",
        "resume={id}&resume_secret={secret}&last_seq=" + "9" * 40,
        "resume={id}&last_seq=0",
        "resume=&resume_secret=&last_seq=0",
        "resume={id}&resume_secret={secret}",
        "resume={id}&resume_secret=%00%ff&last_seq=0",
    ],
    ids=["seq not a number", "negative seq", "float seq", "huge seq", "no secret", "empty", "no seq", "binary secret"],
)
async def test_malformed_resume_parameters_give_a_fresh_session(fake_server: ServerProcess, query: str) -> None:
    """Resume parameters that are missing or not numbers: resume_failed, then a fresh session (never 1011)."""
    owner = await RealtimeClient.connect(fake_server.ws_url, fake_server.token("owner"))
    session_id, secret, _ = owner.resume_args()
    url = f"{fake_server.ws_url}?{query.format(id=session_id, secret=secret)}"
    client = await RealtimeClient.connect(url, fake_server.token("owner"), open_timeout=5)
    first, second = await client.recv(), await client.recv()
    assert first["error"]["code"] == "resume_failed"
    assert second["type"] == "session.created" and second["session"]["id"] != session_id
    await client.close()
    assert (await owner.ask("mine")).status == "completed"  # the owner's link was left alone
    await owner.close()


# ---- cross-site pages -------------------------------------------------------------------------------


def _evil_origins(server: ServerProcess) -> list[str]:
    host = f"127.0.0.1:{server.port}"
    return [
        "null",
        f"http://{host}.evil.example",
        f"http://127.0.0.1:{server.port + 1}",
        f"http://{host}@evil.example",
        "http://localhost",
        f"ws://{host}",
    ]


@pytest.mark.parametrize("source", SOURCES)
async def test_cross_site_pages_are_refused_whatever_carries_the_token(fake_server: ServerProcess, source: str) -> None:
    """A foreign, look-alike, other-port or `null` Origin is refused 403 even with a good token (the cookie
    case is the real cross-site websocket hijack: a browser attaches the cookie to any page's request)."""
    for origin in _evil_origins(fake_server):
        url, headers = _where(fake_server.token(), source, fake_server.ws_url)
        headers["Origin"] = origin
        assert await _refusal(url, headers) == (403, {"error": ORIGIN_REFUSED}), origin


# ---- oversized handshakes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "status"),
    [("request line", 414), ("cookie", 431), ("header block of 160 KB", 400)],
)
async def test_oversized_handshakes_are_answered_at_once(fake_server: ServerProcess, how: str, status: int) -> None:
    """A request line or one header over 8192 bytes (websockets' limits): 414/431. A header block too big for
    uvicorn's HTTP parser (h11 reads the request first and refuses an incomplete one over 16 KiB): 400,
    plain text. Each at once, never a hang."""
    url, headers = fake_server.ws_url, {}
    if how == "request line":
        url += "?access_token=" + "a" * 9000
    elif how == "cookie":
        headers = {"Cookie": "access_token=" + "a" * 9000}
    else:
        headers = {f"X-Big-{i}": "v" * 8000 for i in range(20)}
    started = time.monotonic()
    code, _ = await _refusal(url, headers)
    assert code == status
    assert time.monotonic() - started < 2


# ---- accounts: deleted users, tickets, cross-site requests -------------------------------------------


@pytest.fixture(scope="module")
async def accounts(server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres) -> ServerProcess:
    url = await create_database(postgres)
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off", database_url=url)


async def _signup(server: ServerProcess, name: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.post("/api/auth/signup", json={"username": name, "password": "correct horse battery"})
        assert resp.status_code == 201, resp.text
        body = resp.json()
    return body["access_token"], body["user"]["id"]


async def _ticket(server: ServerProcess, token: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        resp = await http.post("/api/auth/ticket")
        assert resp.status_code == 200, resp.text
        return resp.json()["ticket"]


async def _delete(server: ServerProcess, user_id: str) -> None:
    """Soft-delete the account, as an administrator would."""
    con = await asyncpg.connect(server.env["REALTIME_DATABASE_URL"])
    try:
        await con.execute("UPDATE users SET deleted_at = now() WHERE id = $1::uuid", user_id)
    finally:
        await con.close()


async def test_deleted_account_loses_tickets_api_and_its_own_session(accounts: ServerProcess) -> None:
    """After deletion: a ticket issued before, the HTTP API and a resume of its own live session all get 401."""
    token, user_id = await _signup(accounts, "doomed")
    ticket = await _ticket(accounts, token)
    live = await RealtimeClient.connect(accounts.ws_url, token)
    resume = live.resume_args()
    await _delete(accounts, user_id)

    assert await _refusal(f"{accounts.ws_url}?ticket={ticket}") == (
        401,
        {"error": {"code": "unauthorized", "message": "The ticket is invalid, used or expired."}},
    )
    gone = {"error": {"code": "unauthorized", "message": "This account no longer exists."}}
    session_id, secret, last_seq = resume
    query = f"resume={session_id}&resume_secret={secret}&last_seq={last_seq}"
    assert await _refusal(f"{accounts.ws_url}?{query}", {"Authorization": f"Bearer {token}"}) == (401, gone)
    async with httpx.AsyncClient(base_url=accounts.url, headers={"Authorization": f"Bearer {token}"}) as http:
        for method, path in (("GET", "/api/auth/me"), ("POST", "/api/auth/ticket"), ("GET", "/api/conversations")):
            resp = await http.request(method, path)
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", (path, resp.text)
    await live.close()


async def test_cross_site_page_cannot_spend_or_mint_a_ticket(accounts: ServerProcess) -> None:
    """A foreign Origin is refused (403) before a ticket is redeemed, so the ticket still works for its owner;
    and a cross-site POST cannot mint a ticket with the account's cookie."""
    token, _ = await _signup(accounts, "ticketed")
    ticket = await _ticket(accounts, token)
    url = f"{accounts.ws_url}?ticket={ticket}"
    assert await _refusal(url, {"Origin": "https://evil.example"}) == (403, {"error": ORIGIN_REFUSED})
    async with await RealtimeClient.connect(url, None, origin=accounts.url) as client:
        assert client.session["history_stored"] is True
    async with httpx.AsyncClient(base_url=accounts.url) as http:
        resp = await http.post(
            "/api/auth/ticket", headers={"Origin": "https://evil.example", "Cookie": f"access_token={token}"}
        )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "origin_not_allowed"


@pytest.mark.parametrize("ticket", ["", "x", "a" * 5000, "%00", "' OR '1'='1"])
async def test_garbage_tickets_are_refused(accounts: ServerProcess, ticket: str) -> None:
    """Tickets that were never issued (empty, long, SQL-shaped): 401, not a server error."""
    status, body = await _refusal(f"{accounts.ws_url}?ticket={quote(ticket)}")
    assert status == 401 and body["error"]["code"] == "unauthorized"
