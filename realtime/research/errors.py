"""The research errors: each a ClientError or ServerError of realtime.errors with its own stable code."""

from __future__ import annotations

from realtime.errors import ClientError, ServerError


class ResearchUnavailable(ClientError):
    """A research turn was asked for, but this server has no search backend (REALTIME_SEARCH_BACKEND=off)."""

    code = "research_unavailable"
    safe_message = "Web research is not available on this server (no search backend is configured)."


class SearchFailed(ServerError):
    """Every search of a research turn failed (the backend is down, refused, or answered nonsense)."""

    code = "search_failed"
    safe_message = "The web search service failed."


class FetchRefused(Exception):
    """One page was not used; `reason` says why (a short stable word for logs and tests).

    Not a RealtimeError: a page that cannot be read is skipped, never reported to the client."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
