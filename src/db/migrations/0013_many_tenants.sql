-- Many tenants, mostly idle (docs/adr/0008-keyset-paging.md). Lists page by keyset over an index in
-- each offered order, and search by substring through trigram indexes; the periodic loops read only
-- rows that can need action, through partial indexes, so an idle tenant's stopped instance costs
-- nothing per cycle.

-- pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it without superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The tenant list's orders (slug has its unique index) and its search by slug or name.
CREATE INDEX tenants_name_id ON tenants (name, id);
CREATE INDEX tenants_created_id ON tenants (created_at, id);
CREATE INDEX tenants_slug_trgm ON tenants USING gin (slug gin_trgm_ops);
CREATE INDEX tenants_name_trgm ON tenants USING gin (name gin_trgm_ops);

-- A tenant's backups newest first, across its instances.
CREATE INDEX instance_backups_tenant_created ON instance_backups (tenant_id, created_at, id);

-- The reconciler's candidates: everything except an instance that is stopped (or suspended), wants to
-- stay so and has no sandbox. The predicate is spelt exactly as InstanceService.needingReconcile asks.
CREATE INDEX instances_reconcile ON instances (created_at, id)
  WHERE desired_state <> 'stopped' OR status NOT IN ('stopped', 'suspended') OR sandbox IS NOT NULL;

-- Running instances: the idle reaper and the periodic backup sweep.
CREATE INDEX instances_running ON instances (created_at, id) WHERE status = 'running' AND desired_state = 'running';

-- Task housekeeping looks only at tasks that have not ended.
CREATE INDEX tasks_open ON tasks (created_at) WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired');
