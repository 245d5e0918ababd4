"""Two server processes behind nginx sharing one PostgreSQL: accounts, history and resume across nodes.

The proxy and its routing are bench/scale_out.py's (docs/scaling.md explains them): the `rt_node`
cookie pins a client to the node that answered it, the other node being its backup.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale_out import (
    Nginx,
    continue_conversation,
    conversation_id,
    drop,
    http,
    login,
    nginx_binary,
    open_session,
    resume_and_collect,
    session_on,
    signup,
    stored_messages,
    use_model,
)
from db import EmbeddedPostgres
from tests.conftest import ServerFactory, create_database
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess, free_port

NGINX = nginx_binary()
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (./dev test installs it: apt-get install nginx-light)"
)


@pytest.fixture(scope="module")
async def nodes(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> dict[str, ServerProcess]:
    url = await create_database(postgres)
    env = {"ollama_url": fake_ollama.url, "llm_model": "echo", "voice": "off", "tts_engine": "off"}
    return {name: server_factory(database_url=url, **env) for name in ("node_a", "node_b")}


@pytest.fixture(scope="module")
def proxy(nodes: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    assert NGINX is not None
    prefix: Path = tmp_path_factory.mktemp("nginx")
    proxy = Nginx(NGINX, free_port(), {name: node.port for name, node in nodes.items()}, prefix).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
async def account(proxy: Nginx) -> str:
    """A user signed up through node_a; the token node_b gave it at log-in."""
    await signup(proxy, "node_a", "spread")
    status, via, token = await login(proxy, "node_b", "spread")
    assert (status, via) == (200, "node_b") and token is not None
    return token


async def test_account_made_on_one_node_works_on_the_other(proxy: Nginx) -> None:
    """Sign up via node_a, log in and use the token via node_b; a ticket from node_a opens node_b's socket."""
    body, via = await signup(proxy, "node_a", "crossing")
    assert via == "node_a"
    status, via, token = await login(proxy, "node_b", "crossing")
    assert (status, via) == (200, "node_b")
    async with http(proxy, "node_b", body["access_token"]) as client:
        me = await client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == "crossing"
    async with http(proxy, "node_a", token) as client:
        ticket = (await client.post("/api/auth/ticket")).json()["ticket"]
    link = await open_session(proxy, None, node="node_b", query={"ticket": ticket})
    assert link.node == "node_b" and link.client.session["history_stored"] is True
    await link.client.close()


async def test_history_stored_via_one_node_continues_on_the_other(proxy: Nginx, account: str) -> None:
    """A conversation told to node_b is continued on node_a (the model sees it) and read back via either."""
    link = await open_session(proxy, account, node="node_b")
    assert (await link.client.ask("the secret word is papaya")).text == "You said: the secret word is papaya"
    cid = await conversation_id(link.client)
    await link.client.close()
    await stored_messages(proxy, "node_b", account, cid, 2)
    link = await open_session(proxy, account, node="node_a")
    assert link.node == "node_a"
    assert (await continue_conversation(link.client, cid))["conversation_id"] == cid
    await use_model(link.client, "recall")
    assert (await link.client.ask("what was it?")).text == "You heard: You said: the secret word is papaya"
    await link.client.close()
    for node in ("node_a", "node_b"):
        messages, via = await stored_messages(proxy, node, account, cid, 4)
        assert via == node and [m["seq"] for m in messages] == [1, 2, 3, 4]


@pytest.mark.parametrize("node", ["node_a", "node_b"])
async def test_resume_with_the_cookie_reaches_the_node_holding_the_session(
    proxy: Nginx, account: str, node: str
) -> None:
    """A new session is pinned by the proxy's cookie; its resume reaches that node and misses nothing."""
    link = await session_on(proxy, account, node)
    assert link.cookie_node == node
    await link.client.ask("hello")
    args = link.client.resume_args()
    drop(link)
    await asyncio.sleep(0.3)
    again, events = await resume_and_collect(proxy, account, args, link.cookie_node)
    assert again.node == node
    assert events[-1]["type"] == "session.resumed" and events[-1]["session"]["id"] == args[0]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(args[2] + 1, args[2] + 1 + len(seqs))), "an event was lost or repeated"
    await again.client.close()


async def test_resume_sent_to_the_other_node_is_refused(proxy: Nginx, account: str) -> None:
    """Without stickiness a resume can land on a node that never had the session: resume_failed, new session."""
    link = await session_on(proxy, account, "node_a")
    args = link.client.resume_args()
    drop(link)
    await asyncio.sleep(0.3)
    wrong, events = await resume_and_collect(proxy, account, args, "node_b")
    assert wrong.node == "node_b"
    assert [e["type"] for e in events] == ["error", "session.created"]
    assert events[0]["error"]["code"] == "resume_failed" and events[1]["session"]["id"] != args[0]
    await wrong.client.close()


async def test_node_death_moves_the_client_to_the_other_node_with_history_intact(
    proxy: Nginx, account: str, nodes: dict[str, ServerProcess]
) -> None:
    """node_a dies holding a dropped session: the pinned resume goes to node_b (resume_failed, a new
    session, the cookie re-pinned) and the stored conversation continues there. Runs last: it kills node_a."""
    link = await session_on(proxy, account, "node_a")
    await use_model(link.client, "echo")
    await link.client.ask("the colour is teal")
    cid = await conversation_id(link.client)
    await stored_messages(proxy, "node_b", account, cid, 2)
    args = link.client.resume_args()
    drop(link)
    nodes["node_a"].stop(signal.SIGKILL)
    again, events = await resume_and_collect(proxy, account, args, link.cookie_node)
    assert (again.node, again.cookie_node) == ("node_b", "node_b")
    assert [e["type"] for e in events] == ["error", "session.created"]
    assert events[0]["error"]["code"] == "resume_failed"
    await continue_conversation(again.client, cid)
    await use_model(again.client, "recall")
    assert (await again.client.ask("and the colour?")).text == "You heard: You said: the colour is teal"
    await again.client.close()
    messages, _ = await stored_messages(proxy, "node_b", account, cid, 4)
    assert [m["seq"] for m in messages] == [1, 2, 3, 4]
    fresh = await open_session(proxy, account)  # no cookie: the dead node is skipped
    assert fresh.node == "node_b"
    await fresh.client.close()
