"""A small Python client for programs, tests and benchmarks (asyncio, `websockets`).

async with await RealtimeClient.connect("ws://127.0.0.1:8000/ws", token) as client:
    result = await client.ask("Hello!")
    print(result.text)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

from realtime.protocol.client_events import ConversationItemCreate, InputText, Pong, ResponseCreate
from realtime.protocol.codec import Encoding, decode_frame, encode_frame

MAX_CLIENT_MESSAGE = 64 << 20


@dataclass
class ResponseResult:
    """Everything one response sent, in order."""

    response_id: str
    text: str
    reasoning: str
    status: str
    done: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


class RealtimeClient:
    def __init__(
        self, ws: ClientConnection, encoding: Encoding, *, auto_pong: bool = True, recv_timeout: float | None = 60.0
    ) -> None:
        self.ws = ws
        self.encoding = encoding
        self.auto_pong = auto_pong
        self.recv_timeout = recv_timeout  # bound on each wait for one event; wrap calls in asyncio.timeout for more
        self.session: dict[str, Any] = {}
        self.pings = 0
        self.last_seq = 0  # the newest event seen: what a resume asks to be replayed after
        self._pending: dict[str, Any] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None,
        *,
        encoding: Encoding = Encoding.MSGPACK,
        origin: str | None = None,
        auto_pong: bool = True,
        recv_timeout: float | None = 60.0,
        open_timeout: float = 10.0,
        resume: tuple[str, str, int] | None = None,
        **kwargs: Any,
    ) -> RealtimeClient:
        """Open a session and read its first event (session.created; or, resuming with
        (session_id, resume_secret, last_seq), the first replayed event)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if resume is not None:
            session_id, secret, last_seq = resume
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}{urlencode({'resume': session_id, 'resume_secret': secret, 'last_seq': last_seq})}"
        ws = await connect(
            url,
            subprotocols=[encoding.subprotocol],  # type: ignore[list-item]
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]
            max_size=MAX_CLIENT_MESSAGE,
            open_timeout=open_timeout,
            ping_interval=None,
            **kwargs,
        )
        client = cls(ws, encoding, auto_pong=auto_pong, recv_timeout=recv_timeout)
        if resume is not None:
            client.last_seq = resume[2]
            return client
        first = await client.recv()
        if first.get("type") == "session.created":
            client.session = first["session"]
        else:
            client._pending = first
        return client

    def resume_args(self) -> tuple[str, str, int]:
        """What `connect(resume=...)` needs to get this session back after a dropped link."""
        return self.session["id"], self.session["resume_secret"], self.last_seq

    async def __aenter__(self) -> RealtimeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, event: Mapping[str, Any] | Any) -> None:
        wire = event if isinstance(event, Mapping) else event.to_wire()
        await self.ws.send(encode_frame(wire, self.encoding))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def recv(self, *, skip_pings: bool = True) -> dict[str, Any]:
        """The next server event (pings are answered, and skipped unless skip_pings is False)."""
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        async with asyncio.timeout(self.recv_timeout):
            while True:
                data = await self.ws.recv()
                event = decode_frame(data, self.encoding, max_size=MAX_CLIENT_MESSAGE)
                if isinstance(event.get("seq"), int):
                    self.last_seq = event["seq"]
                if event.get("type") in ("session.created", "session.resumed"):
                    self.session = event["session"]
                if event.get("type") == "ping":
                    self.pings += 1
                    if self.auto_pong:
                        await self.send(Pong(ts=event["ts"]))
                    if skip_pings:
                        continue
                return event

    async def recv_until(self, type_: str) -> list[dict[str, Any]]:
        """Events up to and including the first of `type_`."""
        out = []
        while True:
            event = await self.recv()
            out.append(event)
            if event.get("type") == type_:
                return out

    async def ask(self, text: str, **overrides: Any) -> ResponseResult:
        """Send a user message and a response.create; collect the response to its end."""
        await self.send(ConversationItemCreate("user", (InputText(text),)))
        await self.send(ResponseCreate(overrides))
        return await self.collect_response()

    async def collect_response(self) -> ResponseResult:
        """Read events until the response.done of the next response."""
        events: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        text: list[str] = []
        reasoning: list[str] = []
        response_id = ""
        while True:
            event = await self.recv()
            events.append(event)
            kind = event.get("type")
            if kind == "response.created":
                response_id = event["response"]["id"]
            elif kind == "response.text.delta":
                text.append(event["delta"])
            elif kind == "response.reasoning.delta":
                reasoning.append(event["delta"])
            elif kind == "error":
                errors.append(event)
            elif kind == "response.done":
                done = event["response"]
                return ResponseResult(
                    response_id or done["id"], "".join(text), "".join(reasoning), done["status"], event, events, errors
                )
