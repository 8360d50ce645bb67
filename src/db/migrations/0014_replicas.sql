-- Several control-plane replicas on one database (docs/adr/0009-replica-coordination.md).

-- Each process registers itself and proves it is alive. A replica whose heartbeat is older than the expiry
-- (or that stopped) is dead: one live replica claims it (recovered_by) and recovers its DBOS workflows.
CREATE TABLE replicas (
  id text PRIMARY KEY,
  roles text[] NOT NULL,
  node text NOT NULL,
  hostname text NOT NULL,
  pid integer NOT NULL,
  version text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz,
  recovered_by text,
  recovered_at timestamptz,
  recovered_workflows integer
);

-- One owner at a time per item of work (an instance to reconcile, reap or back up; a periodic sweep): a
-- lease that its owner renews while it works and that lapses when the owner dies.
CREATE TABLE work_claims (
  kind text NOT NULL,
  item text NOT NULL,
  owner text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (kind, item)
);
CREATE INDEX work_claims_owner ON work_claims (owner);

-- Last use of an instance through any replica (written at most every few seconds per instance), for the idle
-- reaper; and the node its sandbox runs on (local sandboxes belong to their host).
ALTER TABLE instances ADD COLUMN last_active_at timestamptz;
ALTER TABLE instances ADD COLUMN sandbox_node text;
