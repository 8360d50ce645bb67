-- Executor pools and swarms (docs/adr/0014-executor-pools.md): per tenant and agent type, the gateway
-- executors that serve that type, split into shards; each task of a pooled type carries its shard and is
-- only ever run by an executor of that shard. Executors are claimed with FOR UPDATE SKIP LOCKED and held
-- under a lease, so several replicas never hand one executor two turns. Swarm rules decompose a task into
-- child tasks for several agent types.

-- Quotas on what a tenant's pools may reserve (the sandbox count is maxInstances: one instance, one sandbox).
ALTER TABLE tenants
  ADD COLUMN max_cpu_millis integer NOT NULL DEFAULT 16000 CHECK (max_cpu_millis >= 0),
  ADD COLUMN max_memory_mb  integer NOT NULL DEFAULT 32768 CHECK (max_memory_mb >= 0);

CREATE TABLE executor_pools (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent_type     text        NOT NULL CHECK (agent_type IN ('chat', 'coding', 'research', 'shell', 'browser')),
  -- Follows the agent type (shell and browser are high risk); a high-risk pool never shares a sandbox.
  risk_class     text        NOT NULL CHECK (risk_class IN ('standard', 'high')),
  -- Executors per shard: the pool runs greatest(min, 1) per shard; max bounds what quotas reserve.
  min_executors  integer     NOT NULL CHECK (min_executors BETWEEN 0 AND 8),
  max_executors  integer     NOT NULL CHECK (max_executors BETWEEN 1 AND 8 AND max_executors >= min_executors),
  shards         integer     NOT NULL CHECK (shards BETWEEN 1 AND 8),
  cpu_millis     integer     NOT NULL CHECK (cpu_millis BETWEEN 100 AND 64000),
  memory_mb      integer     NOT NULL CHECK (memory_mb BETWEEN 256 AND 262144),
  -- active: takes work; paused: keeps its queue, starts nothing new; draining: refuses new tasks too.
  state          text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'draining')),
  -- The instance (sandbox) the pool's executors run in, deployed on first work; its name is pool-<agent_type>.
  instance_id    uuid        REFERENCES instances (id) ON DELETE SET NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, agent_type),
  UNIQUE (tenant_id, id)
);

-- One row per executor (a gateway process of the pool's sandbox, `gateway` = its executor id there).
CREATE TABLE pool_executors (
  id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  pool_id      uuid        NOT NULL REFERENCES executor_pools (id) ON DELETE CASCADE,
  shard        integer     NOT NULL CHECK (shard >= 0),
  slot         integer     NOT NULL CHECK (slot >= 0),
  gateway      text        NOT NULL,
  -- The task whose turn it runs now, by which replica, until when (a lapsed lease frees it).
  task_id      uuid,
  claimed_by   text,
  lease_until  timestamptz,
  turns        bigint      NOT NULL DEFAULT 0,
  UNIQUE (pool_id, shard, slot),
  UNIQUE (pool_id, gateway)
);
CREATE INDEX pool_executors_tenant ON pool_executors (tenant_id, pool_id);

-- Rules a tenant defines: a task with this capability becomes a swarm of child tasks, one per step.
CREATE TABLE swarm_rules (
  id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name        text        NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  capability  text        NOT NULL,
  -- [{agentType, capability?, input}] (input may contain {{input}}), at most 8.
  steps       jsonb       NOT NULL CHECK (jsonb_typeof(steps) = 'array'),
  -- all: every child must complete; any: one is enough; quorum: at least `quorum` of them.
  policy      text        NOT NULL CHECK (policy IN ('all', 'any', 'quorum')),
  quorum      integer     CHECK (quorum >= 1),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, capability)
);

ALTER TABLE tasks
  ADD COLUMN agent_type    text CHECK (agent_type IN ('chat', 'coding', 'research', 'shell', 'browser')),
  ADD COLUMN pool_id       uuid REFERENCES executor_pools (id) ON DELETE SET NULL,
  ADD COLUMN shard         integer CHECK (shard >= 0),
  ADD COLUMN shard_key     text,
  -- The executor that ran the task's last turn (its pool executor row).
  ADD COLUMN executor_id   uuid,
  ADD COLUMN swarm_rule_id uuid REFERENCES swarm_rules (id) ON DELETE SET NULL;
-- Queue depth per pool and shard: what waits for an executor.
CREATE INDEX tasks_pool_waiting ON tasks (pool_id, shard) WHERE pool_id IS NOT NULL AND status IN ('queued', 'dispatched');
