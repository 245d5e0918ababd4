"""uvicorn's protocols with what they lack: a deadline for the request headers, and a websocket protocol
that answers a bad handshake instead of hanging.

`RealtimeH11Protocol`: uvicorn (0.55) waits for a request's line and headers as long as the client likes,
so a client that connects and sends nothing, or half a request (slowloris), holds its connection and file
descriptor forever. The request line and headers must be complete within `handshake_timeout` seconds of
the connection opening (and of the first byte of each later request on a kept-alive connection), or the
connection is closed without an answer, as nginx does with `client_header_timeout`.

`RealtimeWebSocketProtocol`: with an oversized header line, too many headers or a malformed request,
`websockets` rejects the handshake (431/414/400) inside its sans-I/O state, but uvicorn 0.54 never writes
that answer out, so the client hangs until its own timeout. We flush the rejection and close the transport.
It also offers the application a direct receiver (`DIRECT_RECEIVE`, an ASGI scope extension): a synchronous
handler that may take a message as it comes off the socket, without the queue and the task switch that every
message otherwise costs (under streaming audio, the hand-off was the largest single cost of the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import h11
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

log = logging.getLogger("realtime.server")

# The scope extension under which a websocket connection offers its direct receiver: a function that installs
# (or, with None, removes) the connection's handler. See `RealtimeWebSocketProtocol`.
DIRECT_RECEIVE = "realtime.direct_receive"
DirectHandler = Callable[[bytes | str], bool]


class RealtimeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete in time.

    Built per connection by uvicorn; pass `functools.partial(RealtimeH11Protocol, handshake_timeout=...)` as
    uvicorn's `http`. `None` disables the deadline."""

    def __init__(self, *args: Any, handshake_timeout: float | None = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout = handshake_timeout
        self._headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._headers_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        # A whole request (an upgrade hands the connection to the websocket protocol), or closed.
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._handshake_timeout is not None:
            self._headers_deadline = self.loop.call_later(self._handshake_timeout, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_timed_out(self) -> None:
        self._headers_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection: no complete request within %s s", self._handshake_timeout)
            self.transport.close()


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    """Also: an inbound queue of `ws_max_queue` messages. uvicorn's sans-I/O protocol stops reading the socket
    after every message until the application takes it (two `epoll_ctl` calls per message, ~6 % of the event
    loop under streaming audio, and `ws_max_queue` ignored). Here reading stops when the queue holds
    `ws_max_queue` messages or `ws_max_size` bytes (so what waits stays within about twice the largest
    message), and resumes when the application has taken it down to a quarter of both.

    And a direct receiver: the application may install a handler through `scope["extensions"][DIRECT_RECEIVE]`.
    Each whole message is offered to it before the queue, but only while the queue is empty (so that no
    message overtakes one queued before it); a handler returning True has taken the message, False leaves it
    to the queue and the application's `receive`. The handler runs inside `data_received`, so it must be
    quick, must not block, and must decide itself whether taking a message now keeps the application's order
    (its reader idle, say). A handler that raises is logged and removed, and that message is queued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_queue = max(1, self.config.ws_max_queue)
        self._max_queued_size = self.config.ws_max_size
        self._queued_sizes: deque[int] = deque()  # of the messages in the queue, in order
        self._queued_size = 0
        self._direct: DirectHandler | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response is not None and self.response.status_code == 101:
            self.scope["extensions"][DIRECT_RECEIVE] = self._install_direct

    def _install_direct(self, handler: DirectHandler | None) -> None:
        self._direct = handler

    def connection_lost(self, exc: Exception | None) -> None:
        self._direct = None  # drop the application's closure with the connection
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.handshake_complete or self.conn.handshake_exc is None or self.transport.is_closing():
            return
        log.info("refused websocket handshake: %s", self.conn.handshake_exc)
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))
        self.handshake_complete = True
        self.close_sent = True
        self.transport.close()

    def send_receive_event_to_app(self) -> None:
        """One whole message to the application's queue. A text message with invalid UTF-8 gets close 1007, as
        in uvicorn, but without uvicorn's ERROR log and traceback for each one (any client could flood the log
        with them)."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past `websocket.close`: dropped, as in uvicorn, so reads go on until the peer's close
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                log.info("closed websocket: invalid UTF-8 in a text message")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            if self._direct is not None and self.queue.empty() and self._offer(text):
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            if self._direct is not None and self.queue.empty() and self._offer(data):
                return
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        self._queued_sizes.append(len(data))
        self._queued_size += len(data)
        if not self.read_paused and (
            self.queue.qsize() >= self._max_queue or self._queued_size >= self._max_queued_size
        ):
            self.read_paused = True
            self.transport.pause_reading()

    def _offer(self, message: bytes | str) -> bool:
        assert self._direct is not None
        try:
            return self._direct(message)
        except Exception:
            log.exception("direct receiver failed: removed, messages go through the queue")
            self._direct = None
            return False

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if message["type"] == "websocket.receive":
            self._queued_size -= self._queued_sizes.popleft()
        if (
            self.read_paused
            and self.queue.qsize() <= self._max_queue // 4
            and self._queued_size <= self._max_queued_size // 4
        ):
            self.read_paused = False
            self.transport.resume_reading()
        return message
