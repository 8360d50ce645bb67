-- Durable tasks (issue 8): agents, tasks with their trace and messages, approvals, agent memory and
-- skill statistics. The workflow state itself lives in DBOS's schema (workflow id = task id).

-- Per-tenant agent definitions that dispatch matches tasks against.
CREATE TABLE agents (
  id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name          text        NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  agent_type    text        NOT NULL CHECK (agent_type IN ('chat', 'coding', 'research', 'shell', 'browser')),
  capabilities  text[]      NOT NULL DEFAULT '{}',
  model         text,
  trust_level   integer     NOT NULL DEFAULT 1 CHECK (trust_level BETWEEN 0 AND 3),
  risk_class    text        NOT NULL DEFAULT 'standard' CHECK (risk_class IN ('standard', 'high')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

-- Success rate per agent and skill (capability), updated by each task's evaluation.
CREATE TABLE agent_skills (
  tenant_id   uuid    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent_id    uuid    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  skill       text    NOT NULL,
  attempts    integer NOT NULL DEFAULT 0,
  successes   integer NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (agent_id, skill)
);

-- What an agent remembers from earlier tasks; recalled by full-text search.
CREATE TABLE agent_memories (
  id          bigserial   PRIMARY KEY,
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent_id    uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  task_id     uuid,
  content     text        NOT NULL,
  importance  real        NOT NULL CHECK (importance BETWEEN 0 AND 1),
  search      tsvector    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_memories_search ON agent_memories USING gin (search);
CREATE INDEX agent_memories_agent ON agent_memories (tenant_id, agent_id, importance);

CREATE TABLE tasks (
  id               uuid        PRIMARY KEY,
  tenant_id        uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  parent_id        uuid        REFERENCES tasks (id) ON DELETE CASCADE,
  root_id          uuid        NOT NULL,
  agent_id         uuid        REFERENCES agents (id) ON DELETE SET NULL,
  requested_agent  text,
  capability       text,
  input            text        NOT NULL,
  priority         text        NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
  status           text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'dispatched', 'executing', 'waiting_approval', 'delegated', 'completed', 'failed', 'cancelled', 'expired')),
  status_reason    text        NOT NULL DEFAULT '',
  idempotency_key  text,
  created_by       text        NOT NULL,
  queue_name       text,
  output           text,
  confidence       real,
  input_tokens     integer     NOT NULL DEFAULT 0,
  output_tokens    integer     NOT NULL DEFAULT 0,
  cost_usd         numeric(14, 8) NOT NULL DEFAULT 0,
  attempts         integer     NOT NULL DEFAULT 0,
  deadline_at      timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  dispatched_at    timestamptz,
  finished_at      timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_list ON tasks (tenant_id, created_at DESC, id DESC);
CREATE INDEX tasks_status ON tasks (tenant_id, status);
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;

-- The trace: every step and event of a task, in order (also the SSE stream's source).
CREATE TABLE task_events (
  id          bigserial   PRIMARY KEY,
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  step        text        NOT NULL,
  kind        text        NOT NULL,
  detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_task ON task_events (tenant_id, task_id, id);

-- The conversation of a task with its agent.
CREATE TABLE task_messages (
  id          bigserial   PRIMARY KEY,
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  role        text        NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content     text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_messages_task ON task_messages (tenant_id, task_id, id);

-- A task parked for a person: a broker tool approval (tool_approvals) or an exec approval.
CREATE TABLE task_approvals (
  id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  task_id           uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  tool_approval_id  uuid        REFERENCES tool_approvals (id) ON DELETE SET NULL,
  kind              text        NOT NULL CHECK (kind IN ('tool', 'exec')),
  tool              text        NOT NULL,
  summary           text        NOT NULL,
  status            text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
  expires_at        timestamptz NOT NULL,
  decided_by        text,
  decided_at        timestamptz,
  comment           text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (task_id, tool_approval_id)
);
CREATE INDEX task_approvals_pending ON task_approvals (tenant_id, created_at) WHERE status = 'pending';
CREATE INDEX task_approvals_task ON task_approvals (tenant_id, task_id);

-- Where approval notifications go (a chat tool's incoming webhook); the HMAC key is a platform secret.
CREATE TABLE task_webhooks (
  tenant_id   uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  url         text        NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
