"""Documents in sessions, end to end: the real server process, real PostgreSQL, the real embedding model
(the embedded endpoint's /api/embed), and the fake upstream's `cite` model, which answers with the
sentence of the numbered source that shares most words with the question and cites it as [n]: a
citation then proves which passage reached the model, and the sources event maps it to its document."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from db import EmbeddedPostgres
from realtime.client import RealtimeClient, ResponseResult
from realtime.protocol.codec import Encoding
from tests.conftest import ServerFactory, create_database
from tests.documents.corpus import CASES, Case
from tests.documents.fixtures import make_pdf, make_zip_bomb_docx
from tests.support.accounts import signed_in
from tests.support.fake_ollama import FakeOllama
from tests.support.local_ollama import start_local_ollama
from tests.support.server import ServerProcess, free_port
from tests.support.speech import synthesize, wer, with_silence
from tests.support.talk import events_until, stream_audio

MAX_SIZE = 400_000
BY_NAME = {case.name: case for case in CASES}
LONG_FACT = "The lighthouse keeper's cat is named Biscuit and sleeps on the lantern gallery every night."


@pytest.fixture(scope="module")
def embed_url() -> Iterator[str]:
    """The embedded endpoint serving only /api/embed (the real all-minilm model), one BLAS thread."""
    previous = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        server = start_local_ollama(preload=False, ctx=512)
    finally:
        if previous is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = previous
    with server:
        yield server.url


@pytest.fixture(scope="module")
async def docs_server(
    server_factory: ServerFactory, fake_ollama: FakeOllama, embed_url: str, postgres: EmbeddedPostgres
) -> ServerProcess:
    """The `cite` model for answers, the real embedding model for documents, a database for libraries."""
    return server_factory(
        ollama_url=fake_ollama.url,
        llm_model="cite",
        embed_url=embed_url,
        database_url=await create_database(postgres),
        voice="off",
        tts_engine="off",
        max_document_size=str(MAX_SIZE),
    )


@pytest.fixture(scope="module")
async def alice(docs_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    http = await signed_in(docs_server, "alice-session-docs")
    yield http
    await http.aclose()


@pytest.fixture(scope="module")
async def bob(docs_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    http = await signed_in(docs_server, "bob-session-docs")
    yield http
    await http.aclose()


async def _upload(http: httpx.AsyncClient, name: str, data: bytes) -> dict[str, Any]:
    resp = await http.post(
        "/api/documents", content=data, headers={"X-Filename": quote(name), "Content-Type": "application/octet-stream"}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["document"]


@pytest.fixture(scope="module")
async def alice_library(alice: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {case.name: await _upload(alice, case.name, case.data) for case in CASES}


def _token(http: httpx.AsyncClient) -> str:
    return http.headers["Authorization"].removeprefix("Bearer ")


async def _session(
    server: ServerProcess, token: str | None = None, encoding: Encoding = Encoding.MSGPACK, **settings: Any
) -> RealtimeClient:
    client = await RealtimeClient.connect(server.ws_url, token or server.token(), encoding=encoding)
    if settings:
        await client.send({"type": "session.update", "session": settings})
        updated = (await client.recv_until("session.updated"))[-1]["session"]
        for name, value in settings.items():
            assert updated[name] == value
    return client


def file_item(text: str | None, *files: tuple[str | None, bytes]) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}] if text is not None else []
    for name, data in files:
        part: dict[str, Any] = {"type": "input_file", "file": data}
        if name is not None:
            part["filename"] = name
        content.append(part)
    return {"type": "conversation.item.create", "item": {"role": "user", "content": content}}


def sources_of(result: ResponseResult) -> list[dict[str, Any]]:
    """The response's response.documents.sources list ([] when it sent none)."""
    events = [e for e in result.events if e["type"] == "response.documents.sources"]
    assert len(events) <= 1
    if events:
        assert events[0]["response_id"] == result.response_id
    return events[0]["sources"] if events else []


def cited(result: ResponseResult) -> dict[str, Any]:
    """The one source the answer cites: its [n] in the text, in the sources event and in response.done."""
    assert result.status == "completed", result.errors
    sources = sources_of(result)
    citations = result.done["response"]["citations"]
    assert len(citations) == 1, (result.text, citations)
    source = citations[0]
    assert result.text.endswith(f" [{source['n']}].")
    assert sources[source["n"] - 1] == source
    return source


