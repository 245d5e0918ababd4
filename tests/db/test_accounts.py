"""Accounts over HTTP: sign-up, log-in, the cookie, /me, the log-in rate limit, deleted accounts, and
single-use websocket tickets."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from db import Database, UsernameTaken
from realtime.auth import TokenAuthority
from realtime.http_api import LoginLimiter, principal_from_ticket, redeem_ticket
from tests.db.conftest import TEST_SECRET, ClientFactory, bearer, signup, unique_name


async def test_signup_returns_user_token_and_cookie(client: httpx.AsyncClient) -> None:
    """Sign-up answers 201 with the user and a token whose sub is the user id; it also sets the cookie."""
    name = unique_name("Signup")
    response = await client.post("/api/auth/signup", json={"username": name, "password": "long enough"})
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["username"] == name and body["user"]["role"] == "user"
    assert body["token_type"] == "bearer" and body["expires_in"] == 24 * 3600
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == body["user"]["id"] and "role" not in claims
    assert claims["exp"] - claims["iat"] == 24 * 3600
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"access_token={body['access_token']};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert response.headers["cache-control"] == "no-store"


async def test_duplicate_username_is_409_in_any_case(client: httpx.AsyncClient) -> None:
    """A username taken in another letter case is refused with 409."""
    name = unique_name("Dup")
    await signup(client, name)
    for variant in (name, name.upper(), name.lower()):
        response = await client.post("/api/auth/signup", json={"username": variant, "password": "long enough"})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "username_taken"


async def test_concurrent_duplicate_signups_store_one_account(database: Database) -> None:
    """Racing sign-ups for one name: exactly one succeeds, the others get UsernameTaken."""
    name = unique_name("race")
    results = await asyncio.gather(
        *(database.users.create(name.upper() if i % 2 else name, "password1") for i in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, UsernameTaken) for r in results if isinstance(r, BaseException))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "ab", "password": "long enough"}, 400, "invalid_username"),
        ({"username": "x" * 65, "password": "long enough"}, 400, "invalid_username"),
        ({"username": "has space", "password": "long enough"}, 400, "invalid_username"),
        ({"username": "émile", "password": "long enough"}, 400, "invalid_username"),
        ({"username": "fine.name_1-2", "password": "short"}, 400, "invalid_password"),
        ({"username": "fine.name", "password": 12345678}, 400, "invalid_request"),
        ({"username": "fine.name"}, 400, "invalid_request"),
    ],
)
async def test_signup_input_rules(client: httpx.AsyncClient, body: dict, status: int, code: str) -> None:
    """Usernames: 3-64 of letters, digits, '.', '_', '-'; passwords: at least 8 characters."""
    response = await client.post("/api/auth/signup", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_bodies_must_be_json_objects(client: httpx.AsyncClient) -> None:
    """A form post (what a cross-site page can send), malformed JSON or a non-object are refused."""
    form = await client.post("/api/auth/login", data={"username": "a", "password": "b"})
    assert form.status_code == 415
    broken = await client.post("/api/auth/login", content=b"{", headers={"content-type": "application/json"})
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_json")
    array = await client.post("/api/auth/login", json=["a"])
    assert array.status_code == 400
    huge = await client.post("/api/auth/signup", json={"username": "big", "password": "x" * 20_000})
    assert huge.status_code == 413


async def test_cross_site_origin_is_refused(client: httpx.AsyncClient) -> None:
    """An unsafe request from a foreign browser origin is refused; same-origin is fine."""
    foreign = await client.post(
        "/api/auth/login", json={"username": "a", "password": "b"}, headers={"origin": "https://evil.example"}
    )
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (403, "origin_not_allowed")
    same = await client.post(
        "/api/auth/login", json={"username": "nobody1", "password": "b"}, headers={"origin": "http://testserver"}
    )
    assert same.status_code == 401


async def test_login_good_and_bad_password(client: httpx.AsyncClient) -> None:
    """The right password (any letter case of the name) logs in with a cookie; a wrong one or an unknown user is 401."""
    name = unique_name("Login")
    created = await signup(client, name, "right password")
    ok = await client.post("/api/auth/login", json={"username": name.upper(), "password": "right password"})
    assert ok.status_code == 200
    body = ok.json()
    assert body["user"] == created["user"]
    assert body["token_type"] == "bearer" and body["expires_in"] == 24 * 3600
    assert ok.headers["set-cookie"].startswith("access_token=")
    for username, password in ((name, "wrong password"), (unique_name("ghost"), "right password")):
        bad = await client.post("/api/auth/login", json={"username": username, "password": password})
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "invalid_credentials"
        assert "set-cookie" not in bad.headers


async def test_secure_cookie_when_configured(make_client: ClientFactory) -> None:
    """cookie_secure=True adds Secure to the cookie."""
    client = make_client(cookie_secure=True)
    response = await client.post("/api/auth/signup", json={"username": unique_name(), "password": "long enough"})
    assert response.headers["set-cookie"].endswith("; Secure")


async def test_admin_token_carries_role(database: Database, client: httpx.AsyncClient) -> None:
    """An admin's token says role=admin."""
    name = unique_name("admin")
    await database.users.create(name, "admin password", role="admin")
    response = await client.post("/api/auth/login", json={"username": name, "password": "admin password"})
    claims = jwt.decode(response.json()["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["role"] == "admin"


async def test_login_rate_limit_then_window_passes(make_client: ClientFactory) -> None:
    """After N failures for a username the next attempt is 429 with Retry-After, even with the right
    password; once the window has passed, log-in works again."""
    now = [1000.0]
    limiter = LoginLimiter(max_failures_per_user=3, max_failures_per_ip=100, window=30.0)
    client = make_client(login_limiter=limiter, clock=lambda: now[0])
    name = unique_name("limited")
    await signup(client, name, "the password")
    for _ in range(3):
        now[0] += 1
        assert (await client.post("/api/auth/login", json={"username": name, "password": "nope"})).status_code == 401
    blocked = await client.post("/api/auth/login", json={"username": name.upper(), "password": "the password"})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert int(blocked.headers["retry-after"]) == 28  # the first failure (t=1001) expires at t=1031
    now[0] += 28
    ok = await client.post("/api/auth/login", json={"username": name, "password": "the password"})
    assert ok.status_code == 200


async def test_login_rate_limit_per_client_address(make_client: ClientFactory) -> None:
    """Failures spread over many usernames from one address are limited too."""
    now = [0.0]
    limiter = LoginLimiter(max_failures_per_user=100, max_failures_per_ip=4, window=60.0)
    client = make_client(login_limiter=limiter, clock=lambda: now[0])
    for _ in range(4):
        response = await client.post("/api/auth/login", json={"username": unique_name("spray"), "password": "x"})
        assert response.status_code == 401
    response = await client.post("/api/auth/login", json={"username": unique_name("spray"), "password": "x"})
    assert response.status_code == 429 and int(response.headers["retry-after"]) == 60


async def test_login_rate_limit_with_real_clock(make_client: ClientFactory) -> None:
    """The same with a short real window (time.monotonic)."""
    client = make_client(login_limiter=LoginLimiter(max_failures_per_user=2, window=0.5))
    name = unique_name("clock")
    await signup(client, name, "the password")
    for _ in range(2):
        await client.post("/api/auth/login", json={"username": name, "password": "nope"})
    assert (await client.post("/api/auth/login", json={"username": name, "password": "nope"})).status_code == 429
    await asyncio.sleep(0.6)
    ok = await client.post("/api/auth/login", json={"username": name, "password": "the password"})
    assert ok.status_code == 200


async def test_parallel_guesses_cannot_pass_the_limit(make_client: ClientFactory) -> None:
    """Guesses sent all at once are counted as they start: no more than the limit are checked."""
    client = make_client(login_limiter=LoginLimiter(max_failures_per_user=3, window=60.0))
    name = unique_name("parallel")
    await signup(client, name, "the password")
    responses = await asyncio.gather(
        *(client.post("/api/auth/login", json={"username": name, "password": f"guess{i}"}) for i in range(10))
    )
    assert sorted(r.status_code for r in responses) == [401] * 3 + [429] * 7


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60
    )
)
def test_limiter_allows_at_most_the_limit_per_window(steps: list[tuple[float, bool, str]]) -> None:
    """Whatever the timing, a username is refused exactly when it has `max` failures inside the window, and
    Retry-After is when the oldest of those leaves it; a success clears the username's failures."""
    limiter = LoginLimiter(max_failures_per_user=3, max_failures_per_ip=1000, window=10.0)
    now = 0.0
    failures: dict[str, list[float]] = {}
    for gap, success, user in steps:
        now += gap
        recent = [t for t in failures.get(user, []) if t > now - 10.0]
        wait = limiter.begin(user, "ip", now)
        if len(recent) >= 3:
            assert wait == pytest.approx(max(recent[-3] + 10.0 - now, 0.001))
            continue
        assert wait == 0
        if success:
            limiter.succeeded(user, "ip", now)
            failures[user] = []
        else:
            failures.setdefault(user, []).append(now)


