"""The library on real PostgreSQL (pgvector) with the real embedding model: each format stored and the
answering passage retrieved for a question, citations naming document and passage, isolation between
users, attachments inline and retrieved."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from db import Database, User
from db.documents import StoredDocument
from realtime.documents import (
    DocumentEncrypted,
    DocumentLibrary,
    LibraryFull,
    OllamaEmbeddings,
    UnsupportedDocumentType,
    cited_sources,
)
from tests.documents.conftest import new_user
from tests.documents.corpus import CASES, PART_FACT, Case
from tests.documents.fixtures import make_pdf


@pytest.fixture(scope="module")
async def owner(
    library: DocumentLibrary, documents_db: Database
) -> AsyncIterator[tuple[User, dict[str, StoredDocument]]]:
    """A user whose library holds the whole corpus."""
    user = await new_user(documents_db)
    stored = {case.name: await library.add(str(user.id), case.name, case.data) for case in CASES}
    yield user, stored


async def test_documents_are_stored_with_their_chunks(
    owner: tuple[User, dict[str, StoredDocument]], documents_db: Database
) -> None:
    """Each format is stored with its sniffed type, page count (PDF), and one row per chunk with a vector."""
    user, stored = owner
    kinds = {name: doc.media_type for name, doc in stored.items()}
    assert kinds["pump-manual.pdf"] == "application/pdf" and kinds["garden.md"] == "text/markdown"
    assert kinds["sourdough.html"] == "text/html" and kinds["car.txt"] == "text/plain"
    assert stored["pump-manual.pdf"].page_count == 3 and stored["pump-manual.pdf"].title == "Aquaflow pump manual"
    async with documents_db.connection() as con:
        rows = await con.fetch(
            "SELECT document_id, count(*) AS n, min(vector_dims(embedding)) AS dims FROM document_chunks "
            "WHERE user_id = $1 GROUP BY document_id",
            user.id,
        )
    assert {r["document_id"]: r["n"] for r in rows} == {d.id: d.chunk_count for d in stored.values()}
    assert all(r["dims"] == 384 for r in rows)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_question_retrieves_the_answering_passage(
    case: Case, owner: tuple[User, dict[str, StoredDocument]], library: DocumentLibrary
) -> None:
    """Among all five documents, the best passage for the question is the one holding the answer, with
    its page or section; the turn's context numbers it [1] and a [1] citation names it."""
    user, stored = owner
    passages = await library.search(str(user.id), case.question, limit=3)
    best = passages[0]
    assert best.document_id == str(stored[case.name].id) and best.document_name == case.name
    assert case.fact in best.text
    assert (best.page, best.section) == (case.page, case.section)
    context = await library.turn_context(str(user.id), case.question, library=True, limit=3)
    assert context.sources[0].passage == best
    assert "[1] " + case.name in context.text
    cited = cited_sources("The answer is in the manual [1].", context)
    assert [(s.passage.document_name, s.passage.ordinal) for s in cited] == [(case.name, best.ordinal)]


async def test_hybrid_search_finds_an_exact_part_number(
    owner: tuple[User, dict[str, StoredDocument]], library: DocumentLibrary
) -> None:
    """A code like XK-4410 means little to the embedding; the full-text half of hybrid search finds it."""
    user, _ = owner
    passages = await library.search(str(user.id), "XK-4410", limit=3, hybrid=True)
    assert PART_FACT in passages[0].text and passages[0].page == 3


async def test_another_user_retrieves_nothing_of_mine(
    owner: tuple[User, dict[str, StoredDocument]], library: DocumentLibrary, documents_db: Database
) -> None:
    """Another user's searches, even naming my document ids, find nothing of mine; my documents are
    'not found' to them; their own copy of a document is all they retrieve."""
    _, stored = owner
    stranger = await new_user(documents_db)
    sid = str(stranger.id)
    mine = [str(d.id) for d in stored.values()]
    for case in CASES:
        assert await library.search(sid, case.question) == []
        assert await library.search(sid, case.question, document_ids=mine) == []
    pump = stored["pump-manual.pdf"]
    assert await library.get(sid, str(pump.id)) is None
    assert await library.passage(sid, str(pump.id), 0) is None
    assert await library.delete(sid, str(pump.id)) is False
    assert [d.id for d in await library.list(sid)] == []
    theirs = await library.add(sid, "copy.pdf", CASES[0].data)
    found = await library.search(sid, CASES[0].question, limit=10)
    assert found and {p.document_id for p in found} == {str(theirs.id)}
    context = await library.turn_context(sid, CASES[0].question, library=True, document_ids=mine)
    assert context.sources == ()