def assert_answers(source: dict[str, Any], case: Case) -> None:
    assert source["document_name"] == case.name and case.fact in source["text"], source
    assert (source["page"], source["section"]) == (case.page, case.section)


# ---- attachments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_an_attached_document_answers_with_its_passage_cited(docs_server: ServerProcess, case: Case) -> None:
    """TXT, Markdown, PDF, DOCX, HTML: the item echoes the file's metadata (no bytes), the sources list the
    document's passages, and the reply cites the one that holds the answer, by page or section."""
    async with await _session(docs_server) as client:
        await client.send(file_item(case.question, (case.name, case.data)))
        item = (await client.recv_until("conversation.item.created"))[-1]["item"]
        assert item["content"][0] == {"type": "input_text", "text": case.question}
        echoed = item["content"][1]
        assert echoed["type"] == "input_file" and echoed["name"] == case.name and echoed["mode"] == "inline"
        assert echoed["size_bytes"] == len(case.data) and "file" not in echoed
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    source = cited(result)
    assert_answers(source, case)
    assert source["document_id"] is None and case.fact.split()[0] in result.text
    assert {s["document_name"] for s in sources_of(result)} == {case.name}


async def test_json_clients_send_the_file_as_base64(docs_server: ServerProcess) -> None:
    """On a JSON link the file is a base64 string; the name may be left out (a plain text file then)."""
    case = BY_NAME["car.txt"]
    async with await _session(docs_server, encoding=Encoding.JSON) as client:
        await client.send(file_item(case.question, (None, case.data)))
        item = (await client.recv_until("conversation.item.created"))[-1]["item"]
        assert item["content"][1]["name"] == "document" and item["content"][1]["media_type"] == "text/plain"
        await client.send({"type": "response.create"})
        source = cited(await client.collect_response())
    assert source["document_name"] == "document" and case.fact in source["text"]


def _long_text() -> bytes:
    topics = ["harbour", "orchard", "railway", "library", "bakery", "quarry", "meadow", "foundry"]
    paragraphs = [
        f"Chapter {i}. The {topics[i % len(topics)]} committee met on day {i} and reviewed agenda item {i * 7}; "
        "the minutes were approved without changes and the next meeting was set for the following month."
        for i in range(60)
    ]
    paragraphs.insert(37, LONG_FACT)
    return "\n\n".join(paragraphs).encode()


async def test_a_long_attachment_is_retrieved_and_kept_for_later_turns(docs_server: ServerProcess) -> None:
    """A document over the inline size is chunked and embedded: only the passages nearest each question go
    to the model, the answering one among them; a later question (no file sent again) still uses it."""
    async with await _session(docs_server) as client:
        await client.send(file_item(None, ("minutes.txt", _long_text())))
        item = (await client.recv_until("conversation.item.created"))[-1]["item"]
        assert item["content"][0]["mode"] == "retrieved" and item["content"][0]["char_count"] > 6000
        result = await client.ask("What is the name of the lighthouse keeper's cat?")
        source = cited(result)
        assert "Biscuit" in source["text"] and "Biscuit" in result.text
        assert len(sources_of(result)) <= 5
        later = await client.ask("Where does the lighthouse cat sleep?")
    assert "lantern gallery" in cited(later)["text"]


async def test_a_slow_attachment_does_not_time_the_link_out(
    server_factory: ServerFactory, fake_ollama: FakeOllama, embed_url: str
) -> None:
    """Embedding a long attachment holds up the reader for longer than the ping timeout: the link stays
    open (its silence timer is held off meanwhile) and the document is used."""
    srv = server_factory(
        ollama_url=fake_ollama.url,
        llm_model="cite",
        embed_url=embed_url,
        voice="off",
        tts_engine="off",
        ping_interval="0.5",
        ping_timeout="1.5",
    )
    text = _long_text() * 6
    async with await _session(srv) as client:
        started = time.monotonic()
        await client.send(file_item(None, ("minutes.txt", text)))
        item = (await client.recv_until("conversation.item.created"))[-1]["item"]
        took = time.monotonic() - started
        result = await client.ask("What is the name of the lighthouse keeper's cat?")
    assert item["content"][0]["mode"] == "retrieved" and took > 1.5, took
    assert "Biscuit" in cited(result)["text"]


