"""Conversations and their messages.

Every conversation query that takes a `user_id` filters on it in SQL: another user's conversation looks
exactly like a missing one (None / False), never "forbidden". `Messages` is the server's write path and
takes a conversation id only: the caller has already resolved the conversation for its user.

Appends to one conversation are serialised on its row (SELECT ... FOR UPDATE), so `seq` runs 1, 2, 3...
with no gaps in the order the appends committed, and a retried append (same key) is stored exactly once.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from db.errors import ConversationNotFound
from db.models import MESSAGE_ROLES, MESSAGE_STATUSES, Conversation, ConversationPage, Message
from db.users import as_uuid

if TYPE_CHECKING:
    from db.pool import Database

MAX_PAGE = 100
MAX_TITLE_CHARS = 200
_COLUMNS = "id, user_id, title, created_at, updated_at, next_seq - 1 AS message_count"
_MESSAGE_COLUMNS = (
    "conversation_id, seq, idempotency_key, role, content, reasoning, status, heard_text, audio_ms, "
    "attachments, timings, created_at"
)


def _conversation(row: asyncpg.Record, messages: tuple[Message, ...] = ()) -> Conversation:
    return Conversation(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
        messages=messages,
    )


def _message(row: asyncpg.Record) -> Message:
    return Message(
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        key=row["idempotency_key"],
        role=row["role"],
        content=row["content"],
        reasoning=row["reasoning"],
        status=row["status"],
        heard_text=row["heard_text"],
        audio_ms=row["audio_ms"],
        attachments=row["attachments"],
        timings=row["timings"],
        created_at=row["created_at"],
    )


def encode_cursor(conversation: Conversation) -> str:
    """An opaque position after `conversation` in a newest-first list."""
    raw = f"{conversation.updated_at.isoformat()}|{conversation.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (updated_at, id) a cursor stands for; ValueError for anything encode_cursor did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        when = datetime.fromisoformat(stamp)
        uid = UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid cursor") from exc
    if when.tzinfo is None:
        raise ValueError("invalid cursor")
    return when, uid


def _check_title(title: str | None) -> None:
    if title is not None and len(title) > MAX_TITLE_CHARS:
        raise ValueError(f"a title has at most {MAX_TITLE_CHARS} characters")


class Conversations:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user_id: UUID | str, title: str | None = None) -> Conversation:
        _check_title(title)
        uid = as_uuid(user_id)
        if uid is None:
            raise ValueError("user_id is not a UUID")
        async with self._db.connection() as con:
            row = await con.fetchrow(
                f"INSERT INTO conversations (user_id, title) VALUES ($1, $2) RETURNING {_COLUMNS}", uid, title
            )
        assert row is not None
        return _conversation(row)

    async def ensure(self, user_id: UUID | str, conversation_id: UUID | str, title: str | None = None) -> None:
        """Create the conversation with this id if it does not exist yet (a session names its conversation
        before the first write, so no round trip is on the turn's path); another user's id is refused."""
        _check_title(title)
        uid, cid = as_uuid(user_id), as_uuid(conversation_id)
        if uid is None or cid is None:
            raise ValueError("user_id and conversation_id must be UUIDs")
        async with self._db.connection() as con:
            owner = await con.fetchval(
                "INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3) "
                "ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id RETURNING user_id",
                cid,
                uid,
                title,
            )
        if owner != uid:
            raise ConversationNotFound(str(cid))

    async def list(self, user_id: UUID | str, *, limit: int = 20, before: str | None = None) -> ConversationPage:
        """The user's conversations, most recently updated first; `before` is a previous page's next_cursor."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        uid = as_uuid(user_id)
        if uid is None:
            return ConversationPage((), None)
        async with self._db.connection() as con:
            if before is None:
                rows = await con.fetch(
                    f"SELECT {_COLUMNS} FROM conversations WHERE user_id = $1 "
                    "ORDER BY updated_at DESC, id DESC LIMIT $2",
                    uid,
                    limit + 1,
                )
            else:
                when, after_id = decode_cursor(before)
                rows = await con.fetch(
                    f"SELECT {_COLUMNS} FROM conversations WHERE user_id = $1 AND (updated_at, id) < ($2, $3) "
                    "ORDER BY updated_at DESC, id DESC LIMIT $4",
                    uid,
                    when,
                    after_id,
                    limit + 1,
                )
        items = tuple(_conversation(r) for r in rows[:limit])
        return ConversationPage(items, encode_cursor(items[-1]) if len(rows) > limit else None)

    async def get(self, user_id: UUID | str, conversation_id: UUID | str) -> Conversation | None:
        """The user's conversation with its messages in order; None if missing or another user's."""
        uid, cid = as_uuid(user_id), as_uuid(conversation_id)
        if uid is None or cid is None:
            return None
        # one snapshot for both reads, so message_count matches the messages returned
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as con:
            row = await con.fetchrow(f"SELECT {_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2", cid, uid)
            if row is None:
                return None
            rows = await con.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
            )
        return _conversation(row, tuple(_message(r) for r in rows))

    async def rename(self, user_id: UUID | str, conversation_id: UUID | str, title: str | None) -> Conversation | None:
        """Set the title (None clears it); the updated conversation, or None if missing or another user's."""
        _check_title(title)
        uid, cid = as_uuid(user_id), as_uuid(conversation_id)
        if uid is None or cid is None:
            return None
        async with self._db.connection() as con:
            row = await con.fetchrow(
                f"UPDATE conversations SET title = $3 WHERE id = $1 AND user_id = $2 RETURNING {_COLUMNS}",
                cid,
                uid,
                title,
            )
        return None if row is None else _conversation(row)

    async def delete(self, user_id: UUID | str, conversation_id: UUID | str) -> bool:
        """Delete the conversation and its messages; False if missing or another user's."""
        uid, cid = as_uuid(user_id), as_uuid(conversation_id)
        if uid is None or cid is None:
            return False
        async with self._db.connection() as con:
            deleted = await con.fetchval(
                "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id", cid, uid
            )
        return deleted is not None


