"""Documents for the model: a user's stored library, a message's attachments, and a turn's context.

`DocumentLibrary` ties the pieces together: extraction (in a worker thread), chunking, embeddings
through Ollama's /api/embed, the PostgreSQL store (db.documents), and the context builder.

- Library: `add()` stores a document (chunks and vectors) for a user; `search()` retrieves passages.
- Attachments: `attach()` reads a file sent with a message. A short one (up to `inline_chars`) goes
  into the turn's context whole; a long one is chunked and embedded, kept in memory with the session
  (nothing is stored), and only its passages nearest the question go to the model.
- A turn: `turn_context()` gathers the attachments' passages and, if asked, the library's, and numbers
  them for the model (realtime.documents.context); `cited_sources()` maps the answer's [n] back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from db.documents import ChunkHit, DocumentLimitReached, Documents, NewChunk, StoredDocument
from db.users import as_uuid
from realtime.documents.chunking import Chunk, chunk_document
from realtime.documents.context import MAX_CONTEXT_CHARS, DocumentContext, Passage, build_context
from realtime.documents.embeddings import Embeddings
from realtime.documents.errors import DocumentTooLarge, LibraryFull
from realtime.documents.extract import DocumentLimits, ExtractedDocument, extract

if TYPE_CHECKING:
    from db import Database

log = logging.getLogger("realtime.documents")

INLINE_CHARS = 6000
MAX_DOCUMENTS = 1000
MAX_NAME_CHARS = 255


def clean_name(name: str | None) -> str:
    """A display name from a client's file name: no directories, no control characters, at most 255 chars."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:MAX_NAME_CHARS] or "document"


def _passage(hit: ChunkHit) -> Passage:
    return Passage(
        document_id=str(hit.document_id),
        document_name=hit.document_name,
        ordinal=hit.ordinal,
        text=hit.content,
        page=hit.page,
        section=hit.section,
        score=hit.similarity,
    )


@dataclass(frozen=True, slots=True, eq=False)
class Attachment:
    """A file attached to a message, read and ready: whole (`inline`) or chunked with vectors."""

    name: str
    media_type: str
    size_bytes: int
    sha256: str
    page_count: int | None
    char_count: int
    chunks: tuple[Chunk, ...]
    vectors: np.ndarray | None = field(default=None, repr=False)  # None: inline

    @property
    def inline(self) -> bool:
        return self.vectors is None

    def to_json(self) -> dict[str, Any]:
        """What to record with the message (messages.attachments): no text, no vectors."""
        return {
            "name": self.name,
            "media_type": self.media_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "page_count": self.page_count,
            "char_count": self.char_count,
            "mode": "inline" if self.inline else "retrieved",
        }

    def passages(self, query_vector: np.ndarray | None = None, limit: int = 5) -> list[Passage]:
        """Every chunk when inline; else the `limit` chunks nearest the query (none without one)."""
        if self.vectors is None:
            return [self._passage(c) for c in self.chunks]
        if query_vector is None or not self.chunks:
            return []
        scores = self.vectors @ query_vector
        best = np.argsort(-scores, kind="stable")[:limit]
        return [self._passage(self.chunks[i], float(scores[i])) for i in best]

    def _passage(self, chunk: Chunk, score: float | None = None) -> Passage:
        return Passage(None, self.name, chunk.ordinal, chunk.text, chunk.page, chunk.section, score)


