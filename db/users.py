"""Accounts: argon2id password hashes, case-insensitive unique usernames, soft delete.

Hashing is CPU- and memory-heavy on purpose (argon2-cffi's defaults: 64 MiB, 3 passes), so it runs in a
worker thread, at most `max_concurrent_hashes` at a time: a burst of log-ins queues instead of taking
every core and gigabytes of memory. An unknown username costs one verification against a dummy hash, so
its answer takes about as long as a wrong password's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from db.errors import UsernameTaken
from db.models import USER_ROLES, User

if TYPE_CHECKING:
    from db.pool import Database

log = logging.getLogger("db.users")

_COLUMNS = "id, username, role, created_at"


def as_uuid(value: UUID | str) -> UUID | None:
    """A UUID from a UUID or its string form; None for anything else (e.g. a foreign token subject)."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (TypeError, ValueError, AttributeError):
        return None


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], username=row["username"], role=row["role"], created_at=row["created_at"])


class Users:
    def __init__(self, db: Database, hasher: PasswordHasher | None = None, *, max_concurrent_hashes: int = 2) -> None:
        self._db = db
        self.hasher = hasher or PasswordHasher()
        self._hashing = asyncio.Semaphore(max_concurrent_hashes)
        self._dummy_hash: str | None = None

    async def create(self, username: str, password: str, role: str = "user") -> User:
        """A new account; UsernameTaken if a live account has this name in any letter case."""
        if role not in USER_ROLES:
            raise ValueError(f"role must be one of {USER_ROLES}")
        password_hash = await self._hash(password)
        try:
            async with self._db.connection() as con:
                row = await con.fetchrow(
                    f"INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
                    username,
                    password_hash,
                    role,
                )
        except asyncpg.UniqueViolationError as exc:
            raise UsernameTaken(username) from exc
        assert row is not None
        return _user(row)

    async def authenticate(self, username: str, password: str) -> User | None:
        """The account if the password is right, else None. Upgrades the stored hash when its parameters are old."""
        async with self._db.connection() as con:
            row = await con.fetchrow(
                f"SELECT {_COLUMNS}, password_hash FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL",
                username,
            )
        if row is None:
            await self._verify(await self._dummy(), password)
            return None
        stored: str = row["password_hash"]
        if not await self._verify(stored, password):
            return None
        if self.hasher.check_needs_rehash(stored):
            fresh = await self._hash(password)
            async with self._db.connection() as con:
                # compare-and-set: a concurrent password change wins over this upgrade
                await con.execute(
                    "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3", row["id"], fresh, stored
                )
            log.info("upgraded the password hash of user %s", row["id"])
        return _user(row)

    async def get(self, user_id: UUID | str) -> User | None:
        """The live account with this id; None for an unknown, deleted or malformed id."""
        uid = as_uuid(user_id)
        if uid is None:
            return None
        async with self._db.connection() as con:
            row = await con.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", uid)
        return None if row is None else _user(row)

    async def get_by_username(self, username: str) -> User | None:
        async with self._db.connection() as con:
            row = await con.fetchrow(
                f"SELECT {_COLUMNS} FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL", username
            )
        return None if row is None else _user(row)

    async def delete(self, user_id: UUID | str) -> bool:
        """Soft-delete the account (its tokens stop working; its name becomes free); False if already gone."""
        uid = as_uuid(user_id)
        if uid is None:
            return False
        async with self._db.transaction() as con:
            deleted = await con.fetchval(
                "UPDATE users SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING id", uid
            )
            if deleted is not None:
                await con.execute("DELETE FROM ws_tickets WHERE user_id = $1", uid)
        return deleted is not None

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._hashing:
            try:
                return await asyncio.to_thread(self.hasher.verify, stored, password)
            except VerificationError:
                return False
            except InvalidHashError:
                log.warning("a stored password hash cannot be read")
                return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hash("not a password: this account does not exist")
        return self._dummy_hash
