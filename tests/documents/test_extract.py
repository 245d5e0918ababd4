"""Extraction: every format's text with its anchors, the type taken from the content, limits, and each
unusable file answered with its own error code."""

from __future__ import annotations

import io
import zipfile

import pytest

from realtime.documents import (
    DocumentEmpty,
    DocumentEncrypted,
    DocumentKind,
    DocumentLimits,
    DocumentTooLarge,
    DocumentUnreadable,
    UnsupportedDocumentType,
    extract,
)
from tests.documents.fixtures import make_docx, make_ole_encrypted, make_pdf, make_zip_bomb_docx

PUMP = "The pump must be primed with two litres of water before the first start."
IMPELLER = "Replace the impeller every 400 hours of operation, or sooner in sandy water."


def test_plain_text_paragraphs() -> None:
    """Plain text: paragraphs split at blank lines, runs of spaces collapsed."""
    doc = extract(f"{PUMP}\n\n{IMPELLER}\n   \n".encode(), filename="notes.txt")
    assert doc.kind == DocumentKind.TEXT and doc.media_type == "text/plain"
    assert [b.text for b in doc.blocks] == [PUMP, IMPELLER]
    assert doc.char_count == len(PUMP) + len(IMPELLER)


def test_markdown_headings_become_sections() -> None:
    """Markdown: ATX and setext headings set the section of what follows; fenced code is kept whole."""
    text = f"# Pump\n\n{PUMP}\n\nMaintenance\n-----------\n\n{IMPELLER}\n\n```\n# not a heading\n  indented\n```\n"
    doc = extract(text.encode(), filename="manual.md")
    assert doc.kind == DocumentKind.MARKDOWN and doc.title == "Pump"
    body = [(b.text, b.section) for b in doc.blocks if not b.heading]
    assert body == [(PUMP, "Pump"), (IMPELLER, "Maintenance"), ("```\n# not a heading\n  indented\n```", "Maintenance")]
    assert "# Maintenance" in doc.text()


def test_markdown_recognised_without_a_name() -> None:
    """Content with Markdown headings is Markdown even when nothing says so."""
    assert extract(f"## Care\n\n{IMPELLER}".encode()).kind == DocumentKind.MARKDOWN
    assert extract(IMPELLER.encode()).kind == DocumentKind.TEXT


def test_html_main_content_with_headings() -> None:
    """HTML: scripts and markup gone, headings kept as sections, the page title found."""
    html = (
        "<!doctype html><html><head><title>Pump manual</title><script>var x = 1;</script></head><body>"
        f"<h1>Pump manual</h1><p>{PUMP}</p><h2>Maintenance</h2><ul><li>{IMPELLER}</li></ul></body></html>"
    )
    doc = extract(html.encode(), filename="page.txt")  # the name is wrong: the content decides
    assert doc.kind == DocumentKind.HTML and doc.title == "Pump manual"
    body = [(b.text.removeprefix("- "), b.section) for b in doc.blocks if not b.heading]  # a list item
    assert body == [(PUMP, "Pump manual"), (IMPELLER, "Maintenance")]
    assert "var x" not in doc.text()


def test_html_article_loses_its_boilerplate() -> None:
    """A long page: trafilatura keeps the article and drops navigation and footer."""
    sections = "".join(f"<h2>Part {i}</h2><p>{PUMP} {IMPELLER} Part {i} ends here.</p>" for i in range(6))
    html = (
        "<html><body><nav><a href='/'>Home</a> | <a href='/shop'>Shop</a></nav>"
        f"<article><h1>Pump manual</h1>{sections}</article><footer>Copyright 2026 Pumps Ltd</footer></body></html>"
    )
    doc = extract(html.encode())
    text = doc.text()
    assert "Part 5 ends here." in text and "Copyright 2026" not in text and "Shop" not in text
    assert {b.section for b in doc.blocks if not b.heading} >= {"Part 0", "Part 5"}


def test_pdf_pages_and_paragraphs() -> None:
    """PDF: each paragraph knows its page; the title comes from the metadata."""
    first = PUMP + " Check the seal for leaks while the housing fills."  # two lines: the paragraph's end is seen
    pdf = make_pdf([[first, "A second paragraph on the first page."], [IMPELLER]], title="Pump manual")
    doc = extract(pdf, filename="manual.pdf")
    assert doc.kind == DocumentKind.PDF and doc.page_count == 2 and doc.title == "Pump manual"
    assert [(b.text, b.page) for b in doc.blocks] == [
        (first, 1),
        ("A second paragraph on the first page.", 1),
        (IMPELLER, 2),
    ]
    assert doc.text().startswith("[page 1]") and "[page 2]" in doc.text()


def test_pdf_with_only_an_owner_password_is_read() -> None:
    """Printing/copying restrictions (an empty user password) do not stop the text being read."""
    pdf = make_pdf([[PUMP]], password="")
    assert extract(pdf).blocks[0].text == PUMP