class Messages:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self,
        conversation_id: UUID | str,
        *,
        key: str,
        role: str,
        content: str,
        reasoning: str = "",
        status: str = "completed",
        heard_text: str | None = None,
        audio_ms: int | None = None,
        attachments: list[Any] | None = None,
        timings: dict[str, Any] | None = None,
    ) -> bool:
        """Store a message at the end of the conversation: True if stored, False if `key` was stored before.

        ConversationNotFound if the conversation does not exist (or was deleted meanwhile).
        """
        if role not in MESSAGE_ROLES:
            raise ValueError(f"role must be one of {MESSAGE_ROLES}")
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"status must be one of {MESSAGE_STATUSES}")
        if not key or len(key) > 200:
            raise ValueError("key must have 1 to 200 characters")
        if audio_ms is not None and audio_ms < 0:
            raise ValueError("audio_ms must be >= 0")
        cid = as_uuid(conversation_id)
        if cid is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        async with self._db.transaction() as con:
            # The row lock orders concurrent appends; the key check then sees any append that committed first.
            seq = await con.fetchval("SELECT next_seq FROM conversations WHERE id = $1 FOR UPDATE", cid)
            if seq is None:
                raise ConversationNotFound(f"no conversation {cid}")
            stored = await con.fetchval(
                "INSERT INTO messages (conversation_id, seq, idempotency_key, role, content, reasoning, status, "
                "heard_text, audio_ms, attachments, timings) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                "ON CONFLICT (conversation_id, idempotency_key) DO NOTHING RETURNING seq",
                cid,
                seq,
                key,
                role,
                content,
                reasoning,
                status,
                heard_text,
                audio_ms,
                attachments if attachments is not None else [],
                timings if timings is not None else {},
            )
            if stored is None:
                return False
            # clock_timestamp(), not now(): appends commit in lock order, and updated_at must not go backwards
            await con.execute(
                "UPDATE conversations SET next_seq = $2 + 1, updated_at = greatest(updated_at, clock_timestamp()) "
                "WHERE id = $1",
                cid,
                seq,
            )
        return True

    async def set_heard(self, conversation_id: UUID | str, key: str, heard_text: str) -> bool:
        """After the fact, what the listener heard of a stored assistant message (a client's truncate)."""
        cid = as_uuid(conversation_id)
        if cid is None:
            return False
        async with self._db.connection() as con:
            updated = await con.fetchval(
                "UPDATE messages SET heard_text = $3, status = 'truncated' "
                "WHERE conversation_id = $1 AND idempotency_key = $2 AND role = 'assistant' RETURNING seq",
                cid,
                key,
                heard_text,
            )
        return updated is not None

    async def list(self, conversation_id: UUID | str) -> list[Message]:
        """The conversation's messages in seq order (empty for an unknown conversation)."""
        cid = as_uuid(conversation_id)
        if cid is None:
            return []
        async with self._db.connection() as con:
            rows = await con.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
            )
        return [_message(r) for r in rows]
