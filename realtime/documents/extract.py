"""Bytes in, text with its anchors out: plain text, Markdown, HTML, PDF and DOCX.

The format is decided by the content, never by the name: magic numbers for PDF, ZIP (a DOCX is a ZIP
holding word/document.xml) and the OLE2 container (legacy .doc, or an encrypted Office file); other
content must decode as text, and is HTML when it starts like HTML. The name or declared media type
only chooses between Markdown and plain text, and turns "content that is text" into a clear error
when the file claims to be a PDF or DOCX.

Limits are checked before and during the work: the size in bytes, the PDF's page count, the extracted
characters, and for a DOCX the members' total uncompressed size and each member's compression ratio (a
zip bomb is refused before anything is inflated; Python's zipfile never reads past the sizes checked).
Every failure is a DocumentError with a stable code (realtime/documents/errors.py).

`extract()` is blocking CPU work (pypdf on a long PDF takes seconds): call it in a worker thread.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from realtime.documents.errors import (
    DocumentEmpty,
    DocumentEncrypted,
    DocumentError,
    DocumentTooLarge,
    DocumentUnreadable,
    UnsupportedDocumentType,
)

log = logging.getLogger("realtime.documents.extract")


class DocumentKind(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"
    DOCX = "docx"


MEDIA_TYPES: dict[DocumentKind, str] = {
    DocumentKind.TEXT: "text/plain",
    DocumentKind.MARKDOWN: "text/markdown",
    DocumentKind.HTML: "text/html",
    DocumentKind.PDF: "application/pdf",
    DocumentKind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_EXTENSIONS: dict[str, DocumentKind] = {
    ".txt": DocumentKind.TEXT,
    ".text": DocumentKind.TEXT,
    ".md": DocumentKind.MARKDOWN,
    ".markdown": DocumentKind.MARKDOWN,
    ".mdown": DocumentKind.MARKDOWN,
    ".mkd": DocumentKind.MARKDOWN,
    ".htm": DocumentKind.HTML,
    ".html": DocumentKind.HTML,
    ".xhtml": DocumentKind.HTML,
    ".pdf": DocumentKind.PDF,
    ".docx": DocumentKind.DOCX,
}
_DECLARED: dict[str, DocumentKind] = {media: kind for kind, media in MEDIA_TYPES.items()} | {
    "text/x-markdown": DocumentKind.MARKDOWN,
    "application/xhtml+xml": DocumentKind.HTML,
    "application/x-pdf": DocumentKind.PDF,
}
# Content we recognise to say what it is rather than "not text".
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "a program"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
    (b"ID3", "an MP3 file"),
    (b"OggS", "an Ogg file"),
    (b"fLaC", "a FLAC file"),
)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_OTHER_ZIPS = (
    ("xl/workbook.xml", "an Excel workbook"),
    ("ppt/presentation.xml", "a PowerPoint presentation"),
    ("content.xml", "an OpenDocument file"),
    ("META-INF/container.xml", "an EPUB book"),
)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What a document may be. Sizes in bytes; `max_chars` counts the extracted text."""

    max_size: int = 20 << 20
    max_pages: int = 300
    max_chars: int = 1_000_000
    max_uncompressed_size: int = 100 << 20  # DOCX: all members together, unpacked
    # DOCX: a member over 1 MiB unpacked may be at most this many times its packed size
    max_compression_ratio: int = 100
    max_zip_members: int = 5000


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph (or heading, table, code block) with where it sits: PDF page (1-based), nearest heading."""

    text: str
    page: int | None = None
    section: str | None = None
    heading: bool = False


@dataclass(frozen=True, slots=True)
class ExtractedDocument:
    kind: DocumentKind
    blocks: tuple[Block, ...]
    title: str | None
    page_count: int | None  # PDF only
    char_count: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]

    def text(self) -> str:
        """The whole text with its anchors: `[page N]` lines for a PDF, `#` headings for the others."""
        parts: list[str] = []
        page: int | None = None
        for block in self.blocks:
            if block.page is not None and block.page != page:
                page = block.page
                parts.append(f"[page {page}]")
            parts.append(f"# {block.text}" if block.heading and self.kind != DocumentKind.PDF else block.text)
        return "\n\n".join(parts)


def extract(
    data: bytes,
    *,
    filename: str | None = None,
    declared_type: str | None = None,
    limits: DocumentLimits | None = None,
) -> ExtractedDocument:
    """The document's text in blocks. Raises a DocumentError subclass for anything it cannot use."""
    limits = limits or DocumentLimits()
    if len(data) > limits.max_size:
        raise DocumentTooLarge(f"The document has {len(data):,} bytes; at most {limits.max_size:,} are accepted.")
    claimed = claimed_kind(filename, declared_type)
    kind = sniff(data, claimed)
    with warnings.catch_warnings():
        # parsers warn about every oddity of real-world files; what matters becomes an error below
        warnings.simplefilter("ignore")
        try:
            if kind == DocumentKind.PDF:
                blocks, title, pages = _pdf(data, limits)
            elif kind == DocumentKind.DOCX:
                blocks, title, pages = _docx(data, limits), None, None
            else:
                text = decode_text(data)
                _check_chars(len(text), limits)
                if kind == DocumentKind.HTML:
                    blocks, title = _html(text)
                elif kind == DocumentKind.MARKDOWN:
                    blocks, title = markdown_blocks(text), None
                else:
                    blocks, title = plain_blocks(text), None
                pages = None
        except DocumentError:
            raise
        except RecursionError as exc:
            raise DocumentUnreadable("The document is nested too deeply to be read.") from exc
        except Exception as exc:
            log.info("%s document unreadable: %s: %s", kind, type(exc).__name__, exc)
            raise DocumentUnreadable(f"The {_NAMES[kind]} could not be read; it may be damaged.") from exc
    chars = sum(len(b.text) for b in blocks)
    _check_chars(chars, limits)
    if not any(not b.heading for b in blocks):
        if kind == DocumentKind.PDF:
            raise DocumentEmpty("No text could be found in the PDF (a scanned PDF needs OCR, which is not done here).")
        raise DocumentEmpty()
    if title is None:
        title = next((b.text for b in blocks if b.heading), None)
    return ExtractedDocument(kind=kind, blocks=tuple(blocks), title=title, page_count=pages, char_count=chars)


