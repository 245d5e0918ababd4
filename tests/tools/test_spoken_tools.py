"""Spoken tool turns over the real voice path (Silero VAD, Whisper, Piper): a spoken request creates and
runs a file, the answer is spoken, and a spoken yes or no answers a confirmation."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.tools.workspace import Workspaces
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, with_silence
from tests.support.talk import connect_voice, events_until, stream_audio
from tests.tools.conftest import needs_bwrap

pytestmark = needs_bwrap
RATE = 16_000
SPEAK = {"output_audio_format": {"type": "pcm16", "sample_rate": 24_000}}
PRIMES = "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]"




@pytest.fixture(scope="module")
def voice_tools_server(server_factory: ServerFactory, fake_ollama: FakeOllama, tools_dir: Path) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="tools-primes", voice="on", tools_dir=str(tools_dir))


async def test_spoken_request_creates_and_runs_a_file(voice_tools_server: ServerProcess, tools_dir: Path) -> None:
    """'Make a Python script that prints the primes below 100 and run it', spoken: the file is written and
    run in the sandbox, its output streamed, and the answer with the primes is spoken back."""
    request = with_silence(
        synthesize("Make a Python script that prints the primes below one hundred and run it.", RATE), RATE
    )
    async with await connect_voice(voice_tools_server, RATE, user="speaker", tools=True, **SPEAK) as client:
        sender = asyncio.create_task(stream_audio(client, request, RATE, speed=2))
        events = [e for _, e in await events_until(client, "response.done")]
        await sender
    kinds = [e["type"] for e in events]
    assert "conversation.item.input_audio_transcription.completed" in kinds
    calls = [e["name"] for e in events if e["type"] == "response.tool_call"]
    assert calls == ["write_file", "run_command"]
    output = "".join(e["delta"] for e in events if e["type"] == "response.tool_output.delta")
    assert output == PRIMES + "\n"
    done = events[-1]["response"]
    assert done["status"] == "completed" and PRIMES in done["output_text"]
    assert done["audio"]["duration_ms"] > 1000  # the answer was spoken
    assert any(e["type"] == "response.audio.delta" for e in events)
    assert (tools_dir / Workspaces.key("speaker") / "primes.py").exists()


@pytest.mark.parametrize(("answer", "ran"), [("Yes, go ahead.", True), ("No, don't do that.", False)])
async def test_spoken_confirmation(voice_tools_server: ServerProcess, answer: str, ran: bool) -> None:
    """A command that needs confirmation is asked aloud; the user's spoken yes runs it, a no declines it."""
    request = with_silence(synthesize("Write the primes script and run it.", RATE), RATE)
    session = {"tools": {"confirm": ["run_command"]}, **SPEAK}
    async with await connect_voice(voice_tools_server, RATE, user=f"voice-{ran}", **session) as client:
        sender = asyncio.create_task(stream_audio(client, request, RATE, speed=2))
        events = [e for _, e in await events_until(client, "response.tool_confirmation_request")]
        await sender
        assert events[-1]["name"] == "run_command"
        reply = with_silence(synthesize(answer, RATE), RATE)
        sender = asyncio.create_task(stream_audio(client, reply, RATE, speed=2))
        events = [e for _, e in await events_until(client, "response.done")]
        await sender
    result = next(e for e in events if e["type"] == "response.tool_result")
    assert result["status"] == ("completed" if ran else "declined")
    done = events[-1]["response"]
    assert done["status"] == "completed" and (PRIMES in done["output_text"]) == ran
    assert "Shall I run the command python3 primes.py?" in done["output_text"]
