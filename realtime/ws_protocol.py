"""uvicorn's sans-I/O websocket protocol, fixed to answer a bad handshake instead of hanging.

With an oversized header line, too many headers or a malformed request, `websockets` rejects the
handshake (431/414/400) inside its sans-I/O state, but uvicorn 0.54 never writes that answer out, so the
client hangs until its own timeout. We flush the rejection and close the transport.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("realtime.server")


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
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
        """A text message with invalid UTF-8 gets close 1007, as in uvicorn, but without uvicorn's ERROR log
        and traceback for each one (any client could flood the log with them)."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = [data]
            if not data.isascii():
                try:
                    data.decode()
                except UnicodeDecodeError:
                    log.info("closed websocket: invalid UTF-8 in a text message")
                    self.frames = []
                    self.conn.send_close(1007)
                    self.handle_parser_exception()
                    return
        super().send_receive_event_to_app()
