-- Accounts, conversations with their messages, and single-use websocket tickets.

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username text NOT NULL CHECK (char_length(username) BETWEEN 1 AND 64),
    password_hash text NOT NULL,  -- argon2id, PHC string format
    role text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz  -- soft delete: the row stays, the account is gone
);
-- One live account per username, compared case-insensitively; a deleted account's name can be taken again
-- (tokens name the user id, so an old token never reaches the new account).
CREATE UNIQUE INDEX users_username_live_key ON users (lower(username)) WHERE deleted_at IS NULL;

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text CHECK (char_length(title) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),  -- bumped by every stored message
    next_seq integer NOT NULL DEFAULT 1  -- the seq the next message gets; messages are 1..next_seq-1
);
-- A user's conversations, most recently updated first (keyset pagination on (updated_at, id)).
CREATE INDEX conversations_user_recent_idx ON conversations (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq integer NOT NULL CHECK (seq > 0),
    -- Chosen by the writer; a retried write with the same key in the same conversation is stored once.
    idempotency_key text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    reasoning text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'completed'
        CHECK (status IN ('completed', 'cancelled', 'interrupted', 'incomplete', 'failed', 'truncated')),
    heard_text text,  -- status 'truncated': the part of `content` the user heard before speaking over it
    audio_ms integer CHECK (audio_ms >= 0),
    attachments jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(attachments) = 'array'),
    timings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(timings) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),  -- also serves "messages in order"
    CONSTRAINT messages_idempotency_key UNIQUE (conversation_id, idempotency_key)
);

CREATE TABLE ws_tickets (
    ticket_hash bytea PRIMARY KEY,  -- sha256 of the ticket: the table holds nothing a client could present
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX ws_tickets_user_idx ON ws_tickets (user_id);
CREATE INDEX ws_tickets_expires_idx ON ws_tickets (expires_at);
