"""Documents: ingestion throughput (PDF pages per second, end to end) and retrieval latency at 10,000 chunks.

Everything is real: an embedded PostgreSQL with pgvector, the embedded endpoint's /api/embed on
all-MiniLM-L6-v2 (a child process, as the server runs it), the library code the HTTP API calls.

- Ingestion: synthetic PDFs of `--pages` pages of prose (~330 words a page) through DocumentLibrary.add():
  extraction, chunking, embedding, storing. Reported per stage and as pages/s.
- Retrieval: one user's library filled to `--chunks` chunks (plus another user's 1,000, so the user filter
  matters). Embedding 10,000 chunks would take the model ~10 minutes on two cores, so `--base` distinct
  passages are embedded for real and the rest are those vectors plus Gaussian noise, renormalised (each
  copy keeps ~0.9 cosine similarity to its passage): the index holds 10,000 distinct, realistically
  clustered vectors. Queries are real questions embedded by the model. Latency: the query's embedding,
  the SQL search (vector only, and hybrid), and both together as library.search() does them; recall@5 of
  the HNSW search against an exact scan of the same user's vectors.

    nice .venv/bin/python -m bench.documents [--pages 20] [--docs 3] [--chunks 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.stats import markdown_table, percentile
from db import Database, EmbeddedPostgres
from db.documents import Documents, NewChunk
from realtime.documents import DocumentLibrary, OllamaEmbeddings, chunk_document, extract
from tests.documents.fixtures import make_pdf
from tests.support.local_ollama import start_local_ollama

SUBJECTS = ["The pump", "Our team", "The contract", "Each tenant", "The garden", "The engine", "A client", "The board"]
VERBS = ["requires", "describes", "replaces", "protects", "measures", "delivers", "reviews", "approves"]
OBJECTS = [
    "a new filter every spring",
    "the quarterly budget for maintenance",
    "the warranty terms for seven years",
    "water pressure at the main valve",
    "the safety rules for the workshop",
    "a detailed report on energy use",
    "the delivery schedule for spare parts",
    "the planting plan for tomatoes and beans",
    "the insurance claim after the storm",
    "the travel allowance for meals abroad",
]
TAILS = ["before the end of the month.", "according to the manual.", "in line with the policy.", "as agreed.", "."]
QUESTIONS = [
    "How long does the warranty last?",
    "When should the filter be replaced?",
    "Who approves the maintenance budget?",
    "What does the energy report say?",
    "How much is the meal allowance abroad?",
    "What are the workshop safety rules?",
    "When are spare parts delivered?",
    "What is planted in the garden?",
]


def sentence(rng: random.Random) -> str:
    tail = rng.choice(TAILS)
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{'' if tail == '.' else ' '}{tail}"


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def make_document(rng: random.Random, pages: int) -> bytes:
    """About 330 words a page, in paragraphs of 3 to 7 sentences."""
    content = []
    for _ in range(pages):
        page, words = [], 0
        while words < 330:
            text = paragraph(rng, rng.randint(3, 7))
            page.append(text)
            words += len(text.split())
        content.append(page)
    return make_pdf(content)


async def ingestion(library: DocumentLibrary, db: Database, pages: int, docs: int, rng: random.Random) -> list[str]:
    user = await db.users.create(f"ingest{rng.randrange(10**9)}", "benchmark password")
    pdfs = [make_document(rng, pages) for _ in range(docs + 1)]
    await library.add(str(user.id), "warmup.pdf", pdfs[0])  # loads the model on the server
    rows, totals = [], []
    for i, pdf in enumerate(pdfs[1:], start=1):
        t0 = time.perf_counter()
        extracted = extract(pdf)
        t1 = time.perf_counter()
        chunks = chunk_document(extracted)
        vectors = await library.embeddings.embed([c.embedding_text() for c in chunks])
        t2 = time.perf_counter()
        await library.store.create(  # type: ignore[union-attr]
            str(user.id),
            name=f"doc{i}.pdf",
            media_type=extracted.media_type,
            size_bytes=len(pdf),
            sha256=hashlib.sha256(pdf).digest(),
            embed_model=library.embeddings.model,
            chunks=[NewChunk(c.ordinal, c.text, vectors[j], c.page, c.section) for j, c in enumerate(chunks)],
            page_count=extracted.page_count,
            char_count=extracted.char_count,
        )
        t3 = time.perf_counter()
        t = time.perf_counter()
        await library.add(str(user.id), f"again{i}.pdf", pdf)  # the whole path as one call, for the figure
        whole = time.perf_counter() - t
        totals.append(whole)
        rows.append(
            [
                f"{pages}",
                f"{extracted.char_count:,}",
                f"{len(chunks)}",
                f"{(t1 - t0) * 1000:.0f}",
                f"{(t2 - t1) * 1000:.0f}",
                f"{(t3 - t2) * 1000:.0f}",
                f"{whole:.2f}",
                f"{pages / whole:.2f}",
            ]
        )
    print("\n## Ingestion (PDF, end to end through DocumentLibrary.add)\n")
    header = ["pages", "chars", "chunks", "extract ms", "embed ms", "store ms", "total s", "pages/s"]
    print(markdown_table(header, rows))
    print(f"\nmedian: {pages / sorted(totals)[len(totals) // 2]:.2f} pages/s")
    return [r[-1] for r in rows]


def _noisy(base: np.ndarray, count: int, rng: np.random.Generator, sigma: float = 0.025) -> np.ndarray:
    picks = base[rng.integers(0, len(base), count)]
    noisy = picks + rng.normal(0.0, sigma, picks.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


async def fill(store: Documents, user_id: str, texts: list[str], vectors: np.ndarray, per_doc: int = 200) -> None:
    for start in range(0, len(texts), per_doc):
        chunk_texts = texts[start : start + per_doc]
        await store.create(
            user_id,
            name=f"bulk{start // per_doc}.txt",
            media_type="text/plain",
            size_bytes=sum(len(t) for t in chunk_texts),
            sha256=hashlib.sha256(str(start).encode()).digest(),
            embed_model="all-minilm",
            chunks=[NewChunk(i, t, vectors[start + i]) for i, t in enumerate(chunk_texts)],
            char_count=sum(len(t) for t in chunk_texts),
        )


async def retrieval(
    library: DocumentLibrary, db: Database, chunks: int, base_count: int, queries: int, rng: random.Random
) -> None:
    store = library.store
    assert store is not None
    np_rng = np.random.default_rng(7)
    base_texts = [paragraph(rng, rng.randint(2, 4)) for _ in range(base_count)]
    t = time.perf_counter()
    base = await library.embeddings.embed(base_texts)
    embed_base = time.perf_counter() - t
    target = await db.users.create(f"reader{rng.randrange(10**9)}", "benchmark password")
    other = await db.users.create(f"other{rng.randrange(10**9)}", "benchmark password")
    picks = np_rng.integers(0, base_count, chunks)
    vectors = _noisy(base, chunks, np_rng)
    vectors[:base_count] = base  # the real vectors themselves are in the library too
    picks[:base_count] = np.arange(base_count)
    texts = [base_texts[i] for i in picks]
    t = time.perf_counter()
    await fill(store, str(target.id), texts, vectors)
    await fill(store, str(other.id), texts[:1000], _noisy(base, 1000, np_rng))
    fill_seconds = time.perf_counter() - t
    async with db.connection() as con:
        await con.execute("ANALYZE document_chunks")
        await con.execute("ANALYZE documents")
    print(
        f"\n## Retrieval at {chunks:,} chunks of one user (+1,000 of another)\n\n"
        f"{base_count} passages embedded in {embed_base:.1f} s; {chunks + 1000:,} chunks stored in {fill_seconds:.1f} s"
    )

    questions = [rng.choice(QUESTIONS) + ("" if i < len(QUESTIONS) else f" ({i})") for i in range(queries)]
    embed_ms, vector_ms, hybrid_ms, whole_ms, recalls = [], [], [], [], []
    uid = str(target.id)
    for question in questions[:5]:  # warm-up: connections, plans, index pages in memory
        await library.search(uid, question)
    for question in questions:
        t = time.perf_counter()
        query = (await library.embeddings.embed([question]))[0]
        embed_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        hits = await store.search(uid, query, embed_model="all-minilm", limit=5)
        vector_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await store.search(uid, query, embed_model="all-minilm", limit=5, query_text=question)
        hybrid_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await library.search(uid, question, limit=5)
        whole_ms.append((time.perf_counter() - t) * 1000)
        exact = set(np.argsort(-(vectors @ query))[:5].tolist())
        found = {_index(h.document_name, h.ordinal) for h in hits}
        recalls.append(len(exact & found) / 5)

    async with db.transaction(readonly=True) as con:
        await con.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        plan = await con.fetch(
            "EXPLAIN SELECT document_id, ordinal FROM document_chunks WHERE user_id = $1 AND embed_model = $3 "
            "ORDER BY embedding <=> $2::text::vector LIMIT 5",
            target.id,
            "[" + ",".join(f"{v:.8g}" for v in vectors[0]) + "]",
            "all-minilm",
        )
    index_used = any("document_chunks_embedding_idx" in r[0] for r in plan)
    rows = [
        [name, f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}", f"{max(ms):.1f}"]
        for name, ms in (
            ("query embedding (/api/embed)", embed_ms),
            ("SQL: vector (HNSW, user filter)", vector_ms),
            ("SQL: hybrid (vector + full text, RRF)", hybrid_ms),
            ("library.search (embed + hybrid)", whole_ms),
        )
    ]
    print(f"\n{queries} queries; HNSW index in the plan: {index_used}\n")
    print(markdown_table(["step", "p50 ms", "p95 ms", "max ms"], rows))
    print(f"\nrecall@5 of the vector search against an exact scan: {sum(recalls) / len(recalls):.3f}")


def _index(name: str, ordinal: int) -> int:
    return int(name.removeprefix("bulk").removesuffix(".txt")) * 200 + ordinal


async def main(args: argparse.Namespace) -> None:
    # as the server runs its children (realtime/__main__.py): one BLAS thread, the embedder is single-threaded
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    rng = random.Random(1)
    pgdata = Path(tempfile.mkdtemp(prefix="bench-docs-")) / "data"
    server = EmbeddedPostgres(pgdata)
    url = await asyncio.to_thread(server.start)
    try:
        with start_local_ollama(preload=False, ctx=512) as endpoint:
            db = await Database.connect(url, max_size=4)
            embeddings = OllamaEmbeddings(endpoint.url)
            try:
                await db.migrate()
                library = DocumentLibrary(db, embeddings, max_documents=10_000)
                await ingestion(library, db, args.pages, args.docs, rng)
                await retrieval(library, db, args.chunks, args.base, args.queries, rng)
            finally:
                await embeddings.aclose()
                await db.close()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.documents")
    parser.add_argument("--pages", type=int, default=20, help="pages per PDF in the ingestion run")
    parser.add_argument("--docs", type=int, default=3, help="PDFs ingested (after one warm-up)")
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in the searched user's library")
    parser.add_argument("--base", type=int, default=600, help="passages embedded for real in the retrieval set")
    parser.add_argument("--queries", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
