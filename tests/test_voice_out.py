"""Voice out and full duplex over the real server: Piper audio streamed and paced, barge-in, truncation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.client import RealtimeClient
from realtime.stages.chunker import speakable
from tests.conftest import ServerFactory
from tests.support.fake_ollama import STORY, FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, white_noise, with_silence
from tests.support.talk import connect_voice, events_until, stream_audio

RATE = 24_000
SPEAK = {"output_audio_format": {"type": "pcm16", "sample_rate": RATE}}
QUESTION = "Could you tell me what the weather will be like tomorrow in the mountains?"


@pytest.fixture(scope="module")
def duplex_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on")


@pytest.fixture(scope="module")
def whisper() -> Any:
    from faster_whisper import WhisperModel

    from tests.support.speech import voice_path

    return WhisperModel(str(voice_path().parents[1] / "whisper-base"), device="cpu", compute_type="int8")


def _transcribe(model: Any, pcm: bytes, rate: int) -> str:
    import soxr

    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    segments, _ = model.transcribe(soxr.resample(audio, rate, 16_000), language="en")
    return " ".join(s.text for s in segments)


def _audio(events: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, e) for t, e in events if e["type"] == "response.audio.delta"]


async def test_spoken_turn_gets_a_spoken_reply(duplex_server: ServerProcess, whisper: Any) -> None:
    """Question spoken in; the reply's audio, transcribed by Whisper, says the reply's text; chunks are paced."""
    async with await connect_voice(duplex_server, RATE, **SPEAK) as client:
        sender = asyncio.create_task(stream_audio(client, with_silence(synthesize(QUESTION, RATE), RATE), RATE))
        events = await events_until(client, "response.done")
        await sender
    done = events[-1][1]["response"]
    assert done["status"] == "completed"
    audio = _audio(events)
    assert audio, "no audio"
    assert [e["seq_no"] for _, e in audio] == list(range(1, len(audio) + 1))
    offsets = [e["offset_ms"] for _, e in audio]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(e["response_id"] == done["id"] for _, e in audio)
    pcm = b"".join(e["audio"] for _, e in audio)
    duration_ms = len(pcm) // 2 * 1000 // RATE
    assert abs(duration_ms - done["audio"]["duration_ms"]) <= len(audio)
    # paced: sending took about as long as the audio lasts, minus the lead
    span = audio[-1][0] - audio[0][0]
    assert span >= duration_ms / 1000 - 0.3 - 0.2, (span, duration_ms)
    heard = _transcribe(whisper, pcm, RATE)
    assert wer(speakable(done["output_text"]), heard) <= 0.10, (done["output_text"], heard)
    pieces = [e["delta"] for _, e in events if e["type"] == "response.audio_transcript.delta"]
    assert " ".join(pieces) == speakable(done["output_text"])
    metrics = done["metrics"]
    assert metrics["speech_end_to_first_audio_ms"] is not None and metrics["speech_end_to_first_audio_ms"] > 0
    assert metrics["speech_end_to_transcript_ms"] <= metrics["speech_end_to_first_audio_ms"]


async def _start_story(client: RealtimeClient) -> list[tuple[float, dict[str, Any]]]:
    """Ask (by text) for the long story and wait until its audio has played for about a second."""
    await client.send({"type": "session.update", "session": {"model": "story", **SPEAK}})
    await events_until(client, "session.updated")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]},
        }
    )
    await client.send({"type": "response.create"})
    events = await events_until(client, "response.audio.delta")
    started = time.monotonic()
    while time.monotonic() - started < 1.2:
        event = await client.recv()
        events.append((time.monotonic(), event))
    return events


async def test_barge_in_stops_audio_and_keeps_what_was_heard(duplex_server: ServerProcess) -> None:
    """Speaking over the reply stops it at once (status interrupted) and history keeps only what was heard."""
    interruption = with_silence(synthesize("Wait, stop please, I have a question.", RATE), RATE, 0.0, 1.0)
    async with await connect_voice(
        duplex_server, RATE, turn_detection={"type": "server_vad", "create_response": False}
    ) as client:
        await _start_story(client)
        speech_sent_at = time.monotonic()
        sender = asyncio.create_task(stream_audio(client, interruption, RATE))
        events = await events_until(client, "response.done")
        done_at = events[-1][0]
        done = events[-1][1]["response"]
        assert done["status"] == "interrupted" and done["status_details"]["reason"] == "barge_in"
        # within the barge-in minimum plus VAD and a chunk or two of slack
        assert done_at - speech_sent_at < 0.9, done_at - speech_sent_at
        tail = await events_until(client, "conversation.item.created")
        assert not [e for _, e in tail if e["type"].startswith("response.audio")], "audio after response.done"
        await sender
        played, heard = done["audio"]["played_ms"], done["audio"]["heard_text"]
        assert 0 < played < done["audio"]["duration_ms"] < 60_000
        assert heard and STORY.startswith(heard) and len(heard) < len(STORY) / 2
        # what the model sees next is the truncated reply
        await client.send({"type": "session.update", "session": {"model": "recall", "output_audio_format": None}})
        await events_until(client, "session.updated")
        recall = await client.ask("What did you say?")
    assert recall.text == "You heard: " + heard


async def test_client_truncate_sets_what_was_heard(duplex_server: ServerProcess) -> None:
    """conversation.item.truncate (the client's playback position) cuts the stored reply to that point."""
    async with await RealtimeClient.connect(duplex_server.ws_url, duplex_server.token()) as client:
        events = await _start_story(client)
        item_id = next(e for _, e in events if e["type"] == "response.created")["response"]["item_id"]
        await client.send({"type": "response.cancel"})
        done = (await events_until(client, "response.done"))[-1][1]["response"]
        assert done["status"] == "cancelled"
        await client.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 600}
        )
        truncated = (await events_until(client, "conversation.item.truncated"))[-1][1]
        assert truncated["audio_end_ms"] == 600 and 0 < len(truncated["transcript"]) < len(done["audio"]["heard_text"])
        await client.send({"type": "conversation.item.truncate", "item_id": "item_404", "audio_end_ms": 1})
        err = (await client.recv())["error"]
        assert err["code"] == "item_not_found"
        await client.send({"type": "session.update", "session": {"model": "recall", "output_audio_format": None}})
        await events_until(client, "session.updated")
        recall = await client.ask("What did you say?")
    assert recall.text == "You heard: " + truncated["transcript"]


