"""Voice in when audio comes faster than the VAD judges it: the session's messages are not held up by the
VAD, audio waits (bounded) for it, nothing is dropped, order is kept, and every task ends with the session."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, with_silence
from tests.support.talk import connect_voice, events_until, stream_audio

RATE = 16_000
TEXT = "Could you check whether my flight to London is on time?"


@pytest.fixture(scope="module")
def voice_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on", resume_grace="1")


async def _tasks(server: ServerProcess) -> float:
    return await server.metric("realtime_asyncio_tasks")


async def test_audio_sent_all_at_once_is_heard_in_full(voice_server: ServerProcess) -> None:
    """Seven seconds of audio sent as fast as the socket takes it: the turn is found, transcribed and
    answered as at real time, and a ping sent right after the audio is answered before the reply."""
    async with await connect_voice(voice_server, RATE, user="burst") as client:
        await stream_audio(client, with_silence(synthesize(TEXT, RATE), RATE), RATE, speed=1000)
        await client.send({"type": "ping", "ts": 7})
        events = [e for _, e in await events_until(client, "response.done")]
    kinds = [e["type"] for e in events]
    assert kinds.index("pong") < kinds.index("response.done")  # not queued behind the audio's turn
    turn = [k for k in kinds if k.startswith("input_audio_buffer.")]
    assert turn == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    completed = next(e for e in events if e["type"].endswith(".completed"))
    assert wer(TEXT, completed["transcript"]) <= 0.10, completed["transcript"]
    assert events[-1]["response"]["output_text"] == "You said: " + completed["transcript"]


async def test_clear_after_a_burst_comes_after_what_the_burst_said(voice_server: ServerProcess) -> None:
    """input_audio_buffer.clear sent right after a burst of speech (the turn still open) is handled after the
    VAD has heard the burst: speech_started first, then cleared, and the cleared turn is never committed."""
    speech = np.concatenate([np.zeros(RATE // 2, np.int16), synthesize(TEXT, RATE)])  # no pause at the end
    async with await connect_voice(voice_server, RATE, user="clearer") as client:
        await stream_audio(client, speech, RATE, speed=1000)
        await client.send({"type": "input_audio_buffer.clear"})
        events = [e["type"] for _, e in await events_until(client, "input_audio_buffer.cleared")]
        assert "input_audio_buffer.speech_started" in events
        await client.send({"type": "ping", "ts": 1})
        await asyncio.sleep(1.0)  # a committed turn would show within the silence window
        await client.send({"type": "ping", "ts": 2})
        after = []
        while not after or after[-1] != ("pong", 2):
            event = await client.recv()
            after.append((event["type"], event.get("ts")))
    assert not [k for k, _ in after if k.startswith(("input_audio_buffer.", "conversation.", "response."))], after


async def test_closing_mid_burst_leaves_no_task(voice_server: ServerProcess) -> None:
    """Sessions closed while audio still waits for the VAD (and the sender waits for room) end with all their
    tasks: the server's task count is back where it was, and the log has no error."""
    before = await _tasks(voice_server)
    noise = (np.random.default_rng(3).standard_normal(20 * RATE) * 300).astype(np.int16)
    for how in ("close", "abort"):
        client = await connect_voice(voice_server, RATE, user=f"leaver-{how}")
        sender = asyncio.create_task(stream_audio(client, noise, RATE, speed=1000))
        await asyncio.sleep(0.3)  # mid-burst
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if how == "close":
            await client.close()
        else:
            client.ws.transport.abort()
    deadline = time.monotonic() + 10
    while (now := await _tasks(voice_server)) != before:
        assert time.monotonic() < deadline, (before, now)
        await asyncio.sleep(0.1)
    log = voice_server.log_text()
    assert " ERROR " not in log and "Traceback" not in log


async def test_a_changed_audio_format_ends_the_old_listeners_tasks(voice_server: ServerProcess) -> None:
    """session.update of the audio format replaces the listener: the old one's VAD task ends with it (the
    session's task count is the same after three changes, each followed by audio)."""
    quiet = np.zeros(RATE, np.int16)
    async with await connect_voice(voice_server, RATE, user="switcher") as client:
        await stream_audio(client, quiet, RATE, speed=1000)
        await client.send({"type": "ping", "ts": 1})
        await events_until(client, "pong")
        first = await _tasks(voice_server)
        for rate in (24_000, 48_000, RATE):
            await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": rate}}})
            await events_until(client, "session.updated")
            await stream_audio(client, np.zeros(rate, np.int16), rate, speed=1000)
            await client.send({"type": "ping", "ts": rate})
            await events_until(client, "pong")
        assert await _tasks(voice_server) == first


async def _direct_appends(server: ServerProcess) -> float:
    return await server.metric("realtime_audio_messages_direct_total")


async def test_audio_at_real_time_is_taken_as_it_arrives(voice_server: ServerProcess) -> None:
    """A client streaming in real time has its appends taken as they come off the socket, not through the
    reader's queue (the counter of direct appends grows by about every message sent), and still heard."""
    speech = with_silence(synthesize(TEXT, RATE), RATE)
    messages = -(-len(speech) // (RATE // 50))  # 20 ms each
    before = await _direct_appends(voice_server)
    async with await connect_voice(voice_server, RATE, user="steady") as client:
        await stream_audio(client, speech, RATE)
        events = [e for _, e in await events_until(client, "response.done")]
    direct = await _direct_appends(voice_server) - before
    assert 0.9 * messages <= direct <= messages, (direct, messages)
    completed = next(e for e in events if e["type"].endswith(".completed"))
    assert wer(TEXT, completed["transcript"]) <= 0.10, completed["transcript"]


async def test_audio_right_after_an_update_is_heard_with_the_new_format(voice_server: ServerProcess) -> None:
    """session.update of the sample rate followed at once (no wait for session.updated) by speech at the new
    rate: no append overtakes the update, so the whole question is resampled from the new rate and heard."""
    rate = 48_000
    speech = with_silence(synthesize(TEXT, rate), rate)
    async with await connect_voice(voice_server, RATE, user="quick-switch") as client:
        await stream_audio(client, np.zeros(RATE // 2, np.int16), RATE)  # the direct path is in use
        await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": rate}}})
        await stream_audio(client, speech, rate, speed=1000)
        events = [e for _, e in await events_until(client, "response.done")]
    completed = next(e for e in events if e["type"].endswith(".completed"))
    assert wer(TEXT, completed["transcript"]) <= 0.10, completed["transcript"]
