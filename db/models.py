"""The rows the repositories return, as small frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

USER_ROLES = ("user", "admin")
MESSAGE_ROLES = ("user", "assistant", "system")
# completed: the whole answer. cancelled: the client cancelled it. interrupted: barge-in cut it off.
# incomplete: it hit a limit (output tokens, length). failed: the upstream failed. truncated: the text was
# generated but only `heard_text` was played before the user spoke over it.
MESSAGE_STATUSES = ("completed", "cancelled", "interrupted", "incomplete", "failed", "truncated")


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    username: str
    role: str
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Message:
    conversation_id: UUID
    seq: int  # 1, 2, 3... in the order the messages were stored
    key: str  # the idempotency key the writer chose
    role: str
    content: str
    reasoning: str
    status: str
    heard_text: str | None  # for a truncated answer: the part the user heard
    audio_ms: int | None
    attachments: list[Any]
    timings: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation. `messages` is filled by Conversations.get() only; lists leave it empty."""

    id: UUID
    user_id: UUID
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    messages: tuple[Message, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of a user's conversations, newest first; pass `next_cursor` as `before` for the next."""

    items: tuple[Conversation, ...]
    next_cursor: str | None
