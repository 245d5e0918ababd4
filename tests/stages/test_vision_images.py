"""Image checking (realtime/stages/vision.py): every good kind passes as the model needs it, every bad one
gets its stable error; and the protocol part that carries images."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib

import httpx
import pytest
from PIL import Image

from realtime.errors import (
    ImageTooLarge,
    InvalidImage,
    InvalidMessage,
    MessageTooLarge,
    ModelNotFound,
    UnsupportedImageType,
)
from realtime.protocol.client_events import InputImage, Limits, parse_client_event
from realtime.stages.llm import OllamaChat
from realtime.stages.vision import JPEG, PNG, WEBP, ImageLimits, check_image, sniff


def encode(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **options: object) -> bytes:
    """A small image with some structure (a gradient), so decoders have real work to do."""
    image = Image.linear_gradient("L").resize(size).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: a few KB that inflate to side²/8 bytes."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("fmt", "media_type"), [("JPEG", JPEG), ("PNG", PNG)])
def test_jpeg_and_png_pass_unchanged(fmt: str, media_type: str) -> None:
    """A plain JPEG or PNG goes to the model byte for byte, with its size and digest recorded."""
    data = encode(fmt)
    image = check_image(data)
    assert image.data == data and image.media_type == media_type and not image.converted
    assert (image.width, image.height) == (64, 48)
    assert image.metadata() == {
        "type": "image",
        "media_type": media_type,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": 64,
        "height": 48,
    }
    assert base64.b64decode(image.base64()) == data


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_becomes_png_with_the_same_pixels(mode: str) -> None:
    """WebP (lossless here) is re-encoded to PNG; the pixels survive, the metadata says what was sent."""
    data = encode("WEBP", mode=mode, lossless=True)
    image = check_image(data)
    assert image.media_type == PNG and image.converted
    with Image.open(io.BytesIO(image.data)) as out, Image.open(io.BytesIO(data)) as original:
        assert out.format == "PNG" and out.mode == original.mode
        assert out.tobytes() == original.convert(out.mode).tobytes()
    meta = image.metadata()
    assert meta["media_type"] == WEBP and meta["sent_as"] == PNG and meta["size_bytes"] == len(data)


def test_cmyk_jpeg_is_converted_to_rgb_jpeg() -> None:
    """A CMYK JPEG (which many model image decoders cannot read) is re-encoded as an RGB JPEG."""
    image = check_image(encode("JPEG", mode="CMYK"))
    assert image.media_type == JPEG and image.converted
    with Image.open(io.BytesIO(image.data)) as out:
        assert out.mode == "RGB"


def test_rotated_jpeg_is_turned_upright_and_loses_its_metadata() -> None:
    """An EXIF orientation is applied (the model sees the photo upright) and the EXIF block is dropped."""
    picture = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    exif[0x010F] = "SecretCam"  # camera make: metadata that must not travel on
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", exif=exif)
    image = check_image(buffer.getvalue())
    assert (image.width, image.height) == (20, 40) and image.converted
    assert b"SecretCam" not in image.data
    with Image.open(io.BytesIO(image.data)) as out:
        assert out.size == (20, 40) and not out.getexif()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    """Half an image (the header is fine, the pixels stop) is invalid_image, for each accepted type."""
    data = encode(fmt, size=(320, 240), quality=95) if fmt != "PNG" else encode(fmt, size=(320, 240))
    with pytest.raises(InvalidImage) as caught:
        check_image(data[: len(data) // 2])
    assert caught.value.code == "invalid_image"


def test_corrupt_png_checksum_is_invalid() -> None:
    """A flipped bit in a PNG's data fails its CRC: invalid_image."""
    data = bytearray(encode("PNG"))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(InvalidImage) as caught:
        check_image(bytes(data))
    assert caught.value.code == "invalid_image"


def test_header_only_is_invalid() -> None:
    """The magic bytes alone are not an image."""
    for data in (b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 "):
        with pytest.raises(InvalidImage) as caught:
            check_image(data)
        assert caught.value.code == "invalid_image"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode("GIF"), id="gif"),
        pytest.param(encode("BMP"), id="bmp"),
        pytest.param(encode("TIFF"), id="tiff"),
        pytest.param(b"%PDF-1.7\n", id="pdf"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b"", id="empty"),
    ],
)
def test_other_types_are_unsupported(data: bytes) -> None:
    """Anything that is not JPEG, PNG or WebP by its own bytes is unsupported_image_type."""
    with pytest.raises(UnsupportedImageType) as caught:
        check_image(data)
    assert caught.value.code == "unsupported_image_type"


@pytest.mark.parametrize("side", [5_000, 20_000, 60_000])
def test_decompression_bombs_are_refused_before_decoding(side: int) -> None:
    """A small PNG declaring side² pixels is image_too_large from its header alone: an error, never a
    Pillow warning (warnings are errors here), and nothing is inflated (60 000² would be 450 MB)."""
    data = png_bomb(side)
    assert len(data) < 2 << 20
    with pytest.raises(ImageTooLarge) as caught:
        check_image(data)
    assert caught.value.code == "image_too_large" and f"{side}x{side}" in caught.value.message


