"""`Stores`: the four stores on one database, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from app.db.pool import Database
from app.repositories.conversations import ConversationStore
from app.repositories.directory import DirectoryStore
from app.repositories.inbox import InboxStore
from app.repositories.outbound import OutboundStore


@dataclass(frozen=True, slots=True)
class Stores:
    """Each service asks only for the store it needs; `database` opens transactions that
    span several of them."""

    database: Database
    inbox: InboxStore
    outbound: OutboundStore
    conversations: ConversationStore
    directory: DirectoryStore

    @classmethod
    def on(cls, database: Database) -> Stores:
        return cls(
            database=database,
            inbox=InboxStore(database),
            outbound=OutboundStore(database),
            conversations=ConversationStore(database),
            directory=DirectoryStore(database),
        )
