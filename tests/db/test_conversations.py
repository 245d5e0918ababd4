"""Conversations over HTTP: create, list (newest first, paginated), get with messages, rename, delete;
another user's conversation behaves exactly like a missing one."""

from __future__ import annotations

import uuid

import httpx
import pytest

from db import Database
from tests.db.conftest import bearer, signup


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer((await signup(client))["access_token"])


async def _create(client: httpx.AsyncClient, auth: dict[str, str], title: str | None = None) -> dict:
    response = await client.post("/api/conversations", json={"title": title}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()


async def test_crud(client: httpx.AsyncClient, alice: dict[str, str], database: Database) -> None:
    """Create, read with messages in order, rename, clear the title, delete (messages go with it)."""
    created = await _create(client, alice, "  First chat  ")
    assert created["title"] == "First chat" and created["messages"] == [] and created["message_count"] == 0
    cid = created["id"]
    await database.messages.append(cid, key="m1", role="user", content="hello")
    await database.messages.append(
        cid,
        key="m2",
        role="assistant",
        content="hi there, how",
        status="truncated",
        heard_text="hi there",
        audio_ms=900,
        reasoning="greet",
        timings={"ttfa_ms": 420},
        attachments=[{"kind": "image", "bytes": 10}],
    )

    got = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()
    assert got["message_count"] == 2
    assert [(m["seq"], m["role"], m["content"]) for m in got["messages"]] == [
        (1, "user", "hello"),
        (2, "assistant", "hi there, how"),
    ]
    second = got["messages"][1]
    assert second["status"] == "truncated" and second["heard_text"] == "hi there" and second["audio_ms"] == 900
    assert second["timings"] == {"ttfa_ms": 420} and second["attachments"] == [{"kind": "image", "bytes": 10}]
    assert got["updated_at"] > created["updated_at"]

    renamed = await client.patch(f"/api/conversations/{cid}", json={"title": "Renamed"}, headers=alice)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"
    cleared = await client.patch(f"/api/conversations/{cid}", json={"title": None}, headers=alice)
    assert cleared.json()["title"] is None

    assert (await client.delete(f"/api/conversations/{cid}", headers=alice)).status_code == 204
    assert (await client.get(f"/api/conversations/{cid}", headers=alice)).status_code == 404
    assert (await client.delete(f"/api/conversations/{cid}", headers=alice)).status_code == 404
    assert await database.messages.list(cid) == []


async def test_list_newest_first_with_pages(
    client: httpx.AsyncClient, alice: dict[str, str], database: Database
) -> None:
    """The list is most-recently-updated first; pages chain through next_cursor without gaps or repeats."""
    ids = [(await _create(client, alice, f"c{i}"))["id"] for i in range(7)]
    await database.messages.append(ids[2], key="bump", role="user", content="makes c2 the newest")
    expected = [ids[2], *reversed([i for i in ids if i != ids[2]])]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3"} | ({"before": cursor} if cursor else {})
        page = (await client.get("/api/conversations", params=params, headers=alice)).json()
        seen += [c["id"] for c in page["conversations"]]
        assert all("messages" not in c for c in page["conversations"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    everything = (await client.get("/api/conversations", headers=alice)).json()
    assert [c["id"] for c in everything["conversations"]] == expected and everything["next_cursor"] is None


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"before": "not-a-cursor"}])
async def test_list_bad_parameters(client: httpx.AsyncClient, alice: dict[str, str], params: dict) -> None:
    """A limit outside 1-100 or a cursor the server did not make is 400."""
    assert (await client.get("/api/conversations", params=params, headers=alice)).status_code == 400


async def test_users_are_isolated(client: httpx.AsyncClient) -> None:
    """Bob cannot list, read, rename or delete Alice's conversation: 404, and it is unchanged."""
    alice = bearer((await signup(client))["access_token"])
    bob = bearer((await signup(client))["access_token"])
    theirs = await _create(client, alice, "private")
    cid = theirs["id"]

    assert (await client.get("/api/conversations", headers=bob)).json()["conversations"] == []
    assert (await client.get(f"/api/conversations/{cid}", headers=bob)).status_code == 404
    assert (await client.patch(f"/api/conversations/{cid}", json={"title": "mine"}, headers=bob)).status_code == 404
    assert (await client.delete(f"/api/conversations/{cid}", headers=bob)).status_code == 404

    still = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()
    assert still["title"] == "private"
    missing = await client.get(f"/api/conversations/{uuid.uuid4()}", headers=bob)
    other = await client.get(f"/api/conversations/{cid}", headers=bob)
    assert missing.json() == other.json()  # nothing tells "someone else's" from "none"


async def test_repository_isolation(database: Database) -> None:
    """The repository itself filters on the user: get/rename/delete of another's conversation do nothing."""
    owner = await database.users.create("owner_repo", "password1")
    other = await database.users.create("other_repo", "password1")
    conversation = await database.conversations.create(owner.id, "mine")
    assert await database.conversations.get(other.id, conversation.id) is None
    assert await database.conversations.rename(other.id, conversation.id, "stolen") is None
    assert not await database.conversations.delete(other.id, conversation.id)
    assert (await database.conversations.list(other.id)).items == ()
    kept = await database.conversations.get(owner.id, conversation.id)
    assert kept is not None and kept.title == "mine"


@pytest.mark.parametrize("bad", ["not-a-uuid", "1", "%20"])
async def test_malformed_ids_are_404(client: httpx.AsyncClient, alice: dict[str, str], bad: str) -> None:
    """A path id that is not a UUID is simply not found."""
    assert (await client.get(f"/api/conversations/{bad}", headers=alice)).status_code == 404


async def test_title_rules(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    """Titles are strings of at most 200 characters (or null); rename needs the field."""
    cid = (await _create(client, alice))["id"]
    too_long = await client.patch(f"/api/conversations/{cid}", json={"title": "x" * 201}, headers=alice)
    assert too_long.status_code == 400
    wrong_type = await client.patch(f"/api/conversations/{cid}", json={"title": 5}, headers=alice)
    assert wrong_type.status_code == 400
    missing = await client.patch(f"/api/conversations/{cid}", json={}, headers=alice)
    assert missing.status_code == 400


async def test_conversation_routes_need_a_token(client: httpx.AsyncClient) -> None:
    """Every conversation route is 401 without a token."""
    cid = uuid.uuid4()
    for method, path in [
        ("GET", "/api/conversations"),
        ("POST", "/api/conversations"),
        ("GET", f"/api/conversations/{cid}"),
        ("PATCH", f"/api/conversations/{cid}"),
        ("DELETE", f"/api/conversations/{cid}"),
    ]:
        response = await client.request(method, path, json={})
        assert response.status_code == 401, (method, path)
