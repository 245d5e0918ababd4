"""Images in user messages, through the real server and the real Ollama wire protocol.

The fake upstream's `vision-echo` model decodes every image it receives and names its format, size and
sha256, so a reply proves the bytes arrived intact; SmolLM2 (the real embedded model) cannot see, and says
so through /api/show. A real vision model is checked only where one is configured (REALTIME_TEST_VISION_*).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from db import EmbeddedPostgres
from realtime.client import RealtimeClient, ResponseResult
from realtime.protocol.codec import Encoding
from tests.conftest import ServerFactory, create_database
from tests.stages.test_vision_images import encode, png_bomb
from tests.support.fake_ollama import FakeOllama, describe_image
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, with_silence
from tests.support.talk import events_until, stream_audio

MAX_IMAGE_SIZE = 200_000


@pytest.fixture(scope="module")
def vision_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    """Text model `echo` (no vision); sessions pick `vision-echo` as their vision model."""
    return server_factory(
        ollama_url=fake_ollama.url,
        llm_model="echo",
        voice="off",
        max_image_size=str(MAX_IMAGE_SIZE),
        max_context_images="3",
    )


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """Random pixels: a PNG that does not compress (its byte size is about 3 x pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def image_item(*images: bytes, text: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}] if text is not None else []
    content += [{"type": "input_image", "image": data} for data in images]
    event: dict[str, Any] = {"type": "conversation.item.create", "item": {"role": "user", "content": content}}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def model_of(result: ResponseResult) -> str:
    """The model a response said it uses (response.created)."""
    return next(e for e in result.events if e["type"] == "response.created")["response"]["model"]


async def open_session(server: ServerProcess, encoding: Encoding = Encoding.MSGPACK, **session: Any) -> RealtimeClient:
    client = await RealtimeClient.connect(server.ws_url, server.token(), encoding=encoding)
    await client.send({"type": "session.update", "session": session})
    updated = (await client.recv_until("session.updated"))[-1]["session"]
    for name, value in session.items():
        assert updated[name] == value
    return client


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.value)
async def test_images_reach_the_vision_model_intact(vision_server: ServerProcess, encoding: Encoding) -> None:
    """A PNG and a JPEG (raw bytes in msgpack, base64 in JSON) reach the vision model byte for byte; the
    item echoes their metadata, the response names the vision model."""
    png, jpeg = encode("PNG", (64, 48)), encode("JPEG", (32, 32))
    async with await open_session(vision_server, encoding, vision_model="vision-echo") as client:
        await client.send(image_item(png, jpeg, text="What is in these pictures?"))
        created = (await client.recv_until("conversation.item.created"))[-1]["item"]
        assert created["content"][0] == {"type": "input_text", "text": "What is in these pictures?"}
        assert created["content"][1] == {
            "type": "input_image",
            "media_type": "image/png",
            "size_bytes": len(png),
            "sha256": hashlib.sha256(png).hexdigest(),
            "width": 64,
            "height": 48,
        }
        assert created["content"][2]["media_type"] == "image/jpeg"
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    assert result.status == "completed", result.errors
    assert model_of(result) == "vision-echo"
    assert result.text == (
        f"Images: 2. [1] {describe_image(png)}. [2] {describe_image(jpeg)}. Question: What is in these pictures?"
    )


async def test_webp_reaches_the_model_as_png(vision_server: ServerProcess) -> None:
    """A WebP is re-encoded: the model gets a PNG with the same pixels; the item says what was sent."""
    webp = encode("WEBP", (40, 30), lossless=True)
    async with await open_session(vision_server, vision_model="vision-echo") as client:
        await client.send(image_item(webp))
        created = (await client.recv_until("conversation.item.created"))[-1]["item"]
        assert created["content"][0]["media_type"] == "image/webp"
        assert created["content"][0]["sent_as"] == "image/png"
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    assert result.status == "completed" and result.text.startswith("Images: 1. [1] PNG 40x30 ")


async def test_text_turns_stay_on_the_text_model(vision_server: ServerProcess) -> None:
    """Without images in the context, a response goes to `model`, not to the vision model."""
    async with await open_session(vision_server, vision_model="vision-echo") as client:
        result = await client.ask("hello")
    assert result.text == "You said: hello" and model_of(result) == "echo"


