"""Stored history: every finished message goes to PostgreSQL off the audio path.

Sessions hand records to bounded queues and never wait on the database. A few writers store them, each
conversation always on the same writer, so its messages keep their order while different conversations
are written in parallel; while the database is away a writer retries (the same record, so order holds)
for up to `retry_for` seconds; a record finally given up is reported to its session, which tells the
client. Each record carries an idempotency key, so a retry after a lost reply stores it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from db import ConversationNotFound, Database, DatabaseError, DatabaseUnavailable

log = logging.getLogger("realtime.history")

LostCallback = Callable[["MessageRecord", str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    user_id: str
    conversation_id: str
    key: str  # unique per conversation: session id + item id
    role: str
    content: str
    reasoning: str = ""
    status: str = "completed"
    heard_text: str | None = None
    audio_ms: int | None = None
    timings: dict[str, Any] | None = None
    attachments: list[dict[str, Any]] | None = None  # metadata of what came with the message (no content)
    title: str | None = None  # used when this record creates the conversation
    truncation: bool = False  # an update of a stored assistant message's heard text, not a new message
    on_lost: LostCallback | None = field(default=None, compare=False)
    on_stored: Callable[[MessageRecord], None] | None = field(default=None, compare=False)


class HistoryWriter:
    def __init__(self, db: Database, *, max_queue: int = 10_000, retry_for: float = 30.0, writers: int = 4) -> None:
        self._db = db
        self._queues: list[asyncio.Queue[MessageRecord]] = [
            asyncio.Queue(maxsize=max(1, max_queue // writers)) for _ in range(writers)
        ]
        self._retry_for = retry_for
        self._tasks: list[asyncio.Task[None]] = []
        self._ensured: set[str] = set()
        self.stored = 0
        self.lost = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(q), name=f"history-writer-{i}") for i, q in enumerate(self._queues)]

    async def aclose(self, *, drain_timeout: float = 10.0) -> None:
        """Store what is queued (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                for queue in self._queues:
                    await queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, record: MessageRecord) -> bool:
        """Queue a record without waiting; False when the queue is full (the caller reports the loss)."""
        queue = self._queues[hash(record.conversation_id) % len(self._queues)]
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            self.lost += 1
            return False
        return True

    async def _run(self, queue: asyncio.Queue[MessageRecord]) -> None:
        while True:
            record = await queue.get()
            try:
                await self._store_with_retry(record)
            finally:
                queue.task_done()

    async def _store_with_retry(self, record: MessageRecord) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        delay = 0.1
        while True:
            try:
                await self._store(record)
                self.stored += 1
                if record.on_stored is not None:
                    record.on_stored(record)
                return
            except DatabaseUnavailable as exc:
                if loop.time() + delay > deadline:
                    await self._give_up(record, f"database unavailable: {exc}")
                    return
                log.info("database away, retrying %s in %.1fs", record.key, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except (ConversationNotFound, DatabaseError, ValueError) as exc:
                await self._give_up(record, repr(exc))
                return

    async def _store(self, record: MessageRecord) -> None:
        if record.truncation:
            await self._db.messages.set_heard(record.conversation_id, record.key, record.heard_text or "")
            return
        if record.conversation_id not in self._ensured:
            await self._db.conversations.ensure(record.user_id, record.conversation_id, record.title)
            self._ensured.add(record.conversation_id)
        await self._db.messages.append(
            record.conversation_id,
            key=record.key,
            role=record.role,
            content=record.content,
            reasoning=record.reasoning,
            status=record.status,
            heard_text=record.heard_text,
            audio_ms=record.audio_ms,
            attachments=record.attachments,
            timings=record.timings,
        )

    async def _give_up(self, record: MessageRecord, why: str) -> None:
        self.lost += 1
        log.error("history write lost: %s (%s)", record.key, why)
        if record.on_lost is not None:
            with contextlib.suppress(Exception):
                await record.on_lost(record, why)
