"""Images for vision models: each attachment is decoded with Pillow before any model sees it.

`check_image` (blocking: run it in a thread) takes the bytes a client sent and either refuses them with
a stable error or returns what the model gets:

- the type comes from the bytes, never from a name: JPEG, PNG or WebP, else `unsupported_image_type`;
- the declared size is checked *before* decoding: over `max_image_pixels` (width x height) is
  `image_too_large`, so a decompression bomb (a small file that inflates to gigabytes) is never
  inflated. Pillow's own bomb check is bypassed (the plugin classes are opened directly) because it
  warns rather than fails below twice its limit; ours is lower and always an error;
- the whole image is decoded (and a PNG's checksums verified): a truncated or corrupt file is
  `invalid_image`;
- JPEG and PNG in plain modes go to the model as sent, byte for byte. WebP (which the image decoders of
  llama.cpp-based servers do not read), other pixel modes (CMYK, 16-bit) and JPEGs that need an EXIF
  rotation are re-encoded: to PNG, or JPEG (quality 90) for a photo without transparency. Re-encoding
  drops all metadata; only the first frame of an animation is kept.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from realtime.errors import ImageTooLarge, InvalidImage, UnsupportedImageType

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"
MEDIA_TYPES = (JPEG, PNG, WEBP)
_PLAIN_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})  # what every image decoder reads
_EXIF_ORIENTATION = 0x0112
JPEG_QUALITY = 90


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_image_size: int = 10 << 20  # bytes of one image as sent
    max_image_pixels: int = 4096 * 4096  # width x height, checked before decoding


@dataclass(frozen=True, slots=True, eq=False)
class CheckedImage:
    """A decoded, checked image: `data` is what the model gets (JPEG or PNG)."""

    data: bytes
    media_type: str  # of `data`
    width: int
    height: int
    source_type: str  # as the client sent it
    source_size: int
    source_sha256: str
    converted: bool = False  # re-encoded (else `data` is the client's bytes, unchanged)

    def base64(self) -> str:
        """The form Ollama's `images` field takes."""
        return base64.b64encode(self.data).decode("ascii")

    def metadata(self) -> dict[str, Any]:
        """What is stored with the message (messages.attachments): no pixels."""
        out: dict[str, Any] = {
            "type": "image",
            "media_type": self.source_type,
            "size_bytes": self.source_size,
            "sha256": self.source_sha256,
            "width": self.width,
            "height": self.height,
        }
        if self.converted:
            out["sent_as"] = self.media_type
        return out


def sniff(data: bytes) -> str | None:
    """The media type the leading bytes announce, if it is one we take."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    JPEG: JpegImagePlugin.JpegImageFile,
    PNG: PngImagePlugin.PngImageFile,
    WEBP: WebPImagePlugin.WebPImageFile,
}


def _open(data: bytes, media_type: str) -> ImageFile.ImageFile:
    """Read the header only (the plugin class itself: Image.open would run Pillow's warning-only bomb check)."""
    try:
        return _OPENERS[media_type](io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("the image has too many pixels (decompression bomb)") from exc
    except Exception as exc:  # Pillow raises SyntaxError, OSError, ValueError, struct.error... for bad headers
        raise InvalidImage(f"the image is not a valid {_name(media_type)} ({_reason(exc)})") from exc


def check_image(data: bytes, limits: ImageLimits | None = None) -> CheckedImage:
    """Decode and check one attachment; raises InvalidImage, UnsupportedImageType or ImageTooLarge."""
    limits = limits or ImageLimits()
    if len(data) > limits.max_image_size:
        raise ImageTooLarge(f"the image is larger than {limits.max_image_size} bytes")
    media_type = sniff(data)
    if media_type is None:
        raise UnsupportedImageType("the image must be JPEG, PNG or WebP")
    image = _open(data, media_type)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"the image is not a valid {_name(media_type)} (it has no pixels)")
    if width * height > limits.max_image_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} pixels, more than the {limits.max_image_pixels} allowed")
    try:
        if media_type == PNG:
            image.verify()  # chunk checksums; verify() leaves the image unusable, so open it again
            image = _open(data, media_type)
        image.load()  # decodes every pixel: a truncated file fails here
    except ImageTooLarge:
        raise
    except Exception as exc:
        raise InvalidImage(f"the image is not a valid {_name(media_type)} ({_reason(exc)})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if not _needs_reencoding(image, media_type):
        return CheckedImage(data, media_type, width, height, media_type, len(data), digest)
    try:
        out, out_type, (width, height) = _reencode(image, media_type)
    except Exception as exc:  # a pixel mode Pillow cannot convert
        raise InvalidImage(f"the image could not be converted for the model ({_reason(exc)})") from exc
    return CheckedImage(out, out_type, width, height, media_type, len(data), digest, converted=True)


def _needs_reencoding(image: Image.Image, media_type: str) -> bool:
    if media_type == WEBP or image.mode not in _PLAIN_MODES:
        return True
    return media_type == JPEG and image.getexif().get(_EXIF_ORIENTATION, 1) != 1


def _reencode(image: Image.Image, media_type: str) -> tuple[bytes, str, tuple[int, int]]:
    """The image upright, in a plain mode, as JPEG (photos without transparency) or PNG; no metadata."""
    if media_type == JPEG:
        image = ImageOps.exif_transpose(image)
    transparent = "A" in image.getbands() or "transparency" in image.info
    if transparent:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if media_type == JPEG and not transparent:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), JPEG, image.size
    image.save(buffer, "PNG")
    return buffer.getvalue(), PNG, image.size


def _name(media_type: str) -> str:
    return {JPEG: "JPEG", PNG: "PNG", WEBP: "WebP"}[media_type]


def _reason(exc: BaseException) -> str:
    """Pillow's own words, bounded (they name the defect, never a path: the image is in memory)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "..."
