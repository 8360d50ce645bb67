-- Executor pools scale between min and max at run time (docs/adr/0014-executor-pools.md, Scaling): every
-- slot up to maxExecutors has a row; `active` says whether its gateway should run. A backlog activates
-- slots (filling a sandbox up to executors_per_sandbox gateways, then the pool's next sandbox); an executor
-- idle for scale_down_after_seconds is deactivated, never below minExecutors. One replica decides per pool
-- per tick: it locks the pool row (SKIP LOCKED) only when scaled_at is older than the tick.
ALTER TABLE executor_pools
  ADD COLUMN executors_per_sandbox    integer NOT NULL DEFAULT 8 CHECK (executors_per_sandbox BETWEEN 1 AND 8),
  ADD COLUMN scale_down_after_seconds integer NOT NULL DEFAULT 300 CHECK (scale_down_after_seconds BETWEEN 1 AND 86400),
  ADD COLUMN scaled_at                timestamptz;

-- A pool made before scaling keeps its one sandbox as it runs (every shard's greatest(min, 1) executors).
UPDATE executor_pools SET executors_per_sandbox = shards * greatest(min_executors, 1);

-- Sandbox `sandbox` of the pool (0: instance pool-<agentType>, n: pool-<agentType>-<n>), gateway e<i> in it.
ALTER TABLE pool_executors
  ADD COLUMN sandbox      integer     NOT NULL DEFAULT 0 CHECK (sandbox >= 0),
  ADD COLUMN active       boolean     NOT NULL DEFAULT true,
  -- Since when it has run no turn (set on release and on activation): what scale-down reads.
  ADD COLUMN idle_since   timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN activated_at timestamptz;
ALTER TABLE pool_executors DROP CONSTRAINT pool_executors_pool_id_gateway_key;
ALTER TABLE pool_executors ADD CONSTRAINT pool_executors_pool_sandbox_gateway_key UNIQUE (pool_id, sandbox, gateway);

-- The slots of existing pools above what they ran, inactive; slot k of shard s is gateway number k·shards + s
-- counted across sandboxes (the same placement src/pools/placement.ts gives new pools).
INSERT INTO pool_executors (tenant_id, pool_id, shard, slot, gateway, sandbox, active)
SELECT p.tenant_id, p.id, s.shard, k.slot,
       'e' || ((k.slot * p.shards + s.shard) % p.executors_per_sandbox), (k.slot * p.shards + s.shard) / p.executors_per_sandbox, false
  FROM executor_pools p
 CROSS JOIN LATERAL generate_series(0, p.shards - 1) AS s(shard)
 CROSS JOIN LATERAL generate_series(greatest(p.min_executors, 1), p.max_executors - 1) AS k(slot);

-- A task parked at an exec approval keeps its turn open on its executor's gateway: scale-down leaves that one.
CREATE INDEX tasks_parked_executor ON tasks (executor_id) WHERE status = 'waiting_approval';