async def test_the_session_keeps_only_its_newest_documents(docs_server: ServerProcess) -> None:
    """After nine single-document messages the first document is no longer given to the model (eight are
    kept); the ninth is."""
    async with await _session(docs_server) as client:
        for i in range(9):
            fact = f"The secret word of note {i} is {'abcdefghi'[i] * 6}."
            await client.send(file_item(None, (f"note{i}.txt", fact.encode())))
            await client.recv_until("conversation.item.created")
        first = await client.ask("What is aaaaaa?")
        last = await client.ask("What is iiiiii?")
    assert "note0.txt" not in {s["document_name"] for s in sources_of(first)}
    assert len(sources_of(first)) == 8 and first.done["response"]["citations"] == []
    assert cited(last)["document_name"] == "note8.txt"


BAD_FILES = [
    ("photo.pdf", b"\x89PNG\r\n\x1a\n" + bytes(200), "unsupported_document_type"),
    ("locked.pdf", make_pdf([["secret plans"]], password="pw"), "document_encrypted"),
    ("bomb.docx", make_zip_bomb_docx(200), "document_too_large"),
    ("fake.pdf", b"just some text pretending", "document_unreadable"),
    ("blank.txt", b"   \n\n  ", "document_empty"),
    ("big.txt", b"a" * (MAX_SIZE + 1), "message_too_large"),
]


async def test_bad_files_get_their_errors_and_the_session_goes_on(docs_server: ServerProcess) -> None:
    """Each unusable file is refused with its code, naming the part; no item is added, and the session
    answers the next question (about a good document) as usual."""
    async with await _session(docs_server) as client:
        for name, data, code in BAD_FILES:
            event = file_item("what does it say?", (name, data))
            event["event_id"] = f"bad-{name}"
            await client.send(event)
            error = (await client.recv_until("error"))[-1]["error"]
            assert error["code"] == code, (name, error)
            assert error["param"] == "item.content[1].file" and error["event_id"] == f"bad-{name}"
        case = BY_NAME["garden.md"]
        await client.send(file_item(case.question, (case.name, case.data)))
        events = await client.recv_until("conversation.item.created")
        assert [e["type"] for e in events] == ["conversation.item.created"]
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    assert_answers(cited(result), case)
    assert {s["document_name"] for s in sources_of(result)} == {case.name}


# ---- the library ------------------------------------------------------------------------------------


async def test_library_documents_answer_with_the_library_setting(
    docs_server: ServerProcess, alice: httpx.AsyncClient, alice_library: dict[str, dict[str, Any]]
) -> None:
    """Documents uploaded over HTTP are searched for every turn with `library: true`: each answer cites the
    right stored document and passage (its id included); without the setting nothing is retrieved."""
    async with await _session(docs_server, _token(alice), library=True) as client:
        for case in CASES:
            source = cited(await client.ask(case.question))
            assert_answers(source, case)
            assert source["document_id"] == alice_library[case.name]["id"]
        plain = await client.ask(CASES[0].question, library=False)
    assert sources_of(plain) == [] and "citations" not in plain.done["response"]
    assert plain.text == "The documents do not say."


async def test_library_limited_to_named_documents(
    docs_server: ServerProcess, alice: httpx.AsyncClient, alice_library: dict[str, dict[str, Any]]
) -> None:
    """`library: [ids]` searches only those documents."""
    only = alice_library["car.txt"]["id"]
    async with await _session(docs_server, _token(alice), library=[only]) as client:
        result = await client.ask(BY_NAME["pump-manual.pdf"].question)
        tyres = await client.ask(BY_NAME["car.txt"].question)
    assert {s["document_id"] for s in sources_of(result)} <= {only}
    assert_answers(cited(tyres), BY_NAME["car.txt"])


async def test_a_user_never_retrieves_another_users_documents(
    docs_server: ServerProcess,
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    alice_library: dict[str, dict[str, Any]],
) -> None:
    """Bob, with his own library on, asks Alice's questions: only his document comes back; naming Alice's
    document ids gives nothing at all."""
    mine = await _upload(bob, "bob-notes.txt", b"Bob keeps his bicycle in the shed behind the house.")
    alices = {d["id"] for d in alice_library.values()}
    async with await _session(docs_server, _token(bob), library=True) as client:
        for case in CASES:
            result = await client.ask(case.question)
            assert {s["document_id"] for s in sources_of(result)} <= {mine["id"]}, case.name
            assert not any(case.fact in s["text"] for s in sources_of(result))
        await client.send({"type": "session.update", "session": {"library": sorted(alices)}})
        await client.recv_until("session.updated")
        stolen = await client.ask(CASES[0].question)
    assert sources_of(stolen) == [] and stolen.text == "The documents do not say."


