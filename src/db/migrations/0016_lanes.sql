-- Lanes (docs/lanes.md): per-tenant projects, named pipelines of agent steps run on a schedule or on demand,
-- their runs and step records, the artifacts runs write, and the tenant's time zone their schedules use.
-- Scheduling fires each slot once across replicas (docs/adr/0012-lane-scheduling.md).

-- Cron schedules are read in this IANA zone (a lane at "0 2 * * *" runs at 02:00 the tenant's time).
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64);

-- What a tenant's agents may work on, narrowing the platform's lane settings (platform_settings 'lanes').
CREATE TABLE projects (
  id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name            text        NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  description     text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  repositories    text[]      NOT NULL DEFAULT '{}',
  hosts           text[]      NOT NULL DEFAULT '{}',
  data_sources    text[]      NOT NULL DEFAULT '{}',
  -- Lane kinds this project enables (health, analysis, content, browser, custom).
  lane_kinds      text[]      NOT NULL DEFAULT '{}',
  runs_per_day    integer     NOT NULL CHECK (runs_per_day >= 0),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, id)
);

CREATE TABLE lanes (
  id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  project_id    uuid        NOT NULL,
  name          text        NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  kind          text        NOT NULL CHECK (kind IN ('health', 'analysis', 'content', 'browser', 'custom')),
  description   text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  -- [{name, agent?, capability?, input, requiresApproval}], in order.
  steps         jsonb       NOT NULL CHECK (jsonb_typeof(steps) = 'array'),
  read_only     boolean     NOT NULL DEFAULT true,
  harmless      boolean     NOT NULL DEFAULT false,
  enabled       boolean     NOT NULL DEFAULT false,
  -- Five-field cron in the tenant's time zone; NULL = on demand only.
  schedule      text,
  catch_up      text        NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('run-once', 'skip')),
  -- The next slot the scheduler will fire; advanced by compare-and-set (ADR 0012).
  next_slot_at  timestamptz,
  created_by    text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX lanes_due ON lanes (next_slot_at) WHERE enabled AND schedule IS NOT NULL;

-- One run of a lane; workflow id = run id. A scheduled run is unique per (lane, slot): the insert that
-- loses a race between replicas does nothing.
CREATE TABLE lane_runs (
  id             uuid        PRIMARY KEY,
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  lane_id        uuid        NOT NULL,
  lane_name      text        NOT NULL,
  trigger        text        NOT NULL CHECK (trigger IN ('schedule', 'catch-up', 'manual')),
  slot_at        timestamptz,
  status         text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')),
  status_reason  text        NOT NULL DEFAULT '',
  created_by     text        NOT NULL,
  summary_key    text,
  artifact_bytes bigint      NOT NULL DEFAULT 0,
  input_tokens   bigint      NOT NULL DEFAULT 0,
  output_tokens  bigint      NOT NULL DEFAULT 0,
  cost_usd       numeric(14, 8) NOT NULL DEFAULT 0,
  model_calls    integer     NOT NULL DEFAULT 0,
  created_at     timestamptz NOT NULL DEFAULT now(),
  started_at     timestamptz,
  finished_at    timestamptz,
  UNIQUE (lane_id, slot_at),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, lane_id) REFERENCES lanes (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX lane_runs_list ON lane_runs (tenant_id, created_at DESC, id DESC);

CREATE TABLE lane_run_steps (
  tenant_id          uuid        NOT NULL,
  run_id             uuid        NOT NULL,
  idx                smallint    NOT NULL,
  name               text        NOT NULL,
  requires_approval  boolean     NOT NULL DEFAULT false,
  status             text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'waiting_approval', 'running', 'succeeded', 'failed', 'skipped')),
  status_reason      text        NOT NULL DEFAULT '',
  task_id            uuid,
  decided_by         text,
  input_tokens       bigint      NOT NULL DEFAULT 0,
  output_tokens      bigint      NOT NULL DEFAULT 0,
  cost_usd           numeric(14, 8) NOT NULL DEFAULT 0,
  model_calls        integer     NOT NULL DEFAULT 0,
  started_at         timestamptz,
  finished_at        timestamptz,
  PRIMARY KEY (run_id, idx),
  FOREIGN KEY (tenant_id, run_id) REFERENCES lane_runs (tenant_id, id) ON DELETE CASCADE
);

-- Objects runs wrote to the tenant's prefix of the object store; kept for billing after a lane is gone.
CREATE TABLE lane_artifacts (
  id          bigserial   PRIMARY KEY,
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  run_id      uuid        NOT NULL,
  object_key  text        NOT NULL UNIQUE,
  size_bytes  bigint      NOT NULL CHECK (size_bytes >= 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lane_artifacts_tenant_time ON lane_artifacts (tenant_id, created_at);
