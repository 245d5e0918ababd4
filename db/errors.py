"""One error tree for the persistence layer. `db/` imports nothing from realtime/, so it has its own root."""

from __future__ import annotations


class DatabaseError(Exception):
    """Root of every error db/ raises on purpose."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached, or the link broke mid-call; retrying later may succeed."""


class MigrationError(DatabaseError):
    """The migration files or the recorded history are inconsistent; the schema was not changed."""


class UsernameTaken(DatabaseError):
    """Another live account already has this username (compared case-insensitively)."""

    def __init__(self, username: str) -> None:
        super().__init__(f"username {username!r} is taken")
        self.username = username


class ConversationNotFound(DatabaseError):
    """No conversation has this id (a write needs one to exist)."""


class EmbeddedPostgresError(DatabaseError):
    """The embedded PostgreSQL server could not be started or stopped; the message says where its log is."""