_NAMES = {
    DocumentKind.TEXT: "text file",
    DocumentKind.MARKDOWN: "Markdown file",
    DocumentKind.HTML: "HTML page",
    DocumentKind.PDF: "PDF",
    DocumentKind.DOCX: "Word document",
}


def claimed_kind(filename: str | None, declared_type: str | None) -> DocumentKind | None:
    """What the name or the declared media type says (a hint, never trusted for binary formats)."""
    if declared_type:
        media = declared_type.split(";", 1)[0].strip().lower()
        if media in _DECLARED:
            return _DECLARED[media]
    if filename:
        return _EXTENSIONS.get(PurePosixPath(filename.replace("\\", "/")).suffix.lower())
    return None


def sniff(data: bytes, claimed: DocumentKind | None = None) -> DocumentKind:
    """The document's kind from its content; `claimed` only picks Markdown over plain text."""
    head = data[:1024]
    if b"%PDF-" in head:
        return DocumentKind.PDF
    if data.startswith(_ZIP):
        return _sniff_zip(data)
    if data.startswith(_OLE2):
        if "EncryptionInfo".encode("utf-16-le") in data:
            raise DocumentEncrypted("The Office document is password-protected; remove the password and send it again.")
        raise UnsupportedDocumentType(
            "Word 97-2003 (.doc) and other legacy Office files are not supported; save the file as DOCX."
        )
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise UnsupportedDocumentType(f"The file is {what}; send plain text, Markdown, HTML, PDF or DOCX.")
    if data[8:12] == b"WEBP" or data[4:8] == b"ftyp":
        raise UnsupportedDocumentType("The file is an image or a video; send plain text, Markdown, HTML, PDF or DOCX.")
    sample = decode_text(data[:4096], sample=True)  # UnsupportedDocumentType for binary content
    if claimed in (DocumentKind.PDF, DocumentKind.DOCX):
        # text, named like a PDF or DOCX: damaged, or something else entirely
        raise DocumentUnreadable(f"The file is not a valid {_NAMES[claimed]}.")
    if _looks_like_html(sample):
        return DocumentKind.HTML
    if claimed in (DocumentKind.MARKDOWN, DocumentKind.TEXT):
        return claimed
    return DocumentKind.MARKDOWN if _looks_like_markdown(sample) else DocumentKind.TEXT


def _sniff_zip(data: bytes) -> DocumentKind:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DocumentUnreadable("The file is a damaged ZIP archive.") from exc
    if "word/document.xml" in names:
        return DocumentKind.DOCX
    for member, what in _OTHER_ZIPS:
        if member in names:
            raise UnsupportedDocumentType(f"The file is {what}; send plain text, Markdown, HTML, PDF or DOCX.")
    raise UnsupportedDocumentType("The file is a ZIP archive; send the documents in it one by one.")


