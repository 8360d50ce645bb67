-- Knowledge from the gateway and session ingestion (docs/adr/0007).
--
-- The clawplane-knowledge plugin's tools, in the registry so a tenant's Cedar policy can take them away
-- like any tool (the rendered config leaves a denied one out, and the broker refuses its route).
INSERT INTO policy_tools (name, risk, tool_group, description) VALUES
  ('memory_store',   'low', 'knowledge', 'Store a memory for later conversations and tasks'),
  ('memory_recall',  'low', 'knowledge', 'Search the memories of the tenant''s agents'),
  ('finding_record', 'low', 'knowledge', 'Record a finding'),
  ('finding_search', 'low', 'knowledge', 'Search the tenant''s findings')
ON CONFLICT (name) DO NOTHING;

-- What the ingestion job has summarised: one row per chat session or task. `upto` is the last archive
-- message id a chat summary covers (a session that grew past it is summarised again); a task's is 1.
-- A replica claims a row (claimed_by, claimed_until) before calling the model, so one does the work.
CREATE TABLE conversation_ingests (
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  source         text        NOT NULL CHECK (source IN ('chat', 'task')),
  source_id      text        NOT NULL CHECK (length(source_id) BETWEEN 1 AND 128),
  upto           bigint      NOT NULL DEFAULT 0,
  claimed_by     text,
  claimed_until  timestamptz,
  summary_id     bigint,
  memory_id      bigint,
  model          text,
  attempts       integer     NOT NULL DEFAULT 0,
  last_error     text,
  ingested_at    timestamptz,
  PRIMARY KEY (tenant_id, source, source_id)
);
-- The sweep looks only at recent archive messages and recently finished tasks.
CREATE INDEX chat_messages_created ON chat_messages (created_at);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
