"""`Database`: an asyncpg pool, the migrations, and the repositories over it.

Every wait is bounded: connecting (`connect_timeout`), getting a pooled connection (`acquire_timeout`),
and each statement (`command_timeout`). A lost server surfaces as DatabaseUnavailable; the pool drops
broken connections and opens new ones on the next acquire, so calls succeed again once it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from argon2 import PasswordHasher

from db.conversations import Conversations, Messages
from db.errors import DatabaseUnavailable
from db.migrate import MIGRATIONS_DIR, apply_migrations, load_migrations
from db.tickets import Tickets
from db.users import Users

log = logging.getLogger("db.pool")

# Errors that mean "the server is not there (now)", as opposed to a bad statement or a constraint.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, no socket file, reset
    TimeoutError,  # connect, acquire or statement timeout
    asyncpg.PostgresConnectionError,  # SQLSTATE 08: the link broke mid-statement
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.AdminShutdownError,  # terminated by a shutdown
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


async def _init_connection(con: asyncpg.Connection) -> None:
    """JSON columns as Python values on every new connection (the pool runs it after each reconnect too)."""
    await con.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """The pool and the repositories: `db.users`, `db.conversations`, `db.messages`, `db.tickets`."""

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float = 5.0, password_hasher: PasswordHasher | None = None
    ) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        self.closed = False
        self.users = Users(self, password_hasher)
        self.conversations = Conversations(self)
        self.messages = Messages(self)
        self.tickets = Tickets(self)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        command_timeout: float = 10.0,
        password_hasher: PasswordHasher | None = None,
    ) -> Database:
        """Open the pool (its first `min_size` connections too); DatabaseUnavailable if the server is not there."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
            )
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
        return cls(pool, acquire_timeout=acquire_timeout, password_hasher=password_hasher)

    async def close(self, grace_period: float = 10.0) -> None:
        """Close the pool, waiting for connections in use to come back; after `grace_period` s, cut them."""
        self.closed = True
        try:
            async with asyncio.timeout(grace_period):
                await self.pool.close()
        except TimeoutError:
            log.warning("database pool did not close in %.0f s; terminating its connections", grace_period)
            self.pool.terminate()

    async def migrate(
        self, directory: Path = MIGRATIONS_DIR, *, lock_timeout: float = 60.0, sql_timeout: float = 600.0
    ) -> list[str]:
        """Apply pending migrations (safe to run twice, and from two processes at once); the names applied."""
        migrations = load_migrations(directory)
        async with self.connection() as con:
            return await apply_migrations(con, migrations, lock_timeout=lock_timeout, sql_timeout=sql_timeout)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection-level failures inside the block become DatabaseUnavailable."""
        if self.closed:
            raise DatabaseUnavailable("the database pool is closed (shutting down)")
        con: asyncpg.Connection | None = None
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as con:
                yield con
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"database unavailable: {exc or type(exc).__name__}") from exc
        except asyncpg.InterfaceError as exc:
            if con is not None and con.is_closed():
                raise DatabaseUnavailable(f"database connection lost: {exc}") from exc
            raise

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction (committed when the block ends without an error)."""
        async with self.connection() as con, con.transaction(isolation=isolation, readonly=readonly):
            yield con
