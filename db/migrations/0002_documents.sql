-- A user's document library: documents, cut into passages (chunks) with their embeddings, for retrieval.
-- Needs pgvector >= 0.8 (iterative HNSW index scans); the embedded PostgreSQL ships 0.8.6.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    media_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    sha256 bytea NOT NULL CHECK (octet_length(sha256) = 32),
    title text,
    page_count integer CHECK (page_count >= 0),  -- PDF only
    char_count integer NOT NULL CHECK (char_count >= 0),
    chunk_count integer NOT NULL CHECK (chunk_count >= 0),
    -- the model that embedded the chunks: vectors of two models are not comparable, so search filters on it
    embed_model text NOT NULL CHECK (char_length(embed_model) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_owner_key UNIQUE (id, user_id, embed_model)  -- target of the chunks' foreign key
);
-- A user's documents, newest first.
CREATE INDEX documents_user_recent_idx ON documents (user_id, created_at DESC, id DESC);

CREATE TABLE document_chunks (
    document_id uuid NOT NULL,
    ordinal integer NOT NULL CHECK (ordinal >= 0),  -- position in the document: 0, 1, 2...
    -- The document's owner and model, copied so every search filters on the chunk itself; the foreign key
    -- makes a chunk whose owner differs from its document's impossible.
    user_id uuid NOT NULL,
    embed_model text NOT NULL,
    page integer CHECK (page > 0),  -- 1-based PDF page
    section text,  -- the nearest heading
    content text NOT NULL,
    embedding vector(384) NOT NULL,
    content_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    PRIMARY KEY (document_id, ordinal),
    CONSTRAINT document_chunks_document_fkey FOREIGN KEY (document_id, user_id, embed_model)
        REFERENCES documents (id, user_id, embed_model) ON DELETE CASCADE
);
-- Nearest neighbours by cosine distance; filtered scans continue (hnsw.iterative_scan) until enough rows match.
CREATE INDEX document_chunks_embedding_idx ON document_chunks USING hnsw (embedding vector_cosine_ops);
-- Full-text half of hybrid search.
CREATE INDEX document_chunks_tsv_idx ON document_chunks USING gin (content_tsv);
-- A small library is searched exactly through this one (the planner's choice).
CREATE INDEX document_chunks_user_idx ON document_chunks (user_id, embed_model);