class DocumentLibrary:
    """Documents for one server: `db` None means attachments only (no stored library)."""

    def __init__(
        self,
        db: Database | None,
        embeddings: Embeddings,
        *,
        limits: DocumentLimits | None = None,
        max_documents: int = MAX_DOCUMENTS,
        inline_chars: int = INLINE_CHARS,
        context_chars: int = MAX_CONTEXT_CHARS,
        passages: int = 5,
        hybrid: bool = True,
        extraction_slots: int = 1,
    ) -> None:
        self.store = Documents(db) if db is not None else None
        self.embeddings = embeddings
        self.limits = limits or DocumentLimits()
        self.max_documents = max_documents
        self.inline_chars = inline_chars
        self.context_chars = context_chars
        self.passages = passages
        self.hybrid = hybrid
        # pypdf on a long PDF holds a core for seconds: a bounded number at a time
        self._extracting = asyncio.Semaphore(extraction_slots)

    async def aclose(self) -> None:
        await self.embeddings.aclose()

    async def read(
        self, data: bytes, *, filename: str | None = None, declared_type: str | None = None
    ) -> ExtractedDocument:
        """Extract the text (DocumentError for anything unusable), off the event loop."""
        if len(data) > self.limits.max_size:
            raise DocumentTooLarge(
                f"The document has {len(data):,} bytes; at most {self.limits.max_size:,} are accepted."
            )
        async with self._extracting:
            return await asyncio.to_thread(
                extract, data, filename=filename, declared_type=declared_type, limits=self.limits
            )

    async def _embed_chunks(self, chunks: Sequence[Chunk]) -> np.ndarray:
        return await self.embeddings.embed([c.embedding_text() for c in chunks])

    # ---- library ----

    def _store(self) -> Documents:
        if self.store is None:
            raise RuntimeError("this server has no database: there is no document library")
        return self.store

    async def add(
        self, user_id: str, name: str | None, data: bytes, *, declared_type: str | None = None
    ) -> StoredDocument:
        """Read, chunk, embed and store a document in the user's library."""
        store = self._store()
        if await store.count(user_id) >= self.max_documents:  # before the work; create() checks again
            raise LibraryFull(f"The library holds {self.max_documents} documents, the most allowed.")
        display = clean_name(name)
        document = await self.read(data, filename=display, declared_type=declared_type)
        chunks = chunk_document(document)
        vectors = await self._embed_chunks(chunks)
        try:
            stored = await store.create(
                user_id,
                name=display,
                media_type=document.media_type,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).digest(),
                embed_model=self.embeddings.model,
                chunks=[
                    NewChunk(c.ordinal, c.text, vectors[i], page=c.page, section=c.section)
                    for i, c in enumerate(chunks)
                ],
                title=document.title,
                page_count=document.page_count,
                char_count=document.char_count,
                max_documents=self.max_documents,
            )
        except DocumentLimitReached as exc:
            raise LibraryFull(f"The library holds {self.max_documents} documents, the most allowed.") from exc
        log.info(
            "user %s stored document %s (%s, %d chars, %d chunks)",
            user_id,
            stored.id,
            document.kind,
            document.char_count,
            len(chunks),
        )
        return stored

    async def list(self, user_id: str) -> list[StoredDocument]:
        return await self._store().list(user_id)

    async def get(self, user_id: str, document_id: str) -> StoredDocument | None:
        return await self._store().get(user_id, document_id)

    async def delete(self, user_id: str, document_id: str) -> bool:
        return await self._store().delete(user_id, document_id)

    async def passage(self, user_id: str, document_id: str, ordinal: int) -> Passage | None:
        hit = await self._store().chunk(user_id, document_id, ordinal)
        return None if hit is None else _passage(hit)

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int | None = None,
        document_ids: Sequence[str] | None = None,
        hybrid: bool | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[Passage]:
        """The user's passages nearest `query`, best first (empty for a user with no stored library)."""
        if self.store is None or as_uuid(user_id) is None or not query.strip():
            return []
        if query_vector is None:
            query_vector = (await self.embeddings.embed([query]))[0]
        hits = await self.store.search(
            user_id,
            query_vector,
            embed_model=self.embeddings.model,
            limit=limit or self.passages,
            query_text=query if (self.hybrid if hybrid is None else hybrid) else None,
            document_ids=document_ids,
        )
        return [_passage(h) for h in hits]

    # ---- attachments and turns ----

    async def attach(self, name: str | None, data: bytes, *, declared_type: str | None = None) -> Attachment:
        """Read a file sent with a message: inline when short, else chunked and embedded (kept in memory)."""
        display = clean_name(name)
        document = await self.read(data, filename=display, declared_type=declared_type)
        chunks = tuple(chunk_document(document))
        vectors = None if document.char_count <= self.inline_chars else await self._embed_chunks(chunks)
        return Attachment(
            name=display,
            media_type=document.media_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            page_count=document.page_count,
            char_count=document.char_count,
            chunks=chunks,
            vectors=vectors,
        )

    async def turn_context(
        self,
        user_id: str | None,
        question: str,
        *,
        attachments: Sequence[Attachment] = (),
        library: bool = False,
        document_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> DocumentContext:
        """The numbered sources for one turn: inline attachments whole, then up to `limit` passages nearest
        the question: from long attachments first, then (with `library`, or limited to `document_ids`) from
        the user's library.

        The question is embedded once; EMPTY_CONTEXT (text "") when there is nothing to give."""
        limit = limit or self.passages
        passages = [p for a in attachments if a.inline for p in a.passages()]
        long_ones = [a for a in attachments if not a.inline]
        use_library = (library or document_ids is not None) and self.store is not None and user_id is not None
        if question.strip() and (long_ones or use_library):
            query_vector = (await self.embeddings.embed([question]))[0]
            # what was attached to this message comes first, nearest first; the library fills the rest
            retrieved = sorted(
                (p for a in long_ones for p in a.passages(query_vector, limit)), key=lambda p: -(p.score or 0.0)
            )
            if use_library and user_id is not None and len(retrieved) < limit:
                retrieved += await self.search(
                    user_id, question, limit=limit, document_ids=document_ids, query_vector=query_vector
                )
            passages += retrieved[:limit]
        return build_context(passages, max_chars=self.context_chars)
