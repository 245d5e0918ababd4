"""Documents made in the test itself with the format libraries: PDF pages (pypdf, Helvetica text), DOCX
(python-docx), and the bad ones: encrypted PDF, zip-bomb DOCX, password-protected Office file."""

from __future__ import annotations

import io
import textwrap
import zipfile
from collections.abc import Sequence

import docx
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

LINE_CHARS = 90


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_stream(paragraphs: Sequence[str]) -> bytes:
    """Lines of 11 pt Helvetica from the top left; an empty line between paragraphs."""
    ops = [b"BT /F1 11 Tf 14 TL 56 760 Td"]
    for paragraph in paragraphs:
        for line in textwrap.wrap(paragraph, LINE_CHARS) or [""]:
            ops.append(_pdf_string(line) + b" Tj T*")
        ops.append(b"T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def make_pdf(pages: Sequence[Sequence[str]], *, title: str | None = None, password: str | None = None) -> bytes:
    """A PDF whose page i holds the paragraphs pages[i]; encrypted (AES-256) with `password` if given."""
    writer = PdfWriter()
    font = writer._add_object(  # pypdf has no public call to add a plain object
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
                NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
            }
        )
    )
    for paragraphs in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        content = DecodedStreamObject()
        content.set_data(_page_stream(paragraphs))
        page[NameObject("/Contents")] = writer._add_object(content)
    if title:
        writer.add_metadata({"/Title": title})
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(sections: Sequence[tuple[str | None, Sequence[str]]], *, table: Sequence[Sequence[str]] = ()) -> bytes:
    """A DOCX: for each (heading, paragraphs) a Heading 1 (if any) and its paragraphs; then an optional table."""
    document = docx.Document()
    for heading, paragraphs in sections:
        if heading:
            document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_zip_bomb_docx(unpacked_mib: int = 200) -> bytes:
    """A real DOCX with one extra member of `unpacked_mib` MiB of zeros (it packs ~1000:1)."""
    base = make_docx([("Bomb", ["harmless text"])])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        with dst.open("word/media/padding.bin", "w") as member:
            block = bytes(1 << 20)
            for _ in range(unpacked_mib):
                member.write(block)
    return out.getvalue()


def make_ole_encrypted() -> bytes:
    """The start of a password-protected Office file: an OLE2 container with an EncryptionInfo stream."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    return header + "EncryptionInfo".encode("utf-16-le") + bytes(1024)
