-- The broker (issue 5): sandbox identities, model prices, usage metering, per-agent limits.

-- One row per sandbox start: its broker token (SHA-256 only), bound to tenant and instance.
CREATE TABLE sandbox_tokens (
  id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id  text        NOT NULL,
  sandbox_id   text        NOT NULL,
  token_hash   text        NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz
);
CREATE INDEX sandbox_tokens_tenant ON sandbox_tokens (tenant_id, created_at);

-- Price per million tokens, per model id (exact) or prefix ending in '*'. Editable by a platform admin.
CREATE TABLE model_prices (
  model                 text          PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 200),
  input_usd_per_mtok    numeric(12, 6) NOT NULL CHECK (input_usd_per_mtok >= 0),
  output_usd_per_mtok   numeric(12, 6) NOT NULL CHECK (output_usd_per_mtok >= 0),
  updated_at            timestamptz   NOT NULL DEFAULT now()
);

-- One row per model call through the broker.
CREATE TABLE llm_usage (
  id             bigserial     PRIMARY KEY,
  tenant_id      uuid          NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id    text,
  sandbox_token  uuid,
  agent          text          NOT NULL DEFAULT '',
  task_id        text,
  provider_id    uuid,
  provider_kind  text,
  model          text          NOT NULL,
  api            text          NOT NULL,
  input_tokens   integer       NOT NULL DEFAULT 0,
  output_tokens  integer       NOT NULL DEFAULT 0,
  cost_usd       numeric(14, 8) NOT NULL DEFAULT 0,
  latency_ms     integer       NOT NULL,
  status         integer       NOT NULL,
  outcome        text          NOT NULL CHECK (outcome IN ('ok', 'upstream_error', 'fallback', 'refused', 'client_aborted')),
  created_at     timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX llm_usage_tenant_time ON llm_usage (tenant_id, created_at);
CREATE INDEX llm_usage_task ON llm_usage (tenant_id, task_id) WHERE task_id IS NOT NULL;

-- Caps a tenant admin sets per agent ('' = the whole tenant), below the platform's daily budgets.
CREATE TABLE broker_limits (
  tenant_id           uuid          NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent               text          NOT NULL DEFAULT '',
  daily_tokens        bigint        CHECK (daily_tokens >= 0),
  daily_cost_usd      numeric(14, 4) CHECK (daily_cost_usd >= 0),
  requests_per_minute integer       CHECK (requests_per_minute >= 0),
  max_calls_per_task  integer       CHECK (max_calls_per_task >= 0),
  updated_at          timestamptz   NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, agent)
);