async def test_me_with_header_and_with_cookie(client: httpx.AsyncClient, make_client: ClientFactory) -> None:
    """/me answers for a Bearer header and for the cookie that log-in set; nothing at all is 401."""
    created = await signup(client)
    with_header = await client.get("/api/auth/me", headers=bearer(created["access_token"]))
    assert with_header.status_code == 200 and with_header.json()["user"] == created["user"]

    browser = make_client()
    login = await browser.post(
        "/api/auth/login", json={"username": created["user"]["username"], "password": "correct horse"}
    )
    assert login.status_code == 200 and browser.cookies.get("access_token")
    with_cookie = await browser.get("/api/auth/me")
    assert with_cookie.status_code == 200 and with_cookie.json()["user"] == created["user"]

    anonymous = await make_client().get("/api/auth/me")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"


async def test_logout_clears_the_cookie(make_client: ClientFactory) -> None:
    """Log-out expires the cookie; the browser is then anonymous."""
    browser = make_client()
    await browser.post("/api/auth/signup", json={"username": unique_name(), "password": "long enough"})
    assert (await browser.get("/api/auth/me")).status_code == 200
    response = await browser.post("/api/auth/logout")
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert (await browser.get("/api/auth/me")).status_code == 401


async def test_bad_tokens_are_401(client: httpx.AsyncClient, authority: TokenAuthority) -> None:
    """A garbage token, an expired one, and a valid one for a subject that is no account here are 401."""
    tokens = [
        "garbage",
        authority.issue("00000000-0000-0000-0000-000000000000"),
        authority.issue("alice"),
        authority.issue((await signup(client))["user"]["id"], ttl=-60),
    ]
    for token in tokens:
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 401


