"""Voice in over the real server: real Silero VAD and Whisper on synthesized speech, partials and finals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import httpx
import numpy as np
import pytest

from realtime.client import RealtimeClient
from realtime.protocol.codec import Encoding
from realtime.stages.niceness import thread_name, thread_nice, thread_sched_idle
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, white_noise, with_silence
from tests.support.talk import connect_voice, events_until, stream_audio

SENTENCES = [
    "Please book a table for four people at the Italian restaurant tonight.",
    "The library closes at six o'clock on Saturdays.",
    "Could you check whether my flight to London is on time?",
]


@pytest.fixture(scope="module")
def voice_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    """The server with real VAD and Whisper; the LLM echoes, so a reply shows what reached it."""
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on")


@pytest.mark.parametrize("rate", [24_000, 16_000, 48_000])
async def test_spoken_turn_at_real_time(voice_server: ServerProcess, rate: int) -> None:
    """Speech at real-time pace: partials while speaking, a final close to the words, then the reply."""
    text = SENTENCES[0]
    speech = synthesize(text, rate)
    async with await connect_voice(voice_server, rate) as client:
        t0 = time.monotonic()
        sender = asyncio.create_task(stream_audio(client, with_silence(speech, rate), rate))
        events = await events_until(client, "response.done")
        await sender
    speech_end = t0 + 0.5 + len(speech) / rate
    kinds = [e["type"] for _, e in events]
    assert kinds[0] == "input_audio_buffer.speech_started"
    partials = [(t, e) for t, e in events if e["type"].endswith(".partial") and (e["stable"] + e["unstable"]).strip()]
    assert partials and partials[0][0] < speech_end, "no partial transcript before the speech ended"
    stables = [e["stable"] for _, e in partials]
    assert all(b.startswith(a) for a, b in zip(stables, stables[1:], strict=False)), "a stable word was retracted"
    completed = next(e for _, e in events if e["type"].endswith(".completed"))
    assert wer(text, completed["transcript"]) <= 0.10, completed["transcript"]
    assert completed["transcript"].startswith(stables[-1].strip())
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["output_text"] == "You said: " + completed["transcript"]
    stopped = next(e for _, e in events if e["type"] == "input_audio_buffer.speech_stopped")
    started = events[0][1]
    assert abs(started["audio_start_ms"] - 500) < 400
    assert abs(stopped["audio_end_ms"] - (500 + len(speech) * 1000 // rate)) < 500


async def test_faster_than_real_time(voice_server: ServerProcess) -> None:
    """Audio sent 4x faster than real time is transcribed as well (the buffer, not the clock, drives it)."""
    text = SENTENCES[1]
    async with await connect_voice(voice_server, 16_000) as client:
        sender = asyncio.create_task(
            stream_audio(client, with_silence(synthesize(text, 16_000), 16_000), 16_000, speed=4)
        )
        events = await events_until(client, "response.done")
        await sender
    completed = next(e for _, e in events if e["type"].endswith(".completed"))
    assert wer(text, completed["transcript"]) <= 0.10, completed["transcript"]


@pytest.mark.parametrize("kind", ["silence", "noise"])
async def test_silence_and_noise_give_no_transcript(voice_server: ServerProcess, kind: str) -> None:
    """Four seconds of silence or white noise produce no transcript, no user item and no reply."""
    rate = 16_000
    audio = np.zeros(4 * rate, np.int16) if kind == "silence" else white_noise(4, rate)
    async with await connect_voice(voice_server, rate) as client:
        # then a second of silence, so a turn the noise might have started would end and be committed
        await stream_audio(client, np.concatenate([audio, np.zeros(rate, np.int16)]), rate, speed=2)
        # the VAD judges audio in its own task (a ping is answered before that): wait until 3 s pass quietly
        events = []
        while True:
            try:
                async with asyncio.timeout(3.0):
                    events.append(await client.recv())
            except TimeoutError:
                break
    assert not [e for e in events if e["type"] == "input_audio_buffer.speech_started"], events
    texts = [e for e in events if "transcription" in e["type"] and (e.get("transcript") or e.get("text"))]
    assert not texts, texts
    assert not [e for e in events if e["type"] in ("conversation.item.created", "response.created")]


async def test_two_talkers_get_only_their_own_words(voice_server: ServerProcess) -> None:
    """Two sessions speaking at once each get their own transcript and reply."""
    rate = 16_000

    async def talk(text: str, user: str) -> str:
        async with await connect_voice(voice_server, rate, user=user) as client:
            sender = asyncio.create_task(stream_audio(client, with_silence(synthesize(text, rate), rate), rate))
            events = await events_until(client, "response.done")
            await sender
        return next(e for _, e in events if e["type"].endswith(".completed"))["transcript"]

    first, second = await asyncio.gather(talk(SENTENCES[1], "ann"), talk(SENTENCES[2], "ben"))
    assert wer(SENTENCES[1], first) <= 0.10, first
    assert wer(SENTENCES[2], second) <= 0.10, second


async def test_manual_mode_commit_and_clear(voice_server: ServerProcess) -> None:
    """With turn detection off the client commits: a transcript and a user item, and no automatic reply."""
    rate = 24_000
    text = SENTENCES[2]
    async with await connect_voice(voice_server, rate, turn_detection=None) as client:
        await stream_audio(client, np.zeros(rate // 2, np.int16), rate, speed=10)
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await events_until(client, "input_audio_buffer.cleared"))[-1][1]["type"].endswith("cleared")
        await stream_audio(client, synthesize(text, rate), rate, speed=4)
        await client.send({"type": "input_audio_buffer.commit"})
        events = await events_until(client, "conversation.item.created")
        completed = next(e for _, e in events if e["type"].endswith(".completed"))
        assert wer(text, completed["transcript"]) <= 0.10, completed["transcript"]
        assert not [e for _, e in events if e["type"].startswith("input_audio_buffer.speech_")]
        await client.send({"type": "ping", "ts": 2})
        after = await events_until(client, "pong")
        assert not [e for _, e in after if e["type"] == "response.created"]
        # a commit followed at once by response.create: the reply includes the committed turn
        await stream_audio(client, synthesize("One more thing.", rate), rate, speed=4)
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "response.create"})
        reply = (await events_until(client, "response.done"))[-1][1]["response"]
        assert wer("You said: one more thing.", reply["output_text"]) <= 0.2, reply["output_text"]
        await client.send({"type": "input_audio_buffer.commit", "event_id": "empty"})
        err = await client.recv()
        assert (
            err["type"] == "error" and err["error"]["code"] == "invalid_audio" and err["error"]["event_id"] == "empty"
        )


async def test_long_turn_is_committed_at_the_maximum(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """A turn longer than max_turn_ms is committed at the limit instead of growing."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on", max_turn_ms="2000")
    rate = 16_000
    speech = synthesize(SENTENCES[0], rate)
    assert len(speech) > 3 * rate
    async with await connect_voice(srv, rate) as client:
        sender = asyncio.create_task(stream_audio(client, with_silence(speech, rate), rate, speed=2))
        events = await events_until(client, "conversation.item.created")
        sender.cancel()
    completed = next(e for _, e in events if e["type"].endswith(".completed"))
    assert 1800 <= completed["audio_duration_ms"] <= 2600
    assert completed["transcript"]


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.value)
async def test_bad_audio_gets_errors_and_session_goes_on(voice_server: ServerProcess, encoding: Encoding) -> None:
    """Odd byte counts, bad base64, unsupported rates and audio while not listening get their errors."""
    async with await RealtimeClient.connect(voice_server.ws_url, voice_server.token(), encoding=encoding) as client:
        await client.send({"type": "input_audio_buffer.append", "audio": b"\x00\x01\x02", "event_id": "odd"})
        err = (await client.recv())["error"]
        assert (err["code"], err["event_id"], err["param"]) == ("invalid_audio", "odd", "audio")
        if encoding is Encoding.JSON:
            await client.send_raw('{"type":"input_audio_buffer.append","audio":"not base64!"}')
            assert (await client.recv())["error"]["code"] == "invalid_event"
        await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": 12345}}})
        err = (await client.recv())["error"]
        assert (err["code"], err["param"]) == ("invalid_event", "session.input_audio_format.sample_rate")
        await client.send({"type": "session.update", "session": {"input_audio_format": None}})
        assert (await client.recv())["session"]["input_audio_format"] is None
        await client.send({"type": "input_audio_buffer.append", "audio": b"\x00\x00"})
        assert (await client.recv())["error"]["code"] == "not_listening"
        await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": 16000}}})
        await client.recv()
        await client.send({"type": "input_audio_buffer.append", "audio": b"\x00\x00" * 1600})
        result = await client.ask("still here")
    assert result.text == "You said: still here"


