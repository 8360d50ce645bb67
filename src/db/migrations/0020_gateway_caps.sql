-- Caps on background model spend (docs/adr/0013-gateway-config-versions.md, "Caps"): the shortest interval
-- between two runs of one scheduled job (cron), per tenant and per agent, and the broker's record of each
-- scheduled job's last run, so a run that comes too soon after the last one is refused on every replica.

ALTER TABLE gateway_config_rules
  -- The shortest interval between two runs of one cron job, in minutes (null: no cap).
  ADD COLUMN cron_min_minutes integer CHECK (cron_min_minutes BETWEEN 1 AND 10080),
  -- Per agent: {"<agent id>": {"heartbeatMinMinutes": n, "cronMinMinutes": n}}; the stricter of the
  -- tenant's cap and the agent's applies.
  ADD COLUMN agent_caps jsonb NOT NULL DEFAULT '{}';

-- The last admitted run of each scheduled job (the heartbeat is one job per agent). `run` names the run
-- (a digest of its prompt), so the model calls of one run (its tool loop) pass and a new run is checked
-- against `started_at`.
CREATE TABLE scheduled_runs (
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent       text        NOT NULL,
  kind        text        NOT NULL CHECK (kind IN ('heartbeat', 'cron')),
  job         text        NOT NULL,
  run         text        NOT NULL,
  started_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, agent, kind, job)
);

-- Where a tenant's approval requests are posted (src/governance/approval-delivery.ts): one chat per kind,
-- reached with the tenant's own bot credential (a skill credential in the vault; only its id is here).
CREATE TABLE approval_channels (
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  kind           text        NOT NULL CHECK (kind IN ('telegram', 'slack')),
  credential_id  uuid        NOT NULL,
  -- Telegram chat id or Slack channel id.
  target         text        NOT NULL,
  updated_by     text        NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, kind),
  FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE CASCADE
);
