"""Documents for the model: text extraction, chunking, embeddings (Ollama /api/embed), retrieval from a
per-user library in PostgreSQL (pgvector), message attachments, and the cited context. docs/documents.md.

What a session calls (see library.py):

    attachment = await library.attach(filename, data, declared_type=mime)        # DocumentError if unusable
    context = await library.turn_context(user_id, question, attachments=[attachment], library=True)
    ... give context.text to the model with the turn; keep context.sources ...
    cited = cited_sources(answer_text, context)                                  # [n] -> Source
"""

from realtime.documents.chunking import Chunk, chunk_blocks, chunk_document
from realtime.documents.context import (
    CITATION_INSTRUCTIONS,
    EMPTY_CONTEXT,
    DocumentContext,
    Passage,
    Source,
    build_context,
    citation_numbers,
    cited_sources,
)
from realtime.documents.embeddings import DEFAULT_EMBED_MODEL, EMBEDDING_DIMENSIONS, Embeddings, OllamaEmbeddings
from realtime.documents.errors import (
    DocumentEmpty,
    DocumentEncrypted,
    DocumentError,
    DocumentNotFound,
    DocumentTooLarge,
    DocumentUnreadable,
    EmbeddingDimensionMismatch,
    EmbeddingModelNotFound,
    LibraryFull,
    UnsupportedDocumentType,
)
from realtime.documents.extract import Block, DocumentKind, DocumentLimits, ExtractedDocument, extract, sniff
from realtime.documents.library import Attachment, DocumentLibrary, clean_name

__all__ = [
    "CITATION_INSTRUCTIONS",
    "DEFAULT_EMBED_MODEL",
    "EMBEDDING_DIMENSIONS",
    "EMPTY_CONTEXT",
    "Attachment",
    "Block",
    "Chunk",
    "DocumentContext",
    "DocumentEmpty",
    "DocumentEncrypted",
    "DocumentError",
    "DocumentKind",
    "DocumentLibrary",
    "DocumentLimits",
    "DocumentNotFound",
    "DocumentTooLarge",
    "DocumentUnreadable",
    "Embeddings",
    "EmbeddingDimensionMismatch",
    "EmbeddingModelNotFound",
    "ExtractedDocument",
    "LibraryFull",
    "OllamaEmbeddings",
    "Passage",
    "Source",
    "UnsupportedDocumentType",
    "build_context",
    "chunk_blocks",
    "chunk_document",
    "citation_numbers",
    "cited_sources",
    "clean_name",
    "extract",
    "sniff",
]
