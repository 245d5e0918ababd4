"""One real PostgreSQL for the whole run (stopped at the end), a fresh database per test module, and the
HTTP API on a Starlette app driven through httpx's ASGI transport."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from argon2 import PasswordHasher
from starlette.applications import Starlette

from db import Database, EmbeddedPostgres
from realtime.auth import TokenAuthority
from realtime.config import Settings
from realtime.http_api import routes
from tests.conftest import create_database

TEST_SECRET = "db-tests-secret-" + "s" * 40
# Cheap argon2 parameters: the tests hash hundreds of passwords; production uses the library's defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="module")
async def db_url(postgres: EmbeddedPostgres) -> str:
    """The module's own empty database."""
    return await create_database(postgres)


@pytest.fixture(scope="module")
async def database(db_url: str) -> AsyncIterator[Database]:
    """The module's database, migrated."""
    db = await Database.connect(db_url, max_size=10, password_hasher=FAST_HASHER)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TokenAuthority:
    return TokenAuthority(Settings(jwt_secret=TEST_SECRET, state_dir=tmp_path_factory.mktemp("state")))


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(database: Database, authority: TokenAuthority) -> AsyncIterator[ClientFactory]:
    """httpx clients on a Starlette app serving `routes(...)`; keyword arguments go to routes()."""
    clients: list[httpx.AsyncClient] = []

    def make(*, get_db: Callable[[], Database | None] | None = None, **options: object) -> httpx.AsyncClient:
        app = Starlette(routes=routes(get_db or (lambda: database), authority, **options))  # type: ignore[arg-type]
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client()


_users = itertools.count(1)


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_users)}"


async def signup(client: httpx.AsyncClient, username: str | None = None, password: str = "correct horse") -> dict:
    """Sign up; the JSON answer (user, access_token...). The client's cookie jar is left empty."""
    response = await client.post("/api/auth/signup", json={"username": username or unique_name(), "password": password})
    assert response.status_code == 201, response.text
    client.cookies.clear()
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
