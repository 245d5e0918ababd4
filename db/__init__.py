"""Persistence: an asyncpg pool over PostgreSQL, plain-SQL migrations, and small repositories.

Imports nothing from realtime/. Entry points: `Database.connect(url)` then `await db.migrate()`;
`EmbeddedPostgres(pgdata).start()` for a local server.
"""

from db.conversations import Conversations, Messages
from db.embedded import EmbeddedPostgres
from db.errors import (
    ConversationNotFound,
    DatabaseError,
    DatabaseUnavailable,
    EmbeddedPostgresError,
    MigrationError,
    UsernameTaken,
)
from db.models import MESSAGE_ROLES, MESSAGE_STATUSES, USER_ROLES, Conversation, ConversationPage, Message, User
from db.pool import Database
from db.tickets import Tickets
from db.users import Users

__all__ = [
    "MESSAGE_ROLES",
    "MESSAGE_STATUSES",
    "USER_ROLES",
    "Conversation",
    "ConversationNotFound",
    "ConversationPage",
    "Conversations",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "Message",
    "Messages",
    "MigrationError",
    "Tickets",
    "User",
    "UsernameTaken",
    "Users",
]
