"""The database restarted under a live pool: calls while it is down fail with DatabaseUnavailable (503
over HTTP), a statement in flight is cut with the same error, and calls afterwards succeed again."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from db import Database, DatabaseUnavailable, EmbeddedPostgres
from tests.db.conftest import bearer, signup


async def test_calls_fail_clearly_while_down_and_work_after(
    database: Database, postgres: EmbeddedPostgres, client: httpx.AsyncClient
) -> None:
    """Stopped server: repository calls raise DatabaseUnavailable and HTTP answers 503 with Retry-After;
    started again: the same pool serves calls."""
    created = await signup(client)
    auth = bearer(created["access_token"])
    user = await database.users.get(created["user"]["id"])
    assert user is not None

    await asyncio.to_thread(postgres.stop)
    try:
        with pytest.raises(DatabaseUnavailable):
            await database.users.get(user.id)
        with pytest.raises(DatabaseUnavailable):
            await database.conversations.create(user.id, "while down")
        response = await client.get("/api/auth/me", headers=auth)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "2"
    finally:
        await asyncio.to_thread(postgres.start)

    assert await database.users.get(user.id) == user
    conversation = await database.conversations.create(user.id, "after")
    assert await database.messages.append(conversation.id, key="k", role="user", content="back")
    assert (await client.get("/api/auth/me", headers=auth)).status_code == 200


async def test_statement_in_flight_during_restart(database: Database, postgres: EmbeddedPostgres) -> None:
    """A statement running when the server stops fails with DatabaseUnavailable, not a driver error."""
    started = asyncio.Event()

    async def long_query() -> None:
        async with database.connection() as con:
            started.set()
            await con.execute("SELECT pg_sleep(5)")

    query_task = asyncio.create_task(long_query(), name="long_query_task")
    await started.wait()
    await asyncio.sleep(0.1)
    await asyncio.to_thread(postgres.stop)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(5):
                await query_task
    finally:
        await asyncio.to_thread(postgres.start)
    async with database.connection() as con:
        assert await con.fetchval("SELECT 1") == 1


async def test_connect_to_a_stopped_server(db_url: str, postgres: EmbeddedPostgres) -> None:
    """Database.connect() against a stopped server raises DatabaseUnavailable promptly."""
    await asyncio.to_thread(postgres.stop)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(10):
                await Database.connect(db_url, connect_timeout=2)
    finally:
        await asyncio.to_thread(postgres.start)