async def test_voice_off_server_refuses_audio_clearly(fake_server: ServerProcess) -> None:
    """On a server without voice, audio gets not_listening saying so."""
    async with await RealtimeClient.connect(fake_server.ws_url, fake_server.token()) as client:
        await client.send({"type": "input_audio_buffer.append", "audio": b"\x00\x00"})
        err = (await client.recv())["error"]
    assert err["code"] == "not_listening"


async def _committed_within(client: RealtimeClient, seconds: float) -> bool:
    """Whether the turn is committed within `seconds` (events before it are read and dropped)."""
    try:
        async with asyncio.timeout(seconds):
            await events_until(client, "input_audio_buffer.committed")
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("turn_model", [True, False])
async def test_a_finished_question_ends_the_turn_before_the_silence_window(
    voice_server: ServerProcess, turn_model: bool
) -> None:
    """A finished question followed by 0.7 s of silence, then no more audio: with the end-of-turn model the
    turn is committed (the model heard it end), without it never (the 3 s silence window never fills)."""
    rate = 16_000
    td = {"type": "server_vad", "silence_duration_ms": 3_000, "turn_model": turn_model}
    early_before = _turns_ended_by(voice_server, "turn_model")
    async with await connect_voice(voice_server, rate, turn_detection=td) as client:
        speech = with_silence(synthesize("What is the capital of France?", rate), rate, before_s=0.3, after_s=0.7)
        await stream_audio(client, speech, rate, speed=2)
        assert await _committed_within(client, 4.0) is turn_model
    await asyncio.sleep(0.2)
    assert _turns_ended_by(voice_server, "turn_model") == early_before + (1 if turn_model else 0)


