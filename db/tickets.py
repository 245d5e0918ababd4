"""Single-use websocket tickets: a browser trades its token for a ticket over HTTP, then opens
`/ws?ticket=...`, so the long-lived token never sits in a URL (logs, history, Referer).

Only a SHA-256 of each ticket is stored. Redeeming marks the ticket used in the same statement that
checks it, so two concurrent redeems of one ticket cannot both succeed. Expiry is judged by the
database's clock.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING
from uuid import UUID

from db.users import as_uuid

if TYPE_CHECKING:
    from db.pool import Database

MAX_TICKET_LEN = 128


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


class Tickets:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def issue(self, user_id: UUID | str, ttl_s: float = 30.0) -> str:
        """A new random ticket for the user, valid for `ttl_s` seconds and for one redeem."""
        uid = as_uuid(user_id)
        if uid is None:
            raise ValueError("user_id is not a UUID")
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        ticket = secrets.token_urlsafe(32)
        async with self._db.transaction() as con:
            # the user's own expired tickets go here, so the table does not grow without a sweeper
            await con.execute("DELETE FROM ws_tickets WHERE user_id = $1 AND expires_at < now()", uid)
            await con.execute(
                "INSERT INTO ws_tickets (ticket_hash, user_id, expires_at) "
                "VALUES ($1, $2, now() + make_interval(secs => $3))",
                _digest(ticket),
                uid,
                float(ttl_s),
            )
        return ticket

    async def redeem(self, ticket: str) -> UUID | None:
        """The ticket's user, once; None if unknown, used, expired, or the user was deleted since."""
        if not isinstance(ticket, str) or not 0 < len(ticket) <= MAX_TICKET_LEN:
            return None
        async with self._db.connection() as con:
            return await con.fetchval(
                "UPDATE ws_tickets AS t SET used_at = clock_timestamp() FROM users AS u "
                "WHERE t.ticket_hash = $1 AND t.used_at IS NULL AND t.expires_at > clock_timestamp() "
                "AND u.id = t.user_id AND u.deleted_at IS NULL RETURNING t.user_id",
                _digest(ticket),
            )

    async def purge_expired(self) -> int:
        """Delete every expired ticket (used or not); how many went."""
        async with self._db.connection() as con:
            status = await con.execute("DELETE FROM ws_tickets WHERE expires_at < now()")
        return int(status.split()[-1])
