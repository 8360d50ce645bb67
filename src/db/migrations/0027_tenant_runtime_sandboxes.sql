-- A tenant's OpenClaw version and its bound on sandboxes (docs/adr/0011-kubernetes.md), set by the
-- operator from a Tenant resource's spec.runtimeVersion and spec.quotas.maxSandboxes.
-- runtime_version: the version the tenant's instances are moved to and new ones deploy with (null: the
-- platform default, CLAWPLANE_RUNTIME_DEFAULT_VERSION).
-- max_sandboxes: sandboxes the tenant may run at once, its instances' and its executor pools' (null: no
-- bound beyond maxInstances).
ALTER TABLE tenants
  ADD COLUMN runtime_version text CHECK (runtime_version ~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,79}$'),
  ADD COLUMN max_sandboxes   integer CHECK (max_sandboxes >= 0);