def _turns_ended_by(server: ServerProcess, cause: str) -> float:
    """The /metrics counter of committed spoken turns ended by `cause`."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    line = f'realtime_spoken_turns_total{{ended_by="{cause}"}} '
    return next((float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)), 0.0)


async def test_a_trailing_off_sentence_waits_for_the_silence_window(voice_server: ServerProcess) -> None:
    """Words that trail off mid-thought are not taken as the end of the turn: the model says "not done",
    so the turn ends only when the silence window (here 1.5 s) has passed."""
    rate = 16_000
    async with await connect_voice(
        voice_server, rate, turn_detection={"type": "server_vad", "silence_duration_ms": 1_500}
    ) as client:
        speech = with_silence(synthesize("So what I was thinking is, um,", rate), rate, before_s=0.3, after_s=0.7)
        await stream_audio(client, speech, rate, speed=2)
        assert not await _committed_within(client, 3.0)
        await stream_audio(client, np.zeros(rate, np.int16), rate, speed=4)
        assert await _committed_within(client, 4.0)


def _sched_idle(tid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
        return thread_sched_idle(tid)
    return False


def _thread_nice(pid: int) -> dict[int, int]:
    """Each thread's nice value (the threads of `pid`, from /proc)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            out[int(tid)] = thread_nice(int(tid))
    return out


def _thread_names(pid: int) -> dict[int, str]:
    """Each thread's OS-level name (the threads of `pid`, from /proc)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            out[int(tid)] = thread_name(int(tid))
    return out


async def test_model_threads_compute_below_the_event_loop(voice_server: ServerProcess) -> None:
    """REALTIME_STT_NICE/_SCHED_IDLE (10, on): after a spoken turn, Whisper's threads run 10 levels below the
    loop's thread, in SCHED_IDLE; the loop, the VAD, the end-of-turn model (REALTIME_TURN_MODEL_NICE/
    _SCHED_IDLE: 0, off) and the rest do not. The threads are told apart by their OS-level names."""
    async with await connect_voice(voice_server, 16_000) as client:
        await stream_audio(client, with_silence(synthesize(SENTENCES[1], 16_000), 16_000), 16_000, speed=4.0)
        await events_until(client, "response.done")
    assert voice_server.process is not None
    pid = voice_server.process.pid
    nice = _thread_nice(pid)
    names = _thread_names(pid)
    loop_nice = nice[pid]
    lowered = [tid for tid, n in nice.items() if n == min(19, loop_nice + 10)]
    assert len(lowered) >= 2, nice  # CTranslate2's compute thread and the decode pool's thread
    assert len(nice) - len(lowered) >= 3, nice  # the loop, the VAD, the end-of-turn model and the rest
    idle = {tid for tid in nice if _sched_idle(tid)}
    assert idle == set(lowered), (idle, lowered)
    named = {name: [tid for tid, n in names.items() if n == name] for name in ("stt", "stt-load", "turn-model", "vad")}
    assert set(named["stt"]) | set(named["stt-load"]) == idle, (named, idle)
    assert named["stt"] and named["stt-load"], named
    for own in ("turn-model", "vad"):
        assert len(named[own]) == 1 and named[own][0] not in lowered, (named, lowered)
    assert pid not in lowered
