-- Instances (issue 6): the desired state of each tenant's OpenClaw gateway, what the reconciler last
-- observed, and every status transition with its reason. The database is the source of truth; the
-- sandbox driver converges to it and a control-plane restart adopts what is still running.

-- Which control plane owns the sandboxes it finds on this host. Two control planes (or two test
-- databases) sharing a sandbox root must never remove each other's sandboxes as "orphans".
CREATE TABLE sandbox_cluster (
  singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
  cluster_id  uuid        NOT NULL DEFAULT gen_random_uuid(),
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sandbox_cluster DEFAULT VALUES;

-- One unprivileged host uid per tenant: files its sandboxes write are owned by it, and RLIMIT_NPROC
-- counts per uid, so one tenant's process cap never eats another's.
CREATE TABLE sandbox_uids (
  tenant_id   uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  uid         integer     NOT NULL UNIQUE CHECK (uid > 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
  id                        uuid        PRIMARY KEY,
  tenant_id                 uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name                      text        NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  runtime_version           text        NOT NULL CHECK (runtime_version ~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$'),
  -- The version an upgrade replaced, to roll back to when the new one fails its health check.
  previous_runtime_version  text,
  executors                 smallint    NOT NULL DEFAULT 1 CHECK (executors BETWEEN 1 AND 8),
  desired_state             text        NOT NULL CHECK (desired_state IN ('running', 'stopped', 'destroyed')),
  status                    text        NOT NULL CHECK (status IN ('provisioning', 'running', 'stopped', 'upgrading', 'error', 'destroying')),
  status_reason             text        NOT NULL DEFAULT '',
  -- Destroy: also delete the state directories (sessions, memory, workspace).
  delete_state              boolean     NOT NULL DEFAULT false,
  -- Bumped by restart and upgrade; the reconciler restarts the sandbox while observed < generation.
  generation                integer     NOT NULL DEFAULT 1,
  observed_generation       integer     NOT NULL DEFAULT 0,
  -- Consecutive failed starts, for the reconciler's backoff; reset when the instance is running.
  failures                  integer     NOT NULL DEFAULT 0,
  next_attempt_at           timestamptz,
  -- The driver's handle of the running sandbox (pid, start time, runtime version), for adoption.
  sandbox                   jsonb,
  health                    jsonb,
  health_checked_at         timestamptz,
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, id)
);
CREATE INDEX instances_pending ON instances (desired_state, status);

-- Status transitions with reasons, newest last. Cascades with the instance; the audit log keeps the
-- lifecycle operations after an instance is gone.
CREATE TABLE instance_events (
  id           bigserial   PRIMARY KEY,
  tenant_id    uuid        NOT NULL,
  instance_id  uuid        NOT NULL,
  from_status  text,
  to_status    text        NOT NULL,
  reason       text        NOT NULL DEFAULT '',
  actor        text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, instance_id) REFERENCES instances (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX instance_events_instance ON instance_events (tenant_id, instance_id, id);
