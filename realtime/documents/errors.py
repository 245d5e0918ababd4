"""The documents' errors: each a ClientError or ServerError of realtime.errors with its own stable code.

A document that cannot be used is the client's problem (ClientError: the message says what is wrong
and is safe to show); the embedding service failing is ours (UpstreamError family: generic message).
`HTTP_STATUS` gives the HTTP API's status for each code.
"""

from __future__ import annotations

from realtime.errors import ClientError, ModelNotFound, ServerError


class DocumentError(ClientError):
    """A document that cannot be read or stored."""

    code = "document_error"
    safe_message = "The document cannot be used."


class UnsupportedDocumentType(DocumentError):
    """The content is not one of the formats we read (whatever its name or declared type says)."""

    code = "unsupported_document_type"
    safe_message = "This type of file is not supported: send plain text, Markdown, HTML, PDF or DOCX."


class DocumentUnreadable(DocumentError):
    """The content looks like a supported format but cannot be parsed (damaged, truncated, malformed)."""

    code = "document_unreadable"
    safe_message = "The document could not be read; it may be damaged."


class DocumentEncrypted(DocumentError):
    """Password-protected: we do not guess passwords."""

    code = "document_encrypted"
    safe_message = "The document is password-protected; remove the password and send it again."


class DocumentTooLarge(DocumentError):
    """Over a limit: bytes, pages, extracted characters, or the uncompressed size of a DOCX (zip bomb)."""

    code = "document_too_large"
    safe_message = "The document is too large."


class DocumentEmpty(DocumentError):
    """Readable, but no text in it (an image-only PDF needs OCR, which this server does not do)."""

    code = "document_empty"
    safe_message = "No text could be found in the document."


class DocumentNotFound(DocumentError):
    """No such document for this user (another user's document looks exactly like a missing one)."""

    code = "document_not_found"
    safe_message = "No such document."


class LibraryFull(DocumentError):
    code = "document_library_full"
    safe_message = "The document library is full; delete documents to add new ones."


class EmbeddingModelNotFound(ModelNotFound):
    code = "embedding_model_not_found"
    safe_message = "The embedding model is not available on the model server."


class EmbeddingDimensionMismatch(ServerError):
    """The configured embedding model's vectors do not fit the store's column (a configuration error)."""

    code = "embedding_dimension_mismatch"
    safe_message = "The embedding model does not match the document store."


HTTP_STATUS: dict[str, int] = {
    UnsupportedDocumentType.code: 415,
    DocumentUnreadable.code: 422,
    DocumentEncrypted.code: 422,
    DocumentEmpty.code: 422,
    DocumentTooLarge.code: 413,
    DocumentNotFound.code: 404,
    LibraryFull.code: 409,
}
