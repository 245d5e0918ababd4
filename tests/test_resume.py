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
