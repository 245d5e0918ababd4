"""The I/O half of the adapter: a session Transport that speaks OpenAI's dialect on a Starlette websocket.

The session reads and writes our JSON protocol through it, exactly as on /ws; this class only moves
frames through the Translator (realtime/openai_compat/translator.py). Translation errors are answered
here (OpenAI error events) and count toward the same invalid-message limit as the session's own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.errors import CloseCode
from realtime.openai_compat.translator import Translator
from realtime.protocol.codec import Encoding, encode_frame
from realtime.session import ERROR_BURST, ERROR_REFILL_PER_S, PeerClosed

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class OpenAITransport:
    """Session Transport: OpenAI JSON frames on the socket, our JSON frames towards the session."""

    def __init__(self, websocket: WebSocket, translator: Translator) -> None:
        self._ws = websocket
        self._translator = translator
        self._inbound: deque[str | bytes] = deque([encode_frame(translator.opening(), Encoding.JSON)])
        self._send_lock = asyncio.Lock()  # the session's writer and our error replies share the socket
        self._error_tokens = float(ERROR_BURST)
        self._error_at = time.monotonic()
        self.on_error_flood: Callable[[], None] | None = None

    async def receive(self) -> bytes | str:
        while not self._inbound:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                raise PeerClosed(message.get("code", CloseCode.NORMAL))
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            events, replies = self._translator.from_client(data)
            if replies:
                await self._send_openai(replies)
                self._count_errors(len(replies))
            self._inbound.extend(encode_frame(event, Encoding.JSON) for event in events)
        return self._inbound.popleft()

    async def send(self, data: bytes | str) -> None:
        out = self._translator.from_server(json.loads(data))
        if out:
            await self._send_openai(out)

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def _send_openai(self, events: list[dict[str, Any]]) -> None:
        async with self._send_lock:
            for event in events:
                try:
                    await self._ws.send_text(_JSON.encode(event))
                except WebSocketDisconnect as exc:
                    raise PeerClosed(exc.code) from exc

    def _count_errors(self, n: int) -> None:
        """The session's token bucket (burst 50, 5/s), for the errors answered here."""
        now = time.monotonic()
        self._error_tokens = min(ERROR_BURST, self._error_tokens + (now - self._error_at) * ERROR_REFILL_PER_S) - n
        self._error_at = now
        if self._error_tokens < 0 and self.on_error_flood is not None:
            self.on_error_flood()
