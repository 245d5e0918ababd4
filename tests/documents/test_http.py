"""The library's HTTP API end to end: the real server process, real PostgreSQL, the real embedding model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from db import EmbeddedPostgres
from tests.conftest import ServerFactory, create_database
from tests.documents.corpus import CASES
from tests.documents.fixtures import make_pdf, make_zip_bomb_docx
from tests.support.accounts import signed_in
from tests.support.server import ServerProcess

MAX_SIZE = 400_000


@pytest.fixture(scope="module")
async def docs_server(server_factory: ServerFactory, embed_url: str, postgres: EmbeddedPostgres) -> ServerProcess:
    return server_factory(
        ollama_url=embed_url,
        database_url=await create_database(postgres),
        voice="off",
        tts_engine="off",
        max_document_size=str(MAX_SIZE),
    )


@pytest.fixture(scope="module")
async def alice(docs_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    http = await signed_in(docs_server, "alice-docs")
    yield http
    await http.aclose()


@pytest.fixture(scope="module")
async def bob(docs_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    http = await signed_in(docs_server, "bob-docs")
    yield http
    await http.aclose()


async def _upload(http: httpx.AsyncClient, name: str, data: bytes, **headers: str) -> httpx.Response:
    return await http.post(
        "/api/documents",
        content=data,
        headers={"X-Filename": quote(name), "Content-Type": "application/octet-stream", **headers},
    )


@pytest.fixture(scope="module")
async def uploaded(alice: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    out = {}
    for case in CASES:
        resp = await _upload(alice, case.name, case.data)
        assert resp.status_code == 201, resp.text
        out[case.name] = resp.json()["document"]
    return out


async def test_upload_list_get(alice: httpx.AsyncClient, uploaded: dict[str, dict[str, Any]]) -> None:
    """Every format uploads as a raw body; list and get show name, sniffed type, pages and chunks."""
    pdf = uploaded["pump-manual.pdf"]
    assert pdf["media_type"] == "application/pdf" and pdf["page_count"] == 3 and pdf["chunk_count"] >= 3
    assert pdf["embed_model"] == "all-minilm" and len(pdf["sha256"]) == 64
    listed = (await alice.get("/api/documents")).json()["documents"]
    assert {d["name"] for d in listed} == {c.name for c in CASES}
    one = await alice.get(f"/api/documents/{pdf['id']}")
    assert one.status_code == 200 and one.json()["document"] == pdf


async def test_search_cites_the_answering_passage(
    alice: httpx.AsyncClient, uploaded: dict[str, dict[str, Any]]
) -> None:
    """Each question's first passage is the answering one of the right document; the context numbers it [1];
    the cited passage can be fetched by document and ordinal."""
    for case in CASES:
        resp = await alice.post("/api/documents/search", json={"query": case.question, "limit": 3})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        best = body["passages"][0]
        assert best["document_id"] == uploaded[case.name]["id"] and case.fact in best["text"]
        assert (best["page"], best["section"]) == (case.page, case.section)
        source = body["context"]["sources"][0]
        assert source["n"] == 1 and source["label"].startswith(case.name)
        assert f"[1] {source['label']}" in body["context"]["text"]
        cited = await alice.get(f"/api/documents/{best['document_id']}/passages/{best['ordinal']}")
        assert cited.status_code == 200 and cited.json()["passage"]["text"] == best["text"]


async def test_another_user_sees_nothing(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, uploaded: dict[str, dict[str, Any]]
) -> None:
    """Bob lists no documents, retrieves nothing (even naming Alice's ids) and gets 404 for Alice's ones."""
    assert (await bob.get("/api/documents")).json()["documents"] == []
    ids = [d["id"] for d in uploaded.values()]
    for case in CASES:
        resp = await bob.post("/api/documents/search", json={"query": case.question, "document_ids": ids})
        assert resp.status_code == 200 and resp.json()["passages"] == []
    pdf = uploaded["pump-manual.pdf"]["id"]
    for method, path in (
        ("GET", f"/api/documents/{pdf}"),
        ("DELETE", f"/api/documents/{pdf}"),
        ("GET", f"/api/documents/{pdf}/passages/0"),
    ):
        resp = await bob.request(method, path)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "document_not_found"
    assert (await alice.get(f"/api/documents/{pdf}")).status_code == 200


async def test_delete(alice: httpx.AsyncClient) -> None:
    """DELETE removes a document: 204, then 404, and its passages are no longer found."""
    resp = await _upload(alice, "Prüfbericht.txt", "Der Prüfbericht vom Mai bestätigt den Druck von 3 bar.".encode())
    doc = resp.json()["document"]
    assert doc["name"] == "Prüfbericht.txt"
    assert (await alice.delete(f"/api/documents/{doc['id']}")).status_code == 204
    assert (await alice.get(f"/api/documents/{doc['id']}")).status_code == 404
    assert (await alice.delete(f"/api/documents/{doc['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("photo.pdf", b"\x89PNG\r\n\x1a\n" + bytes(200), 415, "unsupported_document_type"),
        ("locked.pdf", make_pdf([["secret plans"]], password="pw"), 422, "document_encrypted"),
        ("bomb.docx", make_zip_bomb_docx(200), 413, "document_too_large"),
        ("huge.txt", b"a" * (MAX_SIZE + 1), 413, "document_too_large"),
        ("fake.pdf", b"just some text pretending", 422, "document_unreadable"),
        ("blank.txt", b"   \n\n  ", 422, "document_empty"),
        ("nothing.txt", b"", 400, "document_empty"),
    ],
    ids=["image", "encrypted", "zip-bomb", "too-big", "fake-pdf", "no-text", "no-body"],
)
async def test_bad_files_get_their_errors(
    alice: httpx.AsyncClient, name: str, data: bytes, status: int, code: str
) -> None:
    """Each unusable file is answered with its status and stable code, and nothing is stored."""
    before = len((await alice.get("/api/documents")).json()["documents"])
    resp = await _upload(alice, name, data)
    assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), resp.text
    assert len((await alice.get("/api/documents")).json()["documents"]) == before


async def test_requests_that_are_refused(docs_server: ServerProcess, alice: httpx.AsyncClient) -> None:
    """No token 401, no file name 400, a foreign origin 403, a search without a query 400."""
    async with httpx.AsyncClient(base_url=docs_server.url) as anonymous:
        assert (await anonymous.get("/api/documents")).status_code == 401
    no_name = await alice.post("/api/documents", content=b"hello")
    assert no_name.status_code == 400 and no_name.json()["error"]["code"] == "filename_required"
    foreign = await _upload(alice, "a.txt", b"hello", Origin="https://evil.example")
    assert foreign.status_code == 403
    for body in ({}, {"query": ""}, {"query": "x", "limit": 0}, {"query": "x", "mode": "magic"}):
        assert (await alice.post("/api/documents/search", json=body)).status_code == 400
