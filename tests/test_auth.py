"""Auth at the handshake: every bad token kind and a bad Origin are refused before the websocket opens."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from realtime.auth import TokenAuthority, origin_allowed, token_from_request
from realtime.client import RealtimeClient
from realtime.config import load_settings
from realtime.errors import AuthError
from tests.support.server import TEST_SECRET, ServerProcess


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _tampered() -> str:
    good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256")
    head, _, sig = good.split(".")
    return f"{head}.{_b64({'sub': 'admin', 'exp': int(time.time()) + 600, 'role': 'admin'})}.{sig}"


def _signed(claims: dict, key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


LATER = int(time.time()) + 3600
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "garbage": lambda: "not-a-jwt",
    "expired": lambda: _signed({"sub": "alice", "exp": int(time.time()) - 60}),
    "alg none": lambda: _unsigned({"sub": "alice", "exp": LATER}),
    "wrong key": lambda: _signed({"sub": "alice", "exp": LATER}, key="another-secret-" + "y" * 40),
    "no exp": lambda: _signed({"sub": "alice"}),
    "no sub": lambda: _signed({"exp": LATER}),
    "empty sub": lambda: _signed({"sub": "  ", "exp": LATER}),
    "tampered claims": _tampered,
    "algorithm not pinned": lambda: _signed({"sub": "alice", "exp": LATER}, alg="HS512"),
    "oversized": lambda: _signed({"sub": "alice", "exp": LATER, "pad": "x" * 9000}),
}


@pytest.fixture(scope="module")
def authority() -> TokenAuthority:
    return TokenAuthority(load_settings({"REALTIME_JWT_SECRET": TEST_SECRET}))


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_bad_tokens_are_refused(authority: TokenAuthority, kind: str) -> None:
    """Each kind of bad token raises AuthError (never a principal, never another exception)."""
    with pytest.raises(AuthError):
        authority.verify(BAD_TOKENS[kind]())


def test_good_token_and_admin_claim(authority: TokenAuthority) -> None:
    """An issued token verifies to its subject; the admin role is carried only when granted."""
    assert authority.verify(authority.issue("alice")).user == "alice"
    assert not authority.verify(authority.issue("alice")).admin
    assert authority.verify(authority.issue("root", admin=True)).admin


def test_token_sources_in_order() -> None:
    """Bearer header wins over cookie, cookie over the query parameter."""
    assert token_from_request({"authorization": "Bearer h"}, {"access_token": "c"}, {"access_token": "q"}) == "h"
    assert token_from_request({}, {"access_token": "c"}, {"access_token": "q"}) == "c"
    assert token_from_request({"authorization": "Basic x"}, {}, {"access_token": "q"}) == "q"
    assert token_from_request({}, {}, {}) is None


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "h:1", (), True),
        ("http://h:1", "h:1", (), True),
        ("https://evil.example", "h:1", (), False),
        ("http://h:1.evil.example", "h:1", (), False),
        ("null", "h:1", (), False),
        ("https://app.example", "h:1", ("https://app.example",), True),
        ("https://other.example", "h:1", ("*",), True),
    ],
)
def test_origin_rule(origin: str | None, host: str, allowed: tuple[str, ...], ok: bool) -> None:
    """No Origin (a program) or same-host is allowed; other browser origins only when listed."""
    assert origin_allowed(origin, host, allowed) is ok


async def _status_of(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, subprotocols=["realtime.v1.msgpack"], **kwargs)  # type: ignore[list-item, arg-type]
    return refused.value.response.status_code


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_server_refuses_bad_token_before_accept(fake_server: ServerProcess, kind: str) -> None:
    """The handshake itself is answered 401 for every bad token kind (431 when the header is oversized)."""
    headers = {"Authorization": f"Bearer {BAD_TOKENS[kind]()}"}
    expected = 431 if kind == "oversized" else 401
    assert await _status_of(fake_server.ws_url, additional_headers=headers) == expected


async def test_server_refuses_missing_token(fake_server: ServerProcess) -> None:
    """No token at all: 401."""
    assert await _status_of(fake_server.ws_url) == 401


async def test_server_refuses_cross_site_origin(fake_server: ServerProcess) -> None:
    """A valid token from a foreign Origin is refused with 403 (cross-site websocket hijacking)."""
    headers = {"Authorization": f"Bearer {fake_server.token()}"}
    status = await _status_of(fake_server.ws_url, additional_headers=headers, origin="https://evil.example")
    assert status == 403


@pytest.mark.parametrize("where", ["header", "cookie", "query"])
async def test_server_accepts_good_token_from_each_source(fake_server: ServerProcess, where: str) -> None:
    """A good token works from the header, the access_token cookie or the access_token query parameter."""
    token = fake_server.token("dora")
    url, kwargs = fake_server.ws_url, {}
    if where == "header":
        kwargs = {"additional_headers": {"Authorization": f"Bearer {token}"}}
    elif where == "cookie":
        kwargs = {"additional_headers": {"Cookie": f"access_token={token}"}}
    else:
        url += f"?access_token={token}"
    async with connect(url, subprotocols=["realtime.v1.json"], origin=fake_server.url, **kwargs) as ws:  # type: ignore[list-item, arg-type]
        first = json.loads(await ws.recv())
    assert first["type"] == "session.created" and first["session"]["user"] == "dora"


async def test_same_origin_browser_is_accepted(fake_server: ServerProcess) -> None:
    """A browser page served by the server itself (same Origin) may connect."""
    client = await RealtimeClient.connect(fake_server.ws_url, fake_server.token(), origin=fake_server.url)
    assert client.session["user"] == "alice"
    await client.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"X-Pad": "p" * 9000}, 431), ({f"X-H{i}": "v" for i in range(200)}, 431)],
    ids=["header line too long", "too many headers"],
)
async def test_oversized_handshake_is_answered_not_hung(
    fake_server: ServerProcess, headers: dict[str, str], status: int
) -> None:
    """An oversized handshake gets an HTTP error at once (not a hang until the client's timeout)."""
    started = time.monotonic()
    code = await _status_of(fake_server.ws_url, additional_headers=headers, open_timeout=5)
    assert code in (status, 400)
    assert time.monotonic() - started < 2