_HTML_START = re.compile(r"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
_HTML_TAGS = re.compile(r"<(head|body|p|div|h[1-6]|article|section|title)[\s>]", re.I)
_MD_HEADING = re.compile(r"^ {0,3}#{1,6}\s+\S", re.M)
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.M)


def _looks_like_html(text: str) -> bool:
    if _HTML_START.match(text):
        return True
    stripped = text.lstrip()
    return stripped.startswith("<") and len(_HTML_TAGS.findall(text)) >= 2


def _looks_like_markdown(text: str) -> bool:
    return bool(_MD_HEADING.search(text) or _MD_FENCE.search(text))


def decode_text(data: bytes, *, sample: bool = False) -> str:
    """Text from bytes: a BOM, else UTF-8, else the encoding charset-normalizer finds. Binary content is
    UnsupportedDocumentType. With `sample`, `data` may end mid-character."""
    text: str | None = None
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            text = data.decode(codec, errors="replace" if sample else "strict")
            break
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if sample and exc.start >= len(data) - 3:
                text = data[: exc.start].decode("utf-8")
            elif b"\x00" in data[:8192]:
                raise _binary() from exc
            else:
                text = _guess_decode(data)
    if _is_binary(text[:4096]):
        raise _binary()
    return text


def _guess_decode(data: bytes) -> str:
    """charset-normalizer's best guess; Windows-1252 where it fits as well (short Western text often fits
    several Latin code pages equally, and 1252 is what such files most often are)."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise _binary()
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos and match.coherence >= best.coherence - 0.01:
            return str(match)
    return str(best)


def _is_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    return controls > max(8, len(text) // 20)


def _binary() -> UnsupportedDocumentType:
    return UnsupportedDocumentType("The file is not text, PDF or DOCX; send plain text, Markdown, HTML, PDF or DOCX.")


def _check_chars(chars: int, limits: DocumentLimits) -> None:
    if chars > limits.max_chars:
        raise DocumentTooLarge(f"The document holds over {limits.max_chars:,} characters of text, the most accepted.")


# ---- text, Markdown ----

_SPACES = re.compile(r"[ \t\u00a0]+")
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")


def _clean(text: str) -> str:
    """Trailing spaces gone, runs of spaces one, control characters dropped (tabs and newlines kept)."""
    text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc")
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()


def _paragraphs(text: str) -> Iterator[str]:
    for part in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        cleaned = _clean(part)
        if cleaned:
            yield cleaned


def plain_blocks(text: str) -> list[Block]:
    """Paragraphs separated by blank lines; a form feed starts a new one."""
    return [Block(p) for p in _paragraphs(text.replace("\f", "\n\n"))]


def markdown_blocks(text: str) -> list[Block]:
    """Paragraphs with the nearest ATX (`#`) or setext heading as their section; code fences kept whole."""
    blocks: list[Block] = []
    section: str | None = None
    lines: list[str] = []
    fence: str | None = None

    def flush(verbatim: bool = False) -> None:
        content = "\n".join(lines).strip("\n") if verbatim else _clean("\n".join(lines))
        if content:
            blocks.append(Block(content, section=section))
        lines.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = raw.strip()
        if fence is not None:
            lines.append(raw)
            if stripped.startswith(fence):
                flush(verbatim=True)
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            flush()
            fence = stripped[:3]
            lines.append(raw)
            continue
        atx = _ATX.match(raw)
        heading: str | None = None
        if atx is not None:
            flush()
            heading = _clean(atx.group(2))
        elif _SETEXT.match(raw):
            if len(lines) == 1:  # "Title" over "=====": the line above is a heading
                heading = _clean(lines.pop())
            else:  # a thematic break ("---") ends the paragraph
                flush()
                continue
        if heading is not None:
            if heading:
                section = heading
                blocks.append(Block(heading, section=section, heading=True))
            continue
        if stripped:
            lines.append(raw)
        else:
            flush()
    flush(verbatim=fence is not None)
    return blocks


# ---- HTML ----


def _html(text: str) -> tuple[list[Block], str | None]:
    """The main content as trafilatura finds it (as Markdown, so headings survive), unless it found no more
    than every visible block anyway: then the blocks with their headings (trafilatura's fallback for short
    pages is flat text)."""
    import trafilatura

    title = None
    metadata = trafilatura.extract_metadata(text)
    if metadata is not None and metadata.title:
        title = _clean(metadata.title)
    markdown = trafilatura.extract(
        text,
        output_format="markdown",
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_recall=True,
        deduplicate=False,
    )
    visible = _html_blocks(text)
    main = markdown_blocks(markdown) if markdown and markdown.strip() else []
    main_chars, visible_chars = sum(len(b.text) for b in main), sum(len(b.text) for b in visible)
    flat = not any(b.heading for b in main) and any(b.heading for b in visible)
    if not main or (flat and main_chars >= 0.8 * visible_chars):
        return visible, title
    return main, title


_HTML_BLOCKS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"})


def _html_blocks(text: str) -> list[Block]:
    """Every innermost block element's text, headings as sections; the body's text if there are none."""
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True)
    root = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    for bad in root.xpath("//script|//style|//noscript|//template|//head"):
        bad.drop_tree()
    blocks: list[Block] = []
    section: str | None = None
    for element in root.iter(*_HTML_BLOCKS):
        if any(child.tag in _HTML_BLOCKS for child in element.iterdescendants()):
            continue  # its inner blocks are taken one by one
        content = _clean(element.text_content())
        if not content:
            continue
        if element.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            section = content
            blocks.append(Block(content, section=section, heading=True))
        else:
            blocks.append(Block(content, section=section))
    if not blocks:
        blocks = plain_blocks(root.text_content())
    return blocks


# ---- PDF ----

_HYPHENATED = re.compile(r"(\w)-\n(\w)")


def _pdf(data: bytes, limits: DocumentLimits) -> tuple[list[Block], str | None, int]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            # an owner password alone (printing/copying restrictions) leaves the text readable
            readable = reader.decrypt("")
        except (DependencyError, NotImplementedError, FileNotDecryptedError) as exc:
            raise DocumentEncrypted("The PDF is encrypted in a way this server cannot open.") from exc
        if not readable:
            raise DocumentEncrypted("The PDF is password-protected; remove the password and send it again.")
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise DocumentTooLarge(f"The PDF has {pages} pages; at most {limits.max_pages} are accepted.")
    blocks: list[Block] = []
    chars = 0
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        chars += len(text)
        _check_chars(chars, limits)
        text = _HYPHENATED.sub(r"\1\2", text.replace("\r\n", "\n"))
        for paragraph in _pdf_paragraphs(text):
            blocks.append(Block(paragraph, page=number))
    title = None
    try:
        meta = reader.metadata
        if meta is not None and meta.title:
            title = _clean(str(meta.title)) or None
    except Exception:  # metadata is optional and often malformed: never a reason to refuse the text
        title = None
    return blocks, title, pages


def _pdf_paragraphs(text: str) -> list[str]:
    """A page's lines joined into paragraphs. The text has no paragraph marks: a line that ends a sentence
    well short of the page's longest line ends its paragraph (as does an empty line)."""
    lines = [_clean(line) for line in text.split("\n")]
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        if current and (not line or (line[-1] in '.!?:\u201d"' and len(line) < 0.8 * width)):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


