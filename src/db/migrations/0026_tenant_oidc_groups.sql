-- Tenant members by OIDC group (docs/adr/0011-kubernetes.md, "Members by OIDC group"): a tenant maps groups
-- of the identity provider's groups claim to a tenant role. Written by the operator from a Tenant resource's
-- spec.members (shown by GET /api/v1/tenants/{tenant}/oidc-groups).
CREATE TABLE tenant_oidc_groups (
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  oidc_group  text        NOT NULL CHECK (length(oidc_group) BETWEEN 1 AND 256),
  role        text        NOT NULL CHECK (role IN ('tenant_admin', 'member', 'viewer')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, oidc_group)
);
CREATE INDEX tenant_oidc_groups_group ON tenant_oidc_groups (oidc_group);

-- What the provider said at the user's last sign-in: the groups claim, and the tenant claim's slug → role.
-- Kept so a change of a tenant's group mapping applies to users at once (a group removed from the mapping
-- takes the membership away without waiting for the next sign-in); both are recomputed at each sign-in.
ALTER TABLE users
  ADD COLUMN oidc_groups      text[] NOT NULL DEFAULT '{}',
  ADD COLUMN oidc_claim_roles jsonb  NOT NULL DEFAULT '{}';
CREATE INDEX users_oidc_groups ON users USING gin (oidc_groups);
CREATE INDEX users_oidc_claim_roles ON users USING gin (oidc_claim_roles);
