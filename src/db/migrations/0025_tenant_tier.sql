-- A tenant's tier (docs/adr/0011-kubernetes.md): on the kubernetes driver it picks the RuntimeClass of the
-- tenant's sandbox pods (CLAWPLANE_KUBE_RUNTIME_CLASSES). Null: the platform's default tier. Set by the
-- operator from a Tenant resource's spec.tier.
ALTER TABLE tenants ADD COLUMN tier text CHECK (tier ~ '^[a-z0-9-]{1,63}$');