async def test_only_the_newest_images_go_to_the_model(vision_server: ServerProcess) -> None:
    """With max_context_images 3, two messages of two images each send the newest three, each with its
    own message; the earlier text still goes."""
    images = [encode("PNG", (10 + i, 10)) for i in range(4)]
    async with await open_session(vision_server, vision_model="vision-echo") as client:
        await client.send(image_item(images[0], images[1], text="first"))
        await client.send(image_item(images[2], images[3], text="second"))
        await client.recv_until("conversation.item.created")
        await client.recv_until("conversation.item.created")
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    described = ". ".join(f"[{n}] {describe_image(d)}" for n, d in enumerate(images[1:], 1))
    assert result.text == f"Images: 3. {described}. Question: second"


async def test_bad_images_get_their_errors_and_the_session_goes_on(vision_server: ServerProcess) -> None:
    """Truncated, a decompression bomb, another type, too big, too many: each its error naming the part; no
    item is added; a good image afterwards works."""
    good = encode("PNG")
    cases = [
        ("truncated", image_item(encode("JPEG", (320, 240))[:900]), "invalid_image", "item.content[0].image"),
        ("bomb", image_item(png_bomb(20_000)), "image_too_large", "item.content[0].image"),
        ("gif", image_item(encode("GIF")), "unsupported_image_type", "item.content[0].image"),
        ("text", image_item(good, b"just some text"), "unsupported_image_type", "item.content[1].image"),
        ("big", image_item(noise_png((300, 300))), "image_too_large", "item.content[0].image"),
        ("many", image_item(*[good] * 5), "message_too_large", "item.content"),
    ]
    assert len(noise_png((300, 300))) > MAX_IMAGE_SIZE
    async with await open_session(vision_server, vision_model="vision-echo") as client:
        for name, event, code, param in cases:
            event["event_id"] = name
            await client.send(event)
            reply = await client.recv()
            assert reply["type"] == "error", (name, reply)
            assert (reply["error"]["code"], reply["error"]["param"]) == (code, param), (name, reply)
            assert reply["error"]["event_id"] == name
        await client.send(image_item(good, text="fine?"))
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    assert result.text == f"Images: 1. [1] {describe_image(good)}. Question: fine?"


async def test_a_model_that_cannot_see_fails_the_response_clearly(vision_server: ServerProcess) -> None:
    """Images with no vision model: the text model (no "vision" in /api/show) fails the response with
    model_cannot_see naming it; naming a vision model then answers over the same history."""
    png = encode("PNG")
    async with await open_session(vision_server) as client:
        await client.send(image_item(png, text="see?"))
        await client.send({"type": "response.create"})
        failed = await client.collect_response()
        assert failed.status == "failed" and model_of(failed) == "echo"
        error = failed.errors[0]["error"]
        assert error["code"] == "model_cannot_see" and "'echo'" in error["message"]
        assert failed.done["response"]["status_details"]["error"]["code"] == "model_cannot_see"
        result = await client.ask("and now?", vision_model="vision-echo")
    assert result.status == "completed"
    assert result.text == f"Images: 1. [1] {describe_image(png)}. Question: and now?"


async def test_the_real_local_model_cannot_see(server: ServerProcess) -> None:
    """SmolLM2 on the embedded Ollama-compatible endpoint reports no vision: model_cannot_see, by name."""
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        await client.send(image_item(encode("JPEG"), text="What is this?"))
        await client.send({"type": "response.create"})
        result = await client.collect_response()
        assert result.status == "failed"
        error = result.errors[0]["error"]
        assert error["code"] == "model_cannot_see" and "'smollm2:135m'" in error["message"]
        assert (await client.ask("Say hi.")).status == "failed"  # the image is still in the context
        await client.send({"type": "conversation.item.delete", "item_id": "item_1"})
        assert (await client.recv_until("conversation.item.deleted"))[-1]["item_id"] == "item_1"


