-- Tool egress through the broker (issue 5, item 7): the hosts a tenant's sandboxes may reach through
-- the CONNECT proxy, and skill API routes where the broker adds the tenant's credential on the way out.

CREATE TABLE tenant_egress_hosts (
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  host        text        NOT NULL CHECK (host = lower(host) AND length(host) BETWEEN 1 AND 253),
  -- 0 = any port
  port        integer     NOT NULL DEFAULT 443 CHECK (port BETWEEN 0 AND 65535),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, host, port)
);

CREATE TABLE skill_endpoints (
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name           text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
  base_url       text        NOT NULL,
  credential_id  uuid,
  -- How the credential is sent: Authorization: Bearer, or a named header.
  auth_style     text        NOT NULL DEFAULT 'bearer' CHECK (auth_style IN ('bearer', 'header')),
  header_name    text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name),
  FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE SET NULL (credential_id)
);