def test_pixel_and_byte_limits_are_configurable() -> None:
    """The limits are the caller's: one pixel or one byte over is refused."""
    data = encode("PNG", size=(100, 100))
    assert check_image(data, ImageLimits(max_image_pixels=10_000)).width == 100
    with pytest.raises(ImageTooLarge):
        check_image(data, ImageLimits(max_image_pixels=9_999))
    with pytest.raises(ImageTooLarge) as caught:
        check_image(data, ImageLimits(max_image_size=len(data) - 1))
    assert caught.value.code == "image_too_large"


def test_sniff_reads_only_the_magic() -> None:
    """The type comes from the leading bytes."""
    assert sniff(encode("JPEG")) == JPEG and sniff(encode("PNG")) == PNG and sniff(encode("WEBP")) == WEBP
    assert sniff(b"RIFF\x00\x00\x00\x00WAVE") is None and sniff(b"") is None


# ---- the protocol part ----------------------------------------------------------------------------


def _item(*parts: dict[str, object]) -> dict[str, object]:
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": list(parts)}}


def test_input_image_parses_from_bytes_and_base64() -> None:
    """msgpack carries raw bytes, JSON a base64 string: both give the same InputImage."""
    data = encode("PNG")
    raw = parse_client_event(_item({"type": "input_image", "image": data}, {"type": "input_text", "text": "What?"}))
    b64 = parse_client_event(
        _item({"type": "input_image", "image": base64.b64encode(data).decode()}), base64_binary=True
    )
    assert raw.content[0] == InputImage(data) and b64.content == (InputImage(data),)  # type: ignore[union-attr]
    assert raw.text == "What?" and raw.images == (data,)  # type: ignore[union-attr]
    assert raw.to_wire()["item"]["content"][0] == {"type": "input_image", "image": data}


def test_input_image_limits_in_the_parser() -> None:
    """Over the byte limit: image_too_large naming the part; too many images: message_too_large."""
    limits = Limits(max_image_bytes=100, max_images=2)
    with pytest.raises(ImageTooLarge) as caught:
        parse_client_event(_item({"type": "input_image", "image": b"x" * 101}), limits=limits)
    assert caught.value.param == "item.content[0].image"
    with pytest.raises(ImageTooLarge):
        parse_client_event(
            _item({"type": "input_image", "image": base64.b64encode(b"x" * 200).decode()}),
            base64_binary=True,
            limits=limits,
        )
    three = [{"type": "input_image", "image": b"x"}] * 3
    with pytest.raises(MessageTooLarge) as many:
        parse_client_event(_item(*three), limits=limits)
    assert many.value.code == "message_too_large" and many.value.param == "item.content"


@pytest.mark.parametrize(
    ("part", "role"),
    [
        ({"type": "input_image", "image": "not bytes"}, "user"),
        ({"type": "input_image"}, "user"),
        ({"type": "input_image", "image": b"x", "detail": "high"}, "user"),
        ({"type": "input_image", "image": b"x"}, "assistant"),
        ({"type": "input_image", "image": b"x"}, "system"),
    ],
)
def test_malformed_image_parts_are_invalid_events(part: dict[str, object], role: str) -> None:
    """A string where bytes belong, a missing image, an unknown field, or an image on a non-user item."""
    event = _item(part)
    event["item"]["role"] = role  # type: ignore[index]
    with pytest.raises(InvalidMessage) as caught:
        parse_client_event(event)
    assert caught.value.code == "invalid_event"


def test_vision_model_setting_parses() -> None:
    """vision_model is a model name or null, in session.update and response.create; blank is refused."""
    update = parse_client_event({"type": "session.update", "session": {"vision_model": "llava:7b"}})
    assert update.changes == {"vision_model": "llava:7b"}  # type: ignore[union-attr]
    cleared = parse_client_event({"type": "response.create", "response": {"vision_model": None}})
    assert cleared.overrides == {"vision_model": None}  # type: ignore[union-attr]
    with pytest.raises(InvalidMessage) as caught:
        parse_client_event({"type": "session.update", "session": {"vision_model": " "}})
    assert caught.value.code == "invalid_event"


# ---- what a model can do (Ollama's /api/show) -----------------------------------------------------


async def test_capabilities_are_read_once_per_model() -> None:
    """/api/show's `capabilities` is asked once per model; a server that lists none gives None (trusted);
    a model the server lacks is model_not_found."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        asked.append(model)
        if model == "llava":
            return httpx.Response(200, json={"capabilities": ["completion", "vision"]})
        if model == "old":
            return httpx.Response(200, json={"details": {}})  # an Ollama from before capabilities
        return httpx.Response(404, json={"error": f"model '{model}' not found"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        chat = OllamaChat("http://ollama.invalid", http)
        assert await chat.capabilities("llava") == {"completion", "vision"}
        assert await chat.capabilities("llava") == {"completion", "vision"}
        assert await chat.capabilities("old") is None
        with pytest.raises(ModelNotFound) as caught:
            await chat.capabilities("ghost")
        assert "'ghost'" in caught.value.message
    assert asked == ["llava", "old", "ghost"]
