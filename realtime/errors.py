"""One error tree. Every error has a stable `code` (sent to clients) and a message safe to show.

`ClientError`: the peer did something wrong; it gets an error event and, unless a limit closes the link,
the session carries on. `ServerError`: we (or an upstream) failed; the client gets a generic message,
details go to the log. Conditions that end the link map to a websocket close code (CloseCode below;
docs/protocol.md lists them all).
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Websocket close codes the server uses. 4xxx are ours (RFC 6455 leaves 4000-4999 to applications)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    PROTOCOL_ERROR = 1002  # sent by the websocket layer
    INVALID_PAYLOAD = 1007  # sent by the websocket layer: invalid UTF-8 in a text frame
    POLICY_VIOLATION = 1008  # handshake refused where no HTTP denial response can be sent
    MESSAGE_TOO_BIG = 1009  # sent by the websocket layer: message over REALTIME_MAX_MESSAGE_SIZE
    ABNORMAL = 1006  # never sent: how a link that ended without a close frame is recorded
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # session limits reached
    PING_TIMEOUT = 4000  # nothing received for ping_timeout seconds
    SLOW_CONSUMER = 4001  # the client stopped reading: outbound buffer stayed full for send_timeout
    SESSION_RESUMED = 4002  # the session was resumed on a newer link; this one is closed
    TOO_MANY_ERRORS = 4003  # a flood of invalid messages


class RealtimeError(Exception):
    """Root of every error the server raises on purpose."""

    code: str = "internal_error"
    safe_message: str = "Internal server error."

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message or self.safe_message)
        self.message = message or self.safe_message
        self.param = param


class ConfigError(RealtimeError):
    """A setting has a bad value; the message names the environment variable."""

    code = "config_error"


class ClientError(RealtimeError):
    """The client sent something we cannot act on. The message is written for the client."""

    code = "invalid_request"


class InvalidMessage(ClientError):
    """A frame that decodes, but is not a valid event (unknown type, missing or wrong field)."""

    code = "invalid_event"


class UnknownEventType(InvalidMessage):
    code = "unknown_event_type"


class MalformedFrame(ClientError):
    """A frame that is not valid msgpack/JSON, or not an object."""

    code = "malformed_frame"


class WrongFrameType(ClientError):
    """Text frame on a msgpack connection or binary frame on a JSON connection."""

    code = "wrong_frame_type"


class MessageTooLarge(ClientError):
    code = "message_too_large"


class InvalidState(ClientError):
    """A valid event that is not allowed in the session's current state."""

    code = "invalid_state"


class NoActiveResponse(InvalidState):
    code = "response_not_active"


class Forbidden(ClientError):
    code = "forbidden"


class ItemNotFound(ClientError):
    code = "item_not_found"


class LimitExceeded(ClientError):
    code = "limit_exceeded"


class InvalidImage(ClientError):
    """An attached image that does not decode (truncated, corrupt, or a lying header)."""

    code = "invalid_image"


class UnsupportedImageType(InvalidImage):
    """An attachment that is not a JPEG, PNG or WebP image."""

    code = "unsupported_image_type"


class ImageTooLarge(MessageTooLarge):
    """An image over the byte or pixel limit (a decompression bomb is refused before it is decoded)."""

    code = "image_too_large"


class ModelCannotSee(ClientError):
    """Images were sent to a model that has no vision (the response fails; the session goes on)."""

    code = "model_cannot_see"


class AuthError(ClientError):
    code = "unauthorized"


class ServerError(RealtimeError):
    """We failed. Never carries internals to the client."""

    code = "internal_error"


class UpstreamError(ServerError):
    """The LLM upstream failed; the message says which way, without internals."""

    code = "upstream_error"
    safe_message = "The language model service failed."


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    safe_message = "The language model service is not reachable."


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    safe_message = "The language model service did not answer in time."


class UpstreamProtocolError(UpstreamError):
    code = "upstream_bad_response"
    safe_message = "The language model service returned a response that could not be read."


class ModelNotFound(UpstreamError):
    code = "model_not_found"
    safe_message = "The requested model is not available."


class UpstreamRejected(UpstreamError):
    """The upstream refused the request (HTTP 4xx); its own message is passed on, as it is about the request."""

    code = "upstream_rejected"
    safe_message = "The language model service refused the request."
