"""The GPU scheduler with the server's real models (CPU here): status, unload during a turn, low_vram."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from realtime.client import RealtimeClient
from tests.conftest import ServerFactory
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, with_silence
from tests.support.talk import connect_voice, events_until, stream_audio

SPEAK = {"output_audio_format": {"type": "pcm16", "sample_rate": 24_000}}


@pytest.fixture(scope="module")
def model_server(server_factory: ServerFactory, local_ollama: str) -> ServerProcess:
    return server_factory(ollama_url=local_ollama, llm_model="smollm2:135m", voice="on", model_devices="llm=cpu")


def _status(server: ServerProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.url + "/api/models/status", headers=headers, timeout=30)


async def test_status_shows_the_real_models(model_server: ServerProcess) -> None:
    """Admins see every model the server uses, where it lives and its memory; others are refused."""
    assert _status(model_server, None).status_code == 401
    assert _status(model_server, model_server.token("plain")).status_code == 403
    status = _status(model_server, model_server.token("root", admin=True)).json()
    models = status["models"]
    assert {"vad", "whisper", "tts", "llm"} <= set(models)
    for name in ("vad", "whisper", "tts"):
        assert models[name]["state"] == "resident" and models[name]["device"] == "cpu", models[name]
    assert models["vad"]["users"] == 1  # the VAD is leased for the server's lifetime
    assert status["devices"]["cpu"]["budget_bytes"] > 0
    assert models["whisper"]["memory"]["estimated_bytes"] > 0


async def test_status_as_a_protocol_event(model_server: ServerProcess) -> None:
    """The same status over the session, for admins; an error for others."""
    async with await RealtimeClient.connect(model_server.ws_url, model_server.token("root", admin=True)) as admin:
        await admin.send({"type": "models.status", "event_id": "m1"})
        event = (await admin.recv_until("models.status"))[-1]
        assert event["reply_to"] == "m1" and set(event["status"]["models"]) >= {"whisper", "llm"}
    async with await RealtimeClient.connect(model_server.ws_url, model_server.token("plain")) as plain:
        await plain.send({"type": "models.status"})
        assert (await plain.recv())["error"]["code"] == "forbidden"


async def test_unload_during_a_spoken_turn_waits_for_it(model_server: ServerProcess) -> None:
    """Unloading the LLM while it answers a spoken question waits for the reply to finish, then unloads."""
    admin = model_server.token("root", admin=True)
    async with await connect_voice(model_server, 24_000, max_output_tokens=120, **SPEAK) as client:
        audio = with_silence(synthesize("Tell me about the history of the bicycle.", 24_000), 24_000)
        sender = asyncio.create_task(stream_audio(client, audio, 24_000))
        events = await events_until(client, "response.text.delta")
        async with httpx.AsyncClient(base_url=model_server.url, timeout=120) as http:
            unload = asyncio.create_task(
                http.post(
                    "/api/models/unload",
                    json={"model": "llm", "wait": True, "timeout": 120},
                    headers={"Authorization": f"Bearer {admin}"},
                )
            )
            events += await events_until(client, "response.done")
            done_at = time.monotonic()
            response = await unload
            unloaded_at = time.monotonic()
        await sender
    assert events[-1][1]["response"]["status"] in ("completed", "incomplete")
    assert response.status_code == 200 and response.json()["unloaded"] == ["llm"], response.text
    assert unloaded_at >= done_at - 0.05, "the LLM was unloaded before the reply finished"
    llm = _status(model_server, admin).json()["models"]["llm"]
    assert llm["state"] == "unloaded"


async def test_low_vram_spoken_turns_still_work(server_factory: ServerFactory, local_ollama: str) -> None:
    """In low_vram mode (every model counted large here) a spoken turn still gets transcript, reply and audio."""
    srv = server_factory(
        ollama_url=local_ollama,
        llm_model="smollm2:135m",
        voice="on",
        low_vram="true",
        large_model_bytes=str(10 << 20),
        model_devices="llm=cpu",
    )
    question = "What is the capital of Italy?"
    async with await connect_voice(srv, 24_000, max_output_tokens=24, **SPEAK) as client:
        for _ in range(2):
            sender = asyncio.create_task(
                stream_audio(client, with_silence(synthesize(question, 24_000), 24_000), 24_000)
            )
            events = await events_until(client, "response.done")
            await sender
            transcript = next(e for _, e in events if e["type"].endswith(".completed"))["transcript"]
            assert wer(question, transcript) <= 0.2, transcript
            done = events[-1][1]["response"]
            assert done["status"] in ("completed", "incomplete") and done["output_text"]
            assert any(e["type"] == "response.audio.delta" for _, e in events)