async def test_deleted_users_token_is_refused(client: httpx.AsyncClient, database: Database) -> None:
    """Once an account is deleted its still-unexpired token is refused, and its name can be taken again."""
    created = await signup(client)
    token = created["access_token"]
    assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
    assert await database.users.delete(created["user"]["id"])
    assert not await database.users.delete(created["user"]["id"])
    assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 401
    assert (await client.post("/api/auth/ticket", headers=bearer(token))).status_code == 401
    login = {"username": created["user"]["username"], "password": "correct horse"}
    assert (await client.post("/api/auth/login", json=login)).status_code == 401
    again = await signup(client, created["user"]["username"])
    assert again["user"]["id"] != created["user"]["id"]


async def test_ticket_redeems_once(client: httpx.AsyncClient, database: Database) -> None:
    """A ticket names its user once: the second redeem, and any made-up ticket, get None."""
    created = await signup(client)
    response = await client.post("/api/auth/ticket", headers=bearer(created["access_token"]))
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 30 and len(body["ticket"]) >= 40
    assert await redeem_ticket(database, body["ticket"]) == created["user"]["id"]
    assert await redeem_ticket(database, body["ticket"]) is None
    assert await redeem_ticket(database, "made-up") is None
    assert await redeem_ticket(database, "x" * 10_000) is None
    assert await redeem_ticket(None, body["ticket"]) is None
    assert (await client.post("/api/auth/ticket")).status_code == 401


async def test_concurrent_redeems_succeed_once(client: httpx.AsyncClient, database: Database) -> None:
    """Racing redeems of one ticket: exactly one gets the user."""
    created = await signup(client)
    ticket = await database.tickets.issue(created["user"]["id"], 30)
    results = await asyncio.gather(*(redeem_ticket(database, ticket) for _ in range(8)))
    assert results.count(created["user"]["id"]) == 1 and results.count(None) == 7


async def test_expired_ticket_fails(make_client: ClientFactory, database: Database) -> None:
    """A ticket past its lifetime is refused."""
    client = make_client(ticket_ttl=0.2)
    created = await signup(client)
    ticket = (await client.post("/api/auth/ticket", headers=bearer(created["access_token"]))).json()["ticket"]
    await asyncio.sleep(0.3)
    assert await redeem_ticket(database, ticket) is None
    assert await database.tickets.purge_expired() >= 1


async def test_ticket_principal_carries_admin_role(database: Database) -> None:
    """principal_from_ticket gives the websocket the user id and the account's admin role."""
    admin = await database.users.create(unique_name("boss"), "admin password", role="admin")
    principal = await principal_from_ticket(database, await database.tickets.issue(admin.id))
    assert principal is not None and principal.user == str(admin.id) and principal.admin
    assert await principal_from_ticket(database, "made-up") is None


async def test_ticket_of_deleted_user_fails(database: Database) -> None:
    """Deleting an account voids its outstanding tickets."""
    user = await database.users.create(unique_name(), "password1")
    ticket = await database.tickets.issue(user.id)
    await database.users.delete(user.id)
    assert await database.tickets.redeem(ticket) is None


async def test_authenticate_upgrades_an_old_hash(database: Database) -> None:
    """A hash made with weaker parameters is replaced on the next successful log-in."""
    user = await database.users.create(unique_name(), "password1")
    async with database.connection() as con:
        before = await con.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    database.users.hasher, old = stronger, database.users.hasher
    try:
        assert await database.users.authenticate(user.username, "password1") == user
    finally:
        database.users.hasher = old
    async with database.connection() as con:
        after = await con.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    assert after != before and "t=2" in after and "m=2048" in after
    assert await database.users.authenticate(user.username, "password1") == user  # old params still verify


async def test_no_database_is_503(make_client: ClientFactory) -> None:
    """Without a database every account route answers 503 with a JSON error."""
    client = make_client(get_db=lambda: None)
    response = await client.post("/api/auth/login", json={"username": "someone", "password": "password1"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_disabled"
    assert (await client.get("/api/conversations")).status_code == 503


async def test_signup_can_be_turned_off(make_client: ClientFactory) -> None:
    """allow_signup=False refuses sign-up with 403."""
    response = await make_client(allow_signup=False).post(
        "/api/auth/signup", json={"username": unique_name(), "password": "long enough"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "signup_disabled")
