-- Ingress and backups (issue 7): the conversation archive (searchable with full-text search) and the
-- encrypted backups of instance state. Both belong to a tenant and survive the instance they came
-- from (no foreign key to instances): a backup must outlive a destroyed instance to be restored.

-- Every message that passed through the chat API, per tenant and session.
CREATE TABLE chat_messages (
  id           bigserial   PRIMARY KEY,
  tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id  uuid        NOT NULL,
  session_id   text        NOT NULL CHECK (length(session_id) BETWEEN 1 AND 128),
  agent        text        NOT NULL,
  role         text        NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content      text        NOT NULL,
  actor        text        NOT NULL,
  request_id   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  -- 'simple': no language-specific stemming, tenants write in any language.
  search       tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX chat_messages_session ON chat_messages (tenant_id, session_id, id);
CREATE INDEX chat_messages_search ON chat_messages USING gin (search);

-- One row per backup object in the object store; the object is AES-256-GCM under the tenant's data key.
CREATE TABLE instance_backups (
  id             uuid        PRIMARY KEY,
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id    uuid        NOT NULL,
  instance_name  text        NOT NULL,
  runtime_version text       NOT NULL,
  reason         text        NOT NULL CHECK (reason IN ('manual', 'stop', 'idle', 'periodic')),
  object_key     text        NOT NULL,
  -- Size of the encrypted object, and SHA-256 of the plaintext archive (checked again on restore).
  size_bytes     bigint      NOT NULL CHECK (size_bytes >= 0),
  sha256         text        NOT NULL,
  duration_ms    integer     NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_backups_instance ON instance_backups (tenant_id, instance_id, created_at);
