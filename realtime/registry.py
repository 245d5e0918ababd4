"""Live sessions by user, with total and per-user limits, so a refusal can be clear and immediate."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol

from realtime.errors import LimitExceeded


class TooManySessions(LimitExceeded):
    code = "too_many_sessions"


class Closable(Protocol):
    session_id: str
    user: str

    def request_close(self, code: int, reason: str) -> None: ...


class SessionRegistry:
    def __init__(self, max_total: int, max_per_user: int) -> None:
        self.max_total = max_total
        self.max_per_user = max_per_user
        self._by_user: dict[str, dict[str, Closable]] = defaultdict(dict)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Closable]:
        for sessions in list(self._by_user.values()):
            yield from list(sessions.values())

    def check(self, user: str) -> None:
        """Raise TooManySessions if one more session for `user` would break a limit."""
        if self._count >= self.max_total:
            raise TooManySessions("The server is at its session limit; try again later.")
        if len(self._by_user.get(user, ())) >= self.max_per_user:
            raise TooManySessions(f"Too many open sessions for this user (limit {self.max_per_user}).")

    def add(self, session: Closable) -> None:
        self.check(session.user)
        self._by_user[session.user][session.session_id] = session
        self._count += 1

    def remove(self, session: Closable) -> None:
        sessions = self._by_user.get(session.user)
        if sessions and sessions.pop(session.session_id, None) is not None:
            self._count -= 1
            if not sessions:
                del self._by_user[session.user]

    def count_for(self, user: str) -> int:
        return len(self._by_user.get(user, ()))