async def test_the_library_needs_an_account(docs_server: ServerProcess) -> None:
    """A token that is not a database account has no library: `library: true` is refused, nothing changes."""
    async with await _session(docs_server) as client:
        await client.send({"type": "session.update", "session": {"library": True}})
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["param"]) == ("library_unavailable", "session.library")
        await client.send({"type": "response.create", "response": {"library": ["x"]}})
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["param"]) == ("library_unavailable", "response.library")
        await client.send({"type": "session.update", "session": {}})
        assert (await client.recv_until("session.updated"))[-1]["session"]["library"] is False


async def test_attachment_metadata_and_citations_are_stored(
    docs_server: ServerProcess, alice: httpx.AsyncClient
) -> None:
    """The stored user message keeps the file's metadata (no text); the stored answer keeps its citations."""
    case = BY_NAME["sourdough.html"]
    async with await _session(docs_server, _token(alice)) as client:
        await client.send(file_item(case.question, (case.name, case.data)))
        await client.send({"type": "response.create"})
        result = await client.collect_response()
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    source = cited(result)
    for _ in range(100):
        resp = await alice.get(f"/api/conversations/{conversation_id}")
        if resp.status_code == 200 and len(resp.json()["messages"]) >= 2:
            break
        await asyncio.sleep(0.1)
    user, answer = resp.json()["messages"]
    assert user["attachments"][0]["type"] == "document" and user["attachments"][0]["name"] == case.name
    assert user["attachments"][0]["mode"] == "inline" and "text" not in user["attachments"][0]
    assert answer["attachments"] == [
        {"type": "citation", **{k: v for k, v in source.items() if k != "score"}},
    ]


async def test_documents_unavailable_answers_without_them(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> None:
    """With the embedding service down, a library turn gets `documents_unavailable` and is answered from
    the short attachments alone; a long attachment is refused (the embedding service's error)."""
    srv = server_factory(
        ollama_url=fake_ollama.url,
        llm_model="cite",
        embed_url=f"http://127.0.0.1:{free_port()}",
        database_url=await create_database(postgres),
        voice="off",
        tts_engine="off",
    )
    http = await signed_in(srv, "carol-docs")
    await http.aclose()
    case = BY_NAME["car.txt"]
    async with await _session(srv, _token(http), library=True) as client:
        await client.send(file_item(None, ("long.txt", _long_text())))
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["param"]) == ("upstream_unavailable", "item.content[0].file")
        await client.send(file_item(case.question, (case.name, case.data)))
        await client.send({"type": "response.create"})
        result = await client.collect_response()
    assert [e["error"]["code"] for e in result.errors] == ["documents_unavailable"]
    assert result.errors[0]["response_id"] == result.response_id
    assert_answers(cited(result), case)


# ---- by voice ---------------------------------------------------------------------------------------


async def test_a_spoken_question_about_an_attached_document(
    server_factory: ServerFactory, fake_ollama: FakeOllama, embed_url: str
) -> None:
    """A PDF attached, then the question spoken (server VAD): the reply cites the PDF's page 2."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="cite", embed_url=embed_url, voice="on")
    rate = 16_000
    case = BY_NAME["pump-manual.pdf"]
    question = "How long does the pump warranty last?"
    async with await RealtimeClient.connect(srv.ws_url, srv.token()) as client:
        settings = {"input_audio_format": {"sample_rate": rate}, "input_audio_transcription": {"language": "en"}}
        await client.send({"type": "session.update", "session": settings})
        await client.recv_until("session.updated")
        await client.send(file_item(None, (case.name, case.data)))
        await client.recv_until("conversation.item.created")
        sender = asyncio.create_task(stream_audio(client, with_silence(synthesize(question, rate), rate), rate))
        events = [e for _, e in await events_until(client, "response.done")]
        await sender
    transcript = next(e for e in events if e["type"].endswith("transcription.completed"))["transcript"]
    # what matters here is the citation; the transcript only has to carry the question's key word (Whisper
    # base once heard "How long does" as "Howondas" on a loaded machine)
    assert "warranty" in transcript.lower() and wer(question, transcript) <= 0.5, transcript
    done = events[-1]["response"]
    assert done["status"] == "completed", events
    sources = next(e for e in events if e["type"] == "response.documents.sources")["sources"]
    [source] = done["citations"]
    assert sources[source["n"] - 1] == source and done["output_text"].endswith(f"[{source['n']}].")
    assert_answers(source, case)
