-- Knowledge: agent memory people can see and correct, findings, and search by meaning (docs/adr/0007).
--
-- Memories: free-text notes or key/value entries, per agent or (agent_id NULL) for every agent of the
-- tenant, with an optional expiry. A key is unique per tenant and agent (NULL agent included).
ALTER TABLE agent_memories ALTER COLUMN agent_id DROP NOT NULL;
ALTER TABLE agent_memories ADD COLUMN kind text NOT NULL DEFAULT 'note' CHECK (kind IN ('note', 'kv'));
ALTER TABLE agent_memories ADD COLUMN key text CHECK (length(key) BETWEEN 1 AND 200);
ALTER TABLE agent_memories ADD CONSTRAINT agent_memories_kv_key CHECK ((kind = 'kv') = (key IS NOT NULL));
ALTER TABLE agent_memories ADD COLUMN expires_at timestamptz;
ALTER TABLE agent_memories ADD COLUMN created_by text NOT NULL DEFAULT 'system';
ALTER TABLE agent_memories ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
-- The key is searchable too.
ALTER TABLE agent_memories DROP COLUMN search;
ALTER TABLE agent_memories ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(key, '') || ' ' || content)) STORED;
CREATE INDEX agent_memories_search ON agent_memories USING gin (search);
CREATE UNIQUE INDEX agent_memories_key ON agent_memories (tenant_id, coalesce(agent_id, '00000000-0000-0000-0000-000000000000'::uuid), key) WHERE key IS NOT NULL;
CREATE INDEX agent_memories_recent ON agent_memories (tenant_id, id DESC);

-- Findings: what tasks or people found out, with where from and how sure.
-- array_to_string is only STABLE in general (element output functions); for text[] it is immutable.
CREATE FUNCTION knowledge_tags_text(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string($1, ' ') $$;
CREATE TABLE findings (
  id          uuid        PRIMARY KEY,
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  title       text        NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
  body        text        NOT NULL CHECK (length(body) <= 20000),
  sources     text[]      NOT NULL DEFAULT '{}',
  tags        text[]      NOT NULL DEFAULT '{}',
  confidence  real        NOT NULL CHECK (confidence BETWEEN 0 AND 1),
  task_id     uuid,
  created_by  text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  search      tsvector    GENERATED ALWAYS AS (
    setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'B') ||
    setweight(to_tsvector('simple', knowledge_tags_text(tags)), 'A')) STORED
);
CREATE INDEX findings_search ON findings USING gin (search);
CREATE INDEX findings_recent ON findings (tenant_id, created_at DESC, id);
CREATE INDEX findings_tags ON findings USING gin (tags);

-- Embeddings: float32 little-endian, unit length, as bytea (no pgvector here, docs/adr/0007), their sign
-- bits (the sketch replicas keep in memory to pick candidates), and the "<provider id>/<model>" that made
-- them: vectors of different models are never compared. Every new
-- vector takes the next value of one sequence, so a replica's in-process index catches up by asking
-- for rows past the last value it saw.
CREATE SEQUENCE knowledge_embed_seq;
ALTER TABLE agent_memories ADD COLUMN embedding bytea, ADD COLUMN sketch bytea, ADD COLUMN embedding_model text, ADD COLUMN embed_seq bigint;
ALTER TABLE findings ADD COLUMN embedding bytea, ADD COLUMN sketch bytea, ADD COLUMN embedding_model text, ADD COLUMN embed_seq bigint;
ALTER TABLE chat_messages ADD COLUMN embedding bytea, ADD COLUMN sketch bytea, ADD COLUMN embedding_model text, ADD COLUMN embed_seq bigint;
CREATE INDEX agent_memories_embed ON agent_memories (tenant_id, embed_seq) WHERE embed_seq IS NOT NULL;
CREATE INDEX findings_embed ON findings (tenant_id, embed_seq) WHERE embed_seq IS NOT NULL;
CREATE INDEX chat_messages_embed ON chat_messages (tenant_id, embed_seq) WHERE embed_seq IS NOT NULL;
-- What the embedding sweep still has to do, cheaply: rows without a vector of the current model.
CREATE INDEX agent_memories_unembedded ON agent_memories (tenant_id, id) WHERE embedding IS NULL;
CREATE INDEX findings_unembedded ON findings (tenant_id, id) WHERE embedding IS NULL;
CREATE INDEX chat_messages_unembedded ON chat_messages (tenant_id, id) WHERE embedding IS NULL;
