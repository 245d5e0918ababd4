"""The real embedding model behind the embedded endpoint's /api/embed (one process for the package's
tests), and a migrated database with the documents tables on the run's PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from db import Database, EmbeddedPostgres, User
from realtime.documents import DocumentLibrary, OllamaEmbeddings
from tests.conftest import create_database
from tests.db.conftest import FAST_HASHER
from tests.support.local_ollama import start_local_ollama


@pytest.fixture(scope="session")
def embed_url() -> Iterator[str]:
    """`python -m realtime.local_ollama` without loading its LLM: only /api/embed is used. One BLAS thread,
    as the server gives its children (realtime/__main__.py): a BLAS pool per core only fights other work."""
    previous = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        server = start_local_ollama(preload=False, ctx=512)
    finally:  # the child has its environment; the rest of the run keeps ours
        if previous is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = previous
    with server:
        yield server.url


@pytest.fixture(scope="module")
async def documents_db(postgres: EmbeddedPostgres) -> AsyncIterator[Database]:
    db = await Database.connect(await create_database(postgres), max_size=5, password_hasher=FAST_HASHER)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture(scope="module")
async def embeddings(embed_url: str) -> AsyncIterator[OllamaEmbeddings]:
    client = OllamaEmbeddings(embed_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def library(documents_db: Database, embeddings: OllamaEmbeddings) -> DocumentLibrary:
    return DocumentLibrary(documents_db, embeddings)


_names = itertools.count(1)


async def new_user(db: Database) -> User:
    return await db.users.create(f"reader{next(_names)}", "correct horse battery")