async def test_a_click_does_not_interrupt(duplex_server: ServerProcess) -> None:
    """A short loud click during the reply does not stop it."""
    click = np.concatenate([white_noise(0.06, RATE, level=0.6), np.zeros(RATE // 2, np.int16)])
    async with await connect_voice(duplex_server, RATE) as client:
        await _start_story(client)
        await stream_audio(client, click, RATE)
        await client.send({"type": "response.cancel"})
        done = (await events_until(client, "response.done"))[-1][1]["response"]
    assert done["status"] == "cancelled", "the click interrupted the reply"


async def test_explicit_cancel_stops_audio(duplex_server: ServerProcess) -> None:
    """response.cancel stops the audio: nothing of the response after its response.done."""
    async with await RealtimeClient.connect(duplex_server.ws_url, duplex_server.token()) as client:
        await _start_story(client)
        await client.send({"type": "response.cancel"})
        await events_until(client, "response.done")
        await client.send({"type": "ping", "ts": 3})
        after = await events_until(client, "pong")
    assert not [e for _, e in after if e["type"].startswith("response.")]


async def test_tts_failing_mid_reply(server_factory: ServerFactory, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """The TTS engine dying mid-reply: an error event, the text still complete, and the session goes on."""
    flaky = Path(__file__).parent / "support" / "flaky_espeak.sh"
    srv = server_factory(
        {"FLAKY_ESPEAK_STATE": str(tmp_path / "count")},
        ollama_url=fake_ollama.url,
        llm_model="story",
        voice="off",
        tts_engine="espeak",
        espeak_binary=str(flaky),
    )
    async with await RealtimeClient.connect(srv.ws_url, srv.token()) as client:
        await client.send({"type": "session.update", "session": SPEAK})
        await events_until(client, "session.updated")
        result = await client.ask("Tell me a story.")
        assert result.status == "incomplete", result.done
        assert result.done["response"]["status_details"]["reason"] == "tts_failed"
        assert [e["error"]["code"] for e in result.errors] == ["tts_failed"]
        assert result.text == STORY
        await client.send({"type": "session.update", "session": {"model": "echo", "output_audio_format": None}})
        await events_until(client, "session.updated")
        assert (await client.ask("still there?")).text == "You said: still there?"


async def test_four_voice_sessions_without_crosstalk(duplex_server: ServerProcess, whisper: Any) -> None:
    """Four people talking at once each hear the reply to their own question, in their own audio."""
    questions = [
        "What is the capital of Norway?",
        "How do I bake bread at home?",
        "Which animals live in the desert?",
        "When does the summer holiday start?",
    ]

    async def talk(question: str, user: str) -> tuple[str, str]:
        async with await connect_voice(duplex_server, 16_000, user=user, **SPEAK) as client:
            audio = with_silence(synthesize(question, 16_000), 16_000)
            sender = asyncio.create_task(stream_audio(client, audio, 16_000))
            events = await events_until(client, "response.done")
            await sender
        pcm = b"".join(e["audio"] for _, e in _audio(events))
        return events[-1][1]["response"]["output_text"], pcm

    results = await asyncio.gather(*(talk(q, f"u{i}") for i, q in enumerate(questions)))
    for i, (text, pcm) in enumerate(results):
        said = text.removeprefix("You said: ")
        # its own question (a word may be misheard under load), and clearly none of the others
        assert wer(questions[i], said) <= 0.35, text
        assert all(wer(other, said) > 0.6 for j, other in enumerate(questions) if j != i), text
        heard = _transcribe(whisper, pcm, 24_000)
        assert wer(speakable(text), heard) <= 0.2, (text, heard)
