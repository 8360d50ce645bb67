-- Versioned gateway configuration (docs/adr/0013-gateway-config-versions.md): every change to what a
-- tenant's gateways are configured with is an immutable, numbered version; the reconciler applies the
-- newest approved one, checks it and falls back to the last known good one when it fails.

-- One numbered version per change, per tenant. The content (settings, rendered config, hash, diff, who,
-- why) never changes after the insert (trigger below); only the review and apply status moves on.
CREATE TABLE gateway_config_versions (
  id             uuid        PRIMARY KEY,
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  number         integer     NOT NULL CHECK (number > 0),
  -- The version this one was made from (null for a tenant's first).
  parent         integer,
  -- What the tenant chose (models, heartbeat, plugin settings): the part a rollback restores.
  settings       jsonb       NOT NULL,
  -- openclaw.json as rendered for the tenant's first gateway, secrets shown as references only.
  config         jsonb       NOT NULL,
  -- sha256 of the rendered config: a new version only when it changes.
  hash           text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  -- Structural diff against the parent: [{path, op, from?, to?}].
  diff           jsonb       NOT NULL DEFAULT '[]',
  -- The kinds of change (models, heartbeat, plugins, tools, agents, rollback, initial), for review rules.
  kinds          text[]      NOT NULL DEFAULT '{}',
  author         text        NOT NULL,
  -- The person behind the author (user:<id>; a token counts as the user who made it): the two-person rule
  -- compares these, so an admin cannot approve their own change through a token of theirs.
  proposer       text        NOT NULL,
  reason         text        NOT NULL DEFAULT '',
  -- pending: waits for a second admin; approved: to apply; good: applied and healthy (a last known good);
  -- failed: applied, failed its check, rolled back; rejected: never applies; superseded: approved, but a newer
  -- version was approved before this one was applied.
  status         text        NOT NULL CHECK (status IN ('pending', 'approved', 'good', 'failed', 'rejected', 'superseded')),
  status_reason  text        NOT NULL DEFAULT '',
  decided_by     text,
  decided_at     timestamptz,
  applied_at     timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, number)
);
CREATE INDEX gateway_config_versions_status ON gateway_config_versions (tenant_id, status, number DESC);

CREATE FUNCTION gateway_config_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.number IS DISTINCT FROM OLD.number OR NEW.parent IS DISTINCT FROM OLD.parent
     OR NEW.settings IS DISTINCT FROM OLD.settings OR NEW.config IS DISTINCT FROM OLD.config OR NEW.hash IS DISTINCT FROM OLD.hash
     OR NEW.diff IS DISTINCT FROM OLD.diff OR NEW.kinds IS DISTINCT FROM OLD.kinds OR NEW.author IS DISTINCT FROM OLD.author OR NEW.proposer IS DISTINCT FROM OLD.proposer
     OR NEW.reason IS DISTINCT FROM OLD.reason OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
    RAISE EXCEPTION 'gateway configuration versions are immutable (only their status changes)';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER gateway_config_versions_immutable BEFORE UPDATE ON gateway_config_versions
  FOR EACH ROW EXECUTE FUNCTION gateway_config_versions_immutable();

-- Per tenant: which kinds of change wait for a second admin, and the heartbeat cap. No row: everything
-- applies at once and there is no cap beyond the platform's.
CREATE TABLE gateway_config_rules (
  tenant_id              uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  review                 text[]      NOT NULL DEFAULT '{}',
  -- The shortest heartbeat interval the tenant's agents may be configured with, in minutes (null: no cap).
  heartbeat_min_minutes  integer     CHECK (heartbeat_min_minutes BETWEEN 1 AND 10080),
  updated_by             text        NOT NULL,
  updated_at             timestamptz NOT NULL DEFAULT now()
);

-- The version each instance's running gateway was started with (null: started before versions existed).
ALTER TABLE instances ADD COLUMN config_version integer;
