"""A user's document library: documents and their chunks with embeddings (pgvector), and retrieval.

Every query takes the user's id and filters on it in SQL; a chunk carries its document's owner (a
foreign key keeps the two equal), so a search cannot reach another user's passages whatever the
other arguments say. Another user's document looks exactly like a missing one (None / False).

Retrieval ranks by cosine distance through the HNSW index; with `hnsw.iterative_scan` the index scan
goes on until enough of *this user's* chunks are found (a plain HNSW scan would stop after
`ef_search` candidates from everyone, and could return nothing for a small library). Hybrid mode fuses
the vector ranking with a full-text ranking (any of the query's words, English stemming) by
reciprocal rank fusion, so an exact term (a part number, a name) that embeddings blur still counts.

Vectors travel as pgvector's text form (`[0.1,0.2,...]`), cast in SQL: no codec to register.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg

from db.errors import DatabaseError
from db.users import as_uuid

if TYPE_CHECKING:
    from db.pool import Database

EMBEDDING_DIMENSIONS = 384
MAX_NAME_CHARS = 255
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al.): score = sum of 1 / (RRF_K + rank)
_COLUMNS = (
    "id, user_id, name, media_type, size_bytes, sha256, title, page_count, char_count, chunk_count, "
    "embed_model, created_at"
)


class DocumentLimitReached(DatabaseError):
    """The user's library already holds the most documents allowed."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    id: UUID
    user_id: UUID
    name: str
    media_type: str
    size_bytes: int
    sha256: str  # hex
    title: str | None
    page_count: int | None
    char_count: int
    chunk_count: int
    embed_model: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewChunk:
    ordinal: int
    content: str
    embedding: Sequence[float]
    page: int | None = None
    section: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkHit:
    """A retrieved passage. `similarity` is the cosine similarity (None when only full text found it);
    `score` orders the hits (the similarity, or the fused rank score in hybrid mode)."""

    document_id: UUID
    document_name: str
    ordinal: int
    content: str
    page: int | None
    section: str | None
    similarity: float | None
    score: float


def _document(row: asyncpg.Record) -> StoredDocument:
    return StoredDocument(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        media_type=row["media_type"],
        size_bytes=row["size_bytes"],
        sha256=bytes(row["sha256"]).hex(),
        title=row["title"],
        page_count=row["page_count"],
        char_count=row["char_count"],
        chunk_count=row["chunk_count"],
        embed_model=row["embed_model"],
        created_at=row["created_at"],
    )


def vector_text(values: Sequence[float]) -> str:
    """pgvector's text form of a vector (8 significant digits: float32 is stored)."""
    return "[" + ",".join(f"{float(v):.8g}" for v in values) + "]"


def _check_vector(values: Sequence[float]) -> None:
    if len(values) != EMBEDDING_DIMENSIONS:
        raise ValueError(f"an embedding has {EMBEDDING_DIMENSIONS} dimensions, not {len(values)}")


# The two candidate lists and their fusion. $1 user, $2 query vector, $3 model, $4 candidates per list,
# $5 document ids (NULL: all the user's documents), $6 query text, $7 results wanted. The vector list is
# MATERIALIZED so the relaxed-order index scan is re-sorted exactly (pgvector's advice).
_HYBRID_SQL = f"""
WITH vec AS MATERIALIZED (
    SELECT document_id, ordinal, embedding <=> $2::text::vector AS distance
    FROM document_chunks
    WHERE user_id = $1 AND embed_model = $3 AND ($5::uuid[] IS NULL OR document_id = ANY($5::uuid[]))
    ORDER BY distance
    LIMIT $4
),
vec_ranked AS (
    SELECT document_id, ordinal, distance, row_number() OVER (ORDER BY distance) AS rank FROM vec
),
query AS (
    SELECT replace(plainto_tsquery('english', $6)::text, ' & ', ' | ')::tsquery AS q
),
fts AS (
    SELECT c.document_id, c.ordinal,
           row_number() OVER (ORDER BY ts_rank_cd(c.content_tsv, query.q) DESC, c.document_id, c.ordinal) AS rank
    FROM document_chunks c, query
    WHERE c.user_id = $1 AND c.embed_model = $3 AND ($5::uuid[] IS NULL OR c.document_id = ANY($5::uuid[]))
      AND c.content_tsv @@ query.q
    ORDER BY rank
    LIMIT $4
),
fused AS (
    SELECT document_id, ordinal, sum(1.0 / ({RRF_K} + rank)) AS score
    FROM (SELECT document_id, ordinal, rank FROM vec_ranked UNION ALL SELECT document_id, ordinal, rank FROM fts) r
    GROUP BY document_id, ordinal
)
SELECT f.document_id, d.name, f.ordinal, c.content, c.page, c.section, 1 - v.distance AS similarity,
       f.score::float8 AS score
FROM fused f
JOIN document_chunks c ON c.document_id = f.document_id AND c.ordinal = f.ordinal AND c.user_id = $1
JOIN documents d ON d.id = f.document_id AND d.user_id = $1
LEFT JOIN vec_ranked v ON v.document_id = f.document_id AND v.ordinal = f.ordinal
ORDER BY f.score DESC, similarity DESC NULLS LAST, f.document_id, f.ordinal
LIMIT $7
"""