async def test_a_spoken_question_about_the_image_just_sent(
    server_factory: ServerFactory, fake_ollama: FakeOllama
) -> None:
    """An image, then a spoken question: the reply's context holds the image with its message and the
    transcript as the newest user message (server VAD starts the response)."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on", vision_model="vision-echo")
    rate = 16_000
    picture = encode("JPEG", (48, 32))
    question = "Please describe the picture I just sent you."
    client = await RealtimeClient.connect(srv.ws_url, srv.token())
    async with client:
        await client.send({"type": "session.update", "session": {"input_audio_format": {"sample_rate": rate}}})
        assert (await client.recv_until("session.updated"))[-1]["session"]["vision_model"] == "vision-echo"
        await client.send(image_item(picture))
        await client.recv_until("conversation.item.created")
        sender = asyncio.create_task(stream_audio(client, with_silence(synthesize(question, rate), rate), rate))
        events = await events_until(client, "response.done")
        await sender
    transcript = next(e for _, e in events if e["type"].endswith("transcription.completed"))["transcript"]
    assert wer(question, transcript) <= 0.25, transcript
    done = events[-1][1]["response"]
    assert done["status"] == "completed"
    assert done["output_text"] == f"Images: 1. [1] {describe_image(picture)}. Question: {transcript}"
    created = next(e for _, e in events if e["type"] == "response.created")
    assert created["response"]["model"] == "vision-echo"


async def test_image_metadata_is_stored_with_the_turn(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> None:
    """The user message is stored with its images' metadata (type, size, digest, pixels), never the bytes."""
    url = await create_database(postgres)
    srv = server_factory(
        ollama_url=fake_ollama.url, llm_model="echo", vision_model="vision-echo", voice="off", database_url=url
    )
    async with httpx.AsyncClient(base_url=srv.url) as http:
        resp = await http.post("/api/auth/signup", json={"username": "viewer", "password": "correct horse battery"})
        assert resp.status_code == 201, resp.text
        token = resp.json()["access_token"]
    png, webp = encode("PNG", (64, 48)), encode("WEBP", (20, 10), lossless=True)
    async with await RealtimeClient.connect(srv.ws_url, token) as client:
        await client.send(image_item(png, webp, text="look"))
        await client.send({"type": "response.create"})
        assert (await client.collect_response()).status == "completed"
        conversation_id = client.session["conversation_id"] or await _conversation_id(client)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=srv.url, headers=headers) as http:
        for _ in range(100):
            resp = await http.get(f"/api/conversations/{conversation_id}")
            if resp.status_code == 200 and len(resp.json()["messages"]) >= 2:
                break
            await asyncio.sleep(0.1)
    messages = resp.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "look" and messages[1]["attachments"] == []
    assert messages[0]["attachments"] == [
        {
            "type": "image",
            "media_type": "image/png",
            "size_bytes": len(png),
            "sha256": hashlib.sha256(png).hexdigest(),
            "width": 64,
            "height": 48,
        },
        {
            "type": "image",
            "media_type": "image/webp",
            "size_bytes": len(webp),
            "sha256": hashlib.sha256(webp).hexdigest(),
            "width": 20,
            "height": 10,
            "sent_as": "image/png",
        },
    ]


async def _conversation_id(client: RealtimeClient) -> str:
    await client.send({"type": "session.update", "session": {}})
    return (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]


VISION_URL = os.environ.get("REALTIME_TEST_VISION_URL")
VISION_MODEL = os.environ.get("REALTIME_TEST_VISION_MODEL")


@pytest.mark.skipif(
    not (VISION_URL and VISION_MODEL),
    reason="no real vision model: set REALTIME_TEST_VISION_URL (an Ollama) and REALTIME_TEST_VISION_MODEL",
)
async def test_a_real_vision_model_describes_the_picture(server_factory: ServerFactory) -> None:
    """A real vision model (e.g. on a GPU machine) names the colour and shape of a drawn picture."""
    picture = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(picture).ellipse((48, 48, 208, 208), fill=(220, 20, 20))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    srv = server_factory(ollama_url=VISION_URL, llm_model=VISION_MODEL, voice="off", max_output_tokens="64")
    async with await RealtimeClient.connect(srv.ws_url, srv.token(), recv_timeout=300) as client:
        await client.send(
            image_item(buffer.getvalue(), text="What shape is in this picture, and what colour? Answer briefly.")
        )
        await client.send({"type": "response.create", "response": {"temperature": 0}})
        result = await client.collect_response()
    assert result.status == "completed", result.errors
    answer = result.text.lower()
    assert "red" in answer and ("circle" in answer or "round" in answer or "dot" in answer), answer
