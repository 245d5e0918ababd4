"""Messages: a repeated idempotency key is stored exactly once (also when retried concurrently), and seq
runs 1..n without gaps in commit order under concurrent appends."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from db import Conversation, ConversationNotFound, Database


@pytest.fixture
async def conversation(database: Database) -> Conversation:
    user = await database.users.create(f"writer{uuid.uuid4().hex[:8]}", "password1")
    return await database.conversations.create(user.id, "messages")


async def test_repeated_key_is_stored_once(database: Database, conversation: Conversation) -> None:
    """A retried append with the same key returns False and changes nothing, whatever its content."""
    assert await database.messages.append(conversation.id, key="turn-1", role="user", content="hello")
    assert not await database.messages.append(conversation.id, key="turn-1", role="user", content="hello")
    assert not await database.messages.append(conversation.id, key="turn-1", role="assistant", content="other")
    assert await database.messages.append(conversation.id, key="turn-2", role="assistant", content="hi")
    messages = await database.messages.list(conversation.id)
    assert [(m.seq, m.key, m.content) for m in messages] == [(1, "turn-1", "hello"), (2, "turn-2", "hi")]


async def test_concurrent_retries_store_once(database: Database, conversation: Conversation) -> None:
    """Ten tasks appending the same key at once: exactly one stores it."""
    results = await asyncio.gather(
        *(database.messages.append(conversation.id, key="dup", role="user", content="x") for _ in range(10))
    )
    assert results.count(True) == 1
    assert [m.seq for m in await database.messages.list(conversation.id)] == [1]


async def test_concurrent_appends_get_gapless_ordered_seq(database: Database, conversation: Conversation) -> None:
    """Forty concurrent appends (with duplicates mixed in) get seq 1..n, one per key, and the count matches."""
    keys = [f"k{i}" for i in range(40)]
    jobs = [database.messages.append(conversation.id, key=k, role="user", content=k) for k in keys]
    jobs += [database.messages.append(conversation.id, key=k, role="user", content=k) for k in keys[::4]]
    results = await asyncio.gather(*jobs)
    assert results.count(True) == len(keys)
    messages = await database.messages.list(conversation.id)
    assert [m.seq for m in messages] == list(range(1, len(keys) + 1))
    assert sorted(m.key for m in messages) == sorted(keys)
    assert all(m.content == m.key for m in messages)
    got = await database.conversations.get(conversation.user_id, conversation.id)
    assert got is not None and got.message_count == len(keys) and len(got.messages) == len(keys)


async def test_same_key_in_two_conversations(database: Database, conversation: Conversation) -> None:
    """Keys are scoped to their conversation."""
    other = await database.conversations.create(conversation.user_id)
    assert await database.messages.append(conversation.id, key="shared", role="user", content="a")
    assert await database.messages.append(other.id, key="shared", role="user", content="b")


async def test_append_to_missing_conversation(database: Database) -> None:
    """Appending to a conversation that does not exist (or was deleted) raises ConversationNotFound."""
    with pytest.raises(ConversationNotFound):
        await database.messages.append(uuid.uuid4(), key="k", role="user", content="x")
    with pytest.raises(ConversationNotFound):
        await database.messages.append("nope", key="k", role="user", content="x")


@pytest.mark.parametrize(
    "bad",
    [{"role": "robot"}, {"status": "done"}, {"key": ""}, {"key": "k" * 201}, {"audio_ms": -1}],
)
async def test_append_rejects_bad_values(database: Database, conversation: Conversation, bad: dict) -> None:
    """Unknown roles or statuses, empty or huge keys and negative durations are ValueError, nothing stored."""
    fields = {"key": "k", "role": "user", "content": "x"} | bad
    with pytest.raises(ValueError):
        await database.messages.append(conversation.id, **fields)
    assert await database.messages.list(conversation.id) == []


async def test_every_status_round_trips(database: Database, conversation: Conversation) -> None:
    """Each status the schema allows is stored and read back."""
    from db import MESSAGE_STATUSES

    for status in MESSAGE_STATUSES:
        assert await database.messages.append(
            conversation.id, key=status, role="assistant", content=status, status=status
        )
    assert [m.status for m in await database.messages.list(conversation.id)] == list(MESSAGE_STATUSES)