# ---- DOCX ----

_MIB = 1 << 20


def check_zip(data: bytes, limits: DocumentLimits) -> None:
    """Refuse a ZIP whose members would unpack too large (in total, or one far too compressed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DocumentUnreadable("The file is a damaged ZIP archive.") from exc
    if len(infos) > limits.max_zip_members:
        raise DocumentTooLarge(f"The document holds {len(infos)} parts; at most {limits.max_zip_members} are accepted.")
    total = 0
    for info in infos:
        total += info.file_size
        if total > limits.max_uncompressed_size:
            raise DocumentTooLarge(
                f"The document unpacks to over {limits.max_uncompressed_size // _MIB} MiB, the most accepted."
            )
        if info.file_size > _MIB and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            raise DocumentTooLarge(
                f"A part of the document is compressed {info.file_size // max(info.compress_size, 1)}:1, "
                "which only a zip bomb does; it was not unpacked."
            )


def _docx(data: bytes, limits: DocumentLimits) -> list[Block]:
    check_zip(data, limits)
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    section: str | None = None
    chars = 0
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            text = _table_text(item.rows)
            is_heading = False
        else:
            text = _clean(item.text)
            style = (item.style.name if item.style is not None else "") or ""
            is_heading = style == "Title" or style.startswith("Heading")
        if not text:
            continue
        chars += len(text)
        _check_chars(chars, limits)
        if is_heading:
            section = text
        blocks.append(Block(text, section=section, heading=is_heading))
    return blocks


def _table_text(rows: Iterable[object]) -> str:
    lines = []
    for row in rows:
        cells: list[str] = []
        for cell in row.cells:  # type: ignore[attr-defined]
            content = _clean(cell.text).replace("\n", " ")
            if not cells or cells[-1] != content:  # a merged cell repeats in every column it spans
                cells.append(content)
        line = " | ".join(cells).strip(" |")
        if line:
            lines.append(line)
    return "\n".join(lines)