async def test_a_chunk_cannot_belong_to_another_users_document(
    owner: tuple[User, dict[str, StoredDocument]], documents_db: Database
) -> None:
    """The schema itself refuses a chunk whose owner is not its document's owner."""
    _, stored = owner
    stranger = await new_user(documents_db)
    doc = stored["car.txt"]
    async with documents_db.connection() as con:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await con.execute(
                "INSERT INTO document_chunks (document_id, ordinal, user_id, embed_model, content, embedding) "
                "VALUES ($1, 999, $2, $3, 'x', array_fill(0.1, ARRAY[384])::vector)",
                doc.id,
                stranger.id,
                doc.embed_model,
            )


async def test_delete_removes_the_chunks(library: DocumentLibrary, documents_db: Database) -> None:
    """Deleting a document deletes its chunks; searching afterwards finds nothing."""
    user = await new_user(documents_db)
    doc = await library.add(str(user.id), "car.txt", CASES[4].data)
    assert await library.delete(str(user.id), str(doc.id)) is True
    async with documents_db.connection() as con:
        assert await con.fetchval("SELECT count(*) FROM document_chunks WHERE document_id = $1", doc.id) == 0
    assert await library.search(str(user.id), CASES[4].question) == []


async def test_bad_files_are_refused_and_nothing_stored(library: DocumentLibrary, documents_db: Database) -> None:
    """An encrypted PDF or an image raises its DocumentError; the library stays empty."""
    user = await new_user(documents_db)
    with pytest.raises(DocumentEncrypted):
        await library.add(str(user.id), "locked.pdf", make_pdf([["secret"]], password="pw"))
    with pytest.raises(UnsupportedDocumentType):
        await library.add(str(user.id), "photo.pdf", b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert await library.list(str(user.id)) == []


async def test_library_size_is_limited(documents_db: Database, embeddings: OllamaEmbeddings) -> None:
    """Past max_documents, add() is LibraryFull."""
    small = DocumentLibrary(documents_db, embeddings, max_documents=1)
    user = await new_user(documents_db)
    await small.add(str(user.id), "car.txt", CASES[4].data)
    with pytest.raises(LibraryFull):
        await small.add(str(user.id), "garden.md", CASES[3].data)


async def test_short_attachment_goes_whole_into_the_context(embeddings: OllamaEmbeddings) -> None:
    """A short attachment is inline: every chunk is a source, no embedding needed; works without a database."""
    library = DocumentLibrary(None, embeddings)
    attachment = await library.attach("garden.md", CASES[3].data)
    assert attachment.inline and attachment.to_json()["mode"] == "inline"
    context = await library.turn_context(None, "When should I water my tomatoes?", attachments=[attachment])
    assert {s.passage.section for s in context.sources} == {"Soil", "Tomatoes", "Beans"}
    tomato = next(s for s in context.sources if s.passage.section == "Tomatoes")
    cited = cited_sources(f"Water at the base in the morning [{tomato.number}].", context)
    assert cited[0].label == "garden.md, section \u201cTomatoes\u201d"


async def test_long_attachment_is_retrieved_by_the_question(embeddings: OllamaEmbeddings) -> None:
    """An attachment over the inline size is chunked and embedded; only its passages nearest the question
    reach the model, best first, with their page."""
    library = DocumentLibrary(None, embeddings, inline_chars=500)
    attachment = await library.attach("pump-manual.pdf", CASES[0].data)
    assert not attachment.inline and attachment.page_count == 3
    context = await library.turn_context(None, CASES[0].question, attachments=[attachment], limit=2)
    assert len(context.sources) == 2
    assert context.sources[0].label == "pump-manual.pdf, page 2" and "seven years" in context.sources[0].passage.text


async def test_attachment_and_library_together(
    owner: tuple[User, dict[str, StoredDocument]], library: DocumentLibrary
) -> None:
    """A turn with an inline attachment and the library: the attachment first, then library passages."""
    user, _ = owner
    attachment = await library.attach("note.txt", b"My own pump is the Aquaflow 300 model, bought in May.")
    context = await library.turn_context(
        str(user.id), "How long does the pump warranty last?", attachments=[attachment], library=True, limit=2
    )
    assert context.sources[0].passage.document_name == "note.txt"
    assert context.sources[1].passage.document_name == "pump-manual.pdf" and context.sources[1].passage.page == 2