_VECTOR_SQL = """
WITH vec AS MATERIALIZED (
    SELECT document_id, ordinal, embedding <=> $2::text::vector AS distance
    FROM document_chunks
    WHERE user_id = $1 AND embed_model = $3 AND ($5::uuid[] IS NULL OR document_id = ANY($5::uuid[]))
    ORDER BY distance
    LIMIT $4
)
SELECT v.document_id, d.name, v.ordinal, c.content, c.page, c.section, 1 - v.distance AS similarity,
       1 - v.distance AS score
FROM vec v
JOIN document_chunks c ON c.document_id = v.document_id AND c.ordinal = v.ordinal AND c.user_id = $1
JOIN documents d ON d.id = v.document_id AND d.user_id = $1
ORDER BY v.distance, v.document_id, v.ordinal
"""


def _hit(row: asyncpg.Record) -> ChunkHit:
    return ChunkHit(
        document_id=row["document_id"],
        document_name=row["name"],
        ordinal=row["ordinal"],
        content=row["content"],
        page=row["page"],
        section=row["section"],
        similarity=None if row["similarity"] is None else float(row["similarity"]),
        score=float(row["score"]),
    )


class Documents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        user_id: UUID | str,
        *,
        name: str,
        media_type: str,
        size_bytes: int,
        sha256: bytes,
        embed_model: str,
        chunks: Sequence[NewChunk],
        title: str | None = None,
        page_count: int | None = None,
        char_count: int = 0,
        max_documents: int | None = None,
    ) -> StoredDocument:
        """Store a document and all its chunks in one transaction.

        DocumentLimitReached when the user already has `max_documents`; ValueError for a bad argument
        (an unknown or deleted user, a name too long, an embedding of the wrong size)."""
        uid = as_uuid(user_id)
        if uid is None:
            raise ValueError("user_id is not a UUID")
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise ValueError(f"a document name has 1 to {MAX_NAME_CHARS} characters")
        for chunk in chunks:
            _check_vector(chunk.embedding)
        async with self._db.transaction() as con:
            # the user's row serialises their uploads, so the count below cannot be raced past
            live = await con.fetchval("SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", uid)
            if live is None:
                raise ValueError("no such user")
            if max_documents is not None:
                count = await con.fetchval("SELECT count(*) FROM documents WHERE user_id = $1", uid)
                if count >= max_documents:
                    raise DocumentLimitReached(f"the library holds {count} documents (at most {max_documents})")
            row = await con.fetchrow(
                "INSERT INTO documents (user_id, name, media_type, size_bytes, sha256, title, page_count, "
                "char_count, chunk_count, embed_model) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                f"RETURNING {_COLUMNS}",
                uid,
                name,
                media_type,
                size_bytes,
                sha256,
                title,
                page_count,
                char_count,
                len(chunks),
                embed_model,
            )
            assert row is not None
            if chunks:
                await con.execute(
                    "INSERT INTO document_chunks (document_id, user_id, embed_model, ordinal, page, section, "
                    "content, embedding) SELECT $1, $2, $3, o, p, s, c, e::vector "
                    "FROM unnest($4::int[], $5::int[], $6::text[], $7::text[], $8::text[]) AS t(o, p, s, c, e)",
                    row["id"],
                    uid,
                    embed_model,
                    [c.ordinal for c in chunks],
                    [c.page for c in chunks],
                    [c.section for c in chunks],
                    [c.content for c in chunks],
                    [vector_text(c.embedding) for c in chunks],
                )
        return _document(row)

    async def count(self, user_id: UUID | str) -> int:
        uid = as_uuid(user_id)
        if uid is None:
            return 0
        async with self._db.connection() as con:
            return await con.fetchval("SELECT count(*) FROM documents WHERE user_id = $1", uid)

    async def list(self, user_id: UUID | str) -> list[StoredDocument]:
        """The user's documents, newest first."""
        uid = as_uuid(user_id)
        if uid is None:
            return []
        async with self._db.connection() as con:
            rows = await con.fetch(
                f"SELECT {_COLUMNS} FROM documents WHERE user_id = $1 ORDER BY created_at DESC, id DESC", uid
            )
        return [_document(r) for r in rows]

    async def get(self, user_id: UUID | str, document_id: UUID | str) -> StoredDocument | None:
        uid, did = as_uuid(user_id), as_uuid(document_id)
        if uid is None or did is None:
            return None
        async with self._db.connection() as con:
            row = await con.fetchrow(f"SELECT {_COLUMNS} FROM documents WHERE id = $1 AND user_id = $2", did, uid)
        return None if row is None else _document(row)

    async def delete(self, user_id: UUID | str, document_id: UUID | str) -> bool:
        """Delete the document and its chunks; False if missing or another user's."""
        uid, did = as_uuid(user_id), as_uuid(document_id)
        if uid is None or did is None:
            return False
        async with self._db.connection() as con:
            deleted = await con.fetchval("DELETE FROM documents WHERE id = $1 AND user_id = $2 RETURNING id", did, uid)
        return deleted is not None

    async def chunk(self, user_id: UUID | str, document_id: UUID | str, ordinal: int) -> ChunkHit | None:
        """One passage of the user's document (what a citation points at)."""
        uid, did = as_uuid(user_id), as_uuid(document_id)
        if uid is None or did is None or not 0 <= ordinal < 2**31:
            return None
        async with self._db.connection() as con:
            row = await con.fetchrow(
                "SELECT c.document_id, d.name, c.ordinal, c.content, c.page, c.section, "
                "NULL::float8 AS similarity, 0::float8 AS score FROM document_chunks c "
                "JOIN documents d ON d.id = c.document_id AND d.user_id = $1 "
                "WHERE c.document_id = $2 AND c.ordinal = $3 AND c.user_id = $1",
                uid,
                did,
                ordinal,
            )
        return None if row is None else _hit(row)

    async def search(
        self,
        user_id: UUID | str,
        embedding: Sequence[float],
        *,
        embed_model: str,
        limit: int = 5,
        query_text: str | None = None,
        document_ids: Sequence[UUID | str] | None = None,
        candidates: int = 40,
    ) -> list[ChunkHit]:
        """The user's `limit` best passages for the query embedding, best first.

        With `query_text`, hybrid: the `candidates` nearest and the `candidates` best full-text matches,
        fused by reciprocal rank. `document_ids` narrows the search to those of the user's documents."""
        _check_vector(embedding)
        uid = as_uuid(user_id)
        if uid is None or limit < 1:
            return []
        ids: list[UUID] | None = None
        if document_ids is not None:
            ids = [u for u in (as_uuid(d) for d in document_ids) if u is not None]
            if not ids:
                return []
        candidates = max(candidates, limit)
        async with self._db.transaction(readonly=True) as con:
            # A custom plan each time: asyncpg prepares statements, and after five runs PostgreSQL may switch to
            # a generic plan, which cannot see that $5 is NULL nor what the tsquery matches (10x slower here).
            await con.execute(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                "set_config('hnsw.ef_search', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true)",
                str(max(40, 2 * candidates)),
            )
            if query_text and query_text.strip():
                rows = await con.fetch(
                    _HYBRID_SQL, uid, vector_text(embedding), embed_model, candidates, ids, query_text, limit
                )
            else:
                rows = await con.fetch(_VECTOR_SQL, uid, vector_text(embedding), embed_model, limit, ids)
        return [_hit(r) for r in rows]
