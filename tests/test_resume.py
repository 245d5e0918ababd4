"""Session resume: a dropped link keeps the session; the client comes back and misses nothing."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.client import RealtimeClient
from realtime.protocol.codec import Encoding, encode_frame
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess

KEPT = "realtime_replay_buffer_events"  # the /metrics gauge of events kept for resume, all sessions
ITEM = {"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "input_text", "text": "go"}]}}


@pytest.fixture(scope="module")
def resumable(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="story", voice="off", resume_grace="5")


def _drop(client: RealtimeClient) -> None:
    """Lose the link the way a train tunnel does: no close frame, the TCP connection just ends."""
    client.ws.transport.abort()


async def _text_until_done(client: RealtimeClient, events: list[dict]) -> str:
    while True:
        event = await client.recv()
        events.append(event)
        if event["type"] == "response.done":
            return event["response"]["output_text"]


async def _drop_mid_reply(
    server: ServerProcess, token: str, *, deltas: int, encoding: Encoding = Encoding.MSGPACK
) -> tuple[list[dict], tuple[str, str, int]]:
    """Start the story reply, read until `deltas` text deltas have come, then lose the link: what was seen,
    and the resume arguments as of then."""
    client = await RealtimeClient.connect(server.ws_url, token, encoding=encoding)
    await client.send(ITEM)
    await client.send({"type": "response.create"})
    seen: list[dict] = []
    while len([e for e in seen if e["type"] == "response.text.delta"]) < deltas:
        seen.append(await client.recv())
    args = client.resume_args()
    _drop(client)
    return seen, args


def _assert_consecutive(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event was lost or repeated"


async def test_drop_mid_reply_and_resume(resumable: ServerProcess) -> None:
    """Drop the link mid-reply, come back: the missed events arrive in order, then the rest; nothing twice."""
    token = resumable.token("rita")
    seen, args = await _drop_mid_reply(resumable, token, deltas=10)
    await asyncio.sleep(0.5)  # the reply goes on while nobody listens
    again = await RealtimeClient.connect(resumable.ws_url, token, resume=args)
    full = await _text_until_done(again, seen)
    _assert_consecutive(seen)
    resumed = next(e for e in seen if e["type"] == "session.resumed")
    assert resumed["replayed_after"] == args[2] and resumed["session"]["id"] == args[0]
    text = "".join(e["delta"] for e in seen if e["type"] == "response.text.delta")
    assert text == full and full.startswith("Once upon a time")
    # the session is the same one: it still answers, and remembers
    await again.send({"type": "session.update", "session": {"model": "recall"}})
    await again.recv_until("session.updated")
    assert (await again.ask("and?")).text == "You heard: " + full
    await again.close()


async def test_resume_in_the_other_encoding_replays_the_same_events(resumable: ServerProcess) -> None:
    """A msgpack link drops mid-reply and the session is resumed over JSON (and the other way round): the
    missed events come in the new link's encoding, in order, none lost, none twice."""
    for first, then in ((Encoding.MSGPACK, Encoding.JSON), (Encoding.JSON, Encoding.MSGPACK)):
        token = resumable.token(f"erin-{first.value}")
        seen, args = await _drop_mid_reply(resumable, token, deltas=5, encoding=first)
        await asyncio.sleep(0.5)
        again = await RealtimeClient.connect(resumable.ws_url, token, encoding=then, resume=args)
        full = await _text_until_done(again, seen)
        _assert_consecutive(seen)
        assert [e["event_id"] for e in seen] == [f"evt_{e['seq']}" for e in seen]
        assert "".join(e["delta"] for e in seen if e["type"] == "response.text.delta") == full
        await again.close()