def test_docx_headings_paragraphs_and_tables() -> None:
    """DOCX: Heading styles set sections; a table becomes one block of rows in document order."""
    data = make_docx([("Pump", [PUMP]), ("Maintenance", [IMPELLER])], table=[["Part", "Interval"], ["Seal", "yearly"]])
    doc = extract(data, filename="manual.docx")
    assert doc.kind == DocumentKind.DOCX and doc.title == "Pump"
    body = [(b.text, b.section) for b in doc.blocks if not b.heading]
    assert body == [(PUMP, "Pump"), (IMPELLER, "Maintenance"), ("Part | Interval\nSeal | yearly", "Maintenance")]


def test_legacy_encodings_are_decoded() -> None:
    """UTF-16 with a BOM and Windows-1252 text come out as the same characters."""
    text = "Crème brûlée: caramelise the sugar, then serve at once. " * 3
    assert extract(text.encode("utf-16")).blocks[0].text == text.strip()
    assert extract(text.encode("cp1252")).blocks[0].text == text.strip()


def test_name_does_not_decide_the_type() -> None:
    """A PDF named .txt is read as a PDF; text named .pdf is refused as not a valid PDF."""
    assert extract(make_pdf([[PUMP]]), filename="notes.txt").kind == DocumentKind.PDF
    with pytest.raises(DocumentUnreadable, match="not a valid PDF") as refused:
        extract(PUMP.encode(), filename="manual.pdf")
    assert refused.value.code == "document_unreadable"
    with pytest.raises(DocumentUnreadable, match="not a valid Word document"):
        extract(PUMP.encode(), declared_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document")


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG image"),
        (b"\x7fELF\x02\x01\x01" + bytes(64), "a program"),
        (bytes(range(256)) * 8, "not text"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "Word 97-2003"),
    ],
    ids=["png", "elf", "binary", "legacy-doc"],
)
def test_wrong_types_are_unsupported(data: bytes, what: str) -> None:
    """Images, programs, arbitrary binary and legacy .doc files are unsupported_document_type."""
    with pytest.raises(UnsupportedDocumentType, match=what) as refused:
        extract(data, filename="document.pdf")
    assert refused.value.code == "unsupported_document_type"


def test_other_zip_archives_are_unsupported() -> None:
    """A ZIP that is not a DOCX (here an Excel workbook, then a plain archive) is named for what it is."""
    for member, what in (("xl/workbook.xml", "Excel"), ("readme.txt", "ZIP archive")):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr(member, "x")
        with pytest.raises(UnsupportedDocumentType, match=what):
            extract(out.getvalue(), filename="book.docx")


def test_encrypted_pdf_is_refused() -> None:
    """A PDF with a user password: document_encrypted, nothing guessed."""
    with pytest.raises(DocumentEncrypted) as refused:
        extract(make_pdf([[PUMP]], password="s3cret"), filename="locked.pdf")
    assert refused.value.code == "document_encrypted"


def test_password_protected_office_file_is_refused() -> None:
    """An encrypted DOCX is an OLE2 container with EncryptionInfo: document_encrypted, not 'unsupported'."""
    with pytest.raises(DocumentEncrypted):
        extract(make_ole_encrypted(), filename="locked.docx")


def test_zip_bomb_docx_is_refused_before_inflating() -> None:
    """A DOCX that would unpack to 200 MiB is refused from its directory alone."""
    bomb = make_zip_bomb_docx(200)
    assert len(bomb) < 1 << 20
    with pytest.raises(DocumentTooLarge, match="unpacks to over") as refused:
        extract(bomb, filename="bomb.docx")
    assert refused.value.code == "document_too_large"


def test_highly_compressed_member_is_refused() -> None:
    """Under the total limit, a member packed over 100:1 is still refused as a zip bomb."""
    with pytest.raises(DocumentTooLarge, match="zip bomb"):
        extract(make_zip_bomb_docx(20), filename="bomb.docx")


def test_damaged_files_are_unreadable() -> None:
    """A truncated PDF and a truncated DOCX are document_unreadable."""
    pdf = make_pdf([[PUMP]])
    with pytest.raises(DocumentUnreadable):
        extract(pdf[:60], filename="cut.pdf")
    with pytest.raises(DocumentUnreadable):
        extract(make_docx([("Pump", [PUMP])])[:300], filename="cut.docx")


def test_limits_bytes_pages_and_characters() -> None:
    """Over the byte, page or character limit: document_too_large, saying which."""
    limits = DocumentLimits(max_size=1000, max_pages=2, max_chars=100)
    with pytest.raises(DocumentTooLarge, match="bytes"):
        extract(b"x" * 1001, limits=limits)
    with pytest.raises(DocumentTooLarge, match="3 pages"):
        extract(make_pdf([[PUMP]] * 3), limits=DocumentLimits(max_pages=2))
    with pytest.raises(DocumentTooLarge, match="characters"):
        extract(((PUMP + "\n\n") * 3).encode(), limits=limits)


def test_no_text_is_document_empty() -> None:
    """An empty file, whitespace, or a PDF page without text: document_empty."""
    for data in (b"", b"  \n\n \t\n"):
        with pytest.raises(DocumentEmpty):
            extract(data)
    with pytest.raises(DocumentEmpty, match="OCR"):
        extract(make_pdf([[]]), filename="scan.pdf")