@pytest.fixture(scope="module")
def small_replay(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(
        ollama_url=fake_ollama.url, llm_model="story", voice="off", resume_grace="5", replay_buffer_bytes="4000"
    )


async def test_resume_needing_more_than_the_replay_bytes_is_refused(small_replay: ServerProcess) -> None:
    """The replay buffer is bounded by its frames' bytes: a client that missed more than 4 000 bytes of
    events cannot resume (resume_failed, a fresh session); one that missed less resumes with all of them."""
    token = small_replay.token("fay")
    seen, args = await _drop_mid_reply(small_replay, token, deltas=1)
    await asyncio.sleep(0.1)
    near = await RealtimeClient.connect(small_replay.ws_url, token, resume=args)  # missed little so far
    await _text_until_done(near, seen)
    _assert_consecutive(seen)
    missed = sum(len(encode_frame(e, Encoding.MSGPACK)) for e in seen if e["seq"] > args[2])
    assert missed > 4_000  # what a resume from `args` would need now
    _drop(near)
    await asyncio.sleep(0.1)
    late = await RealtimeClient.connect(small_replay.ws_url, token, resume=args)  # from before the reply
    first, second = await late.recv(), await late.recv()
    assert first["type"] == "error" and first["error"]["code"] == "resume_failed"
    assert second["type"] == "session.created" and second["session"]["id"] != args[0]
    await late.close()


@pytest.mark.parametrize("how", ["another user", "wrong secret", "unknown session", "future seq"])
async def test_resume_refused_gives_a_fresh_session(resumable: ServerProcess, how: str) -> None:
    """A resume that cannot be honoured gets resume_failed and a fresh session, never someone else's."""
    owner = await RealtimeClient.connect(resumable.ws_url, resumable.token("olga"))
    session_id, secret, last_seq = owner.resume_args()
    _drop(owner)
    token = resumable.token("olga")
    if how == "another user":
        token = resumable.token("mallory")
    elif how == "wrong secret":
        secret = "x" * len(secret)
    elif how == "unknown session":
        session_id = "sess_0000000000000000"
    else:
        last_seq = 10_000
    client = await RealtimeClient.connect(resumable.ws_url, token, resume=(session_id, secret, last_seq))
    first, second = await client.recv(), await client.recv()
    assert first["type"] == "error" and first["error"]["code"] == "resume_failed"
    assert second["type"] == "session.created" and second["session"]["id"] != session_id
    await client.close()


async def test_resume_window_expires(resumable: ServerProcess) -> None:
    """After resume_grace the dropped session is gone: resume_failed."""
    token = resumable.token("tess")
    client = await RealtimeClient.connect(resumable.ws_url, token)
    args = client.resume_args()
    _drop(client)
    await asyncio.sleep(6)
    late = await RealtimeClient.connect(resumable.ws_url, token, resume=args)
    assert (await late.recv())["error"]["code"] == "resume_failed"
    await late.close()


async def test_clean_close_ends_the_session(resumable: ServerProcess) -> None:
    """A client that closes properly has ended its session: it cannot be resumed."""
    token = resumable.token("carl")
    client = await RealtimeClient.connect(resumable.ws_url, token)
    args = client.resume_args()
    await client.close()
    await asyncio.sleep(0.2)
    again = await RealtimeClient.connect(resumable.ws_url, token, resume=args)
    assert (await again.recv())["error"]["code"] == "resume_failed"
    await again.close()


async def test_resume_while_the_old_link_still_looks_alive(resumable: ServerProcess) -> None:
    """Resuming before the server noticed the old link died takes the session over; the old link gets 4002."""
    token = resumable.token("dina")
    old = await RealtimeClient.connect(resumable.ws_url, token)
    args = old.resume_args()
    new = await RealtimeClient.connect(resumable.ws_url, token, resume=args)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await old.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
    resumed = await new.recv_until("session.resumed")
    assert resumed[-1]["session"]["id"] == args[0]
    await new.close()


@pytest.fixture(scope="module")
def pinging(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    """Pings every 0.2 s, so that answered pings release the replay buffer within a test."""
    return server_factory(
        ollama_url=fake_ollama.url, llm_model="story", voice="off", resume_grace="5", ping_interval="0.2"
    )


async def _ends_empty(server: ServerProcess) -> float:
    """The replay gauge once nothing is kept (its session ended), or after 5 s: its last value."""
    for _ in range(50):
        if (kept := await server.metric(KEPT)) == 0:
            break
        await asyncio.sleep(0.1)
    return kept


async def _least_kept_while_talking(server: ServerProcess, client: RealtimeClient, rounds: int = 20) -> float:
    """The least the replay gauge showed over `rounds` ping round trips of a client answering server pings
    as they come (each `recv` answers them)."""
    least = float("inf")
    for i in range(rounds):
        await asyncio.sleep(0.05)
        await client.send({"type": "ping", "ts": 1000 + i})
        await client.recv_until("pong")
        least = min(least, await server.metric(KEPT))
    return least


async def _ping_pong(client: RealtimeClient, count: int) -> None:
    """`count` client pings and their pongs: that many events the server must keep for a resume."""
    for i in range(count):
        await client.send({"type": "ping", "ts": i})
    for _ in range(count):
        await client.recv_until("pong")


async def test_answered_pings_release_what_the_client_has_received(pinging: ServerProcess) -> None:
    """A pong to a server ping proves the client has every event up to it, so the server stops keeping them:
    a client that answers pings costs about one ping interval of replay, one that does not keeps everything.
    A resume after the release still gets every event after its last_seq; one asking for events the client
    already acknowledged is refused."""
    token = pinging.token("pia")
    mute = await RealtimeClient.connect(pinging.ws_url, token, auto_pong=False)
    await _ping_pong(mute, 60)
    await asyncio.sleep(0.6)  # three server pings, unanswered
    assert await pinging.metric(KEPT) >= 60 + 1  # session.created, the pongs, the pings: all kept
    await mute.close()
    assert await _ends_empty(pinging) == 0  # its session ended with the close

    client = await RealtimeClient.connect(pinging.ws_url, token)
    first_seq = client.last_seq
    await _ping_pong(client, 60)
    # server pings come, and are answered: only what came after the last answered ping is kept
    assert await _least_kept_while_talking(pinging, client) <= 3
    assert client.last_seq > first_seq + 60

    args = client.resume_args()
    _drop(client)
    await asyncio.sleep(0.3)  # a ping or two is sent while nobody listens
    again = await RealtimeClient.connect(pinging.ws_url, token, resume=args)
    seen = await again.recv_until("session.resumed")
    _assert_consecutive([{"seq": args[2]}, *seen[:-1]])
    assert seen[-1]["replayed_after"] == args[2]
    assert (await again.ask("and?")).text.startswith("Once upon a time")
    stale = (args[0], args[1], first_seq)  # before pings it answered: released
    _drop(again)
    refused = await RealtimeClient.connect(pinging.ws_url, token, resume=stale)
    first, second = await refused.recv(), await refused.recv()
    assert first["type"] == "error" and first["error"]["code"] == "resume_failed"
    assert second["type"] == "session.created" and second["session"]["id"] != args[0]
    await refused.close()
