-- Identity and tenancy (issue 3): tenants, users, memberships, sessions, API tokens, onboarding,
-- platform settings and login throttling.

CREATE TABLE tenants (
  id                     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  slug                   text        NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
  name                   text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  status                 text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  -- Quotas: stored here, enforced by the issues that own them (instances, tasks, broker).
  max_instances          integer     NOT NULL DEFAULT 1 CHECK (max_instances >= 0),
  max_concurrent_tasks   integer     NOT NULL DEFAULT 4 CHECK (max_concurrent_tasks >= 0),
  max_storage_bytes      bigint      NOT NULL DEFAULT 10737418240 CHECK (max_storage_bytes >= 0),
  daily_token_budget     bigint      CHECK (daily_token_budget >= 0),
  daily_cost_budget_usd  numeric(14, 4) CHECK (daily_cost_budget_usd >= 0),
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  email           text        NOT NULL CHECK (email = lower(email)),
  display_name    text        NOT NULL DEFAULT '',
  platform_admin  boolean     NOT NULL DEFAULT false,
  breakglass      boolean     NOT NULL DEFAULT false,
  password_hash   text,
  oidc_issuer     text,
  oidc_subject    text,
  failed_logins   integer     NOT NULL DEFAULT 0,
  locked_until    timestamptz,
  last_login_at   timestamptz,
  disabled        boolean     NOT NULL DEFAULT false,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (email),
  UNIQUE (oidc_issuer, oidc_subject)
);

-- At most one breakglass admin.
CREATE UNIQUE INDEX users_one_breakglass ON users (breakglass) WHERE breakglass;

CREATE TABLE memberships (
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role        text        NOT NULL CHECK (role IN ('tenant_admin', 'member', 'viewer')),
  -- 'oidc' memberships follow the identity provider's claim at each login; 'manual' ones are kept.
  source      text        NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'oidc')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Server-side sessions: the cookie holds a random id; only its SHA-256 is stored.
CREATE TABLE sessions (
  id_hash       text        PRIMARY KEY,
  user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  csrf_token    text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  ip            text,
  user_agent    text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- API tokens: 256-bit random, shown once, stored as SHA-256; scoped to one tenant and one role.
CREATE TABLE api_tokens (
  id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  role          text        NOT NULL CHECK (role IN ('tenant_admin', 'member', 'viewer')),
  token_hash    text        NOT NULL UNIQUE,
  display       text        NOT NULL,
  created_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz,
  revoked_at    timestamptz,
  last_used_at  timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at);

-- Platform-wide settings (OIDC provider, default agent settings, onboarding state), one row per key.
CREATE TABLE platform_settings (
  key         text        PRIMARY KEY,
  value       jsonb       NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Failed login attempts, for throttling by account and by client address.
CREATE TABLE login_failures (
  key  text        NOT NULL,
  at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);

-- An OIDC login in flight: state, PKCE verifier and nonce, kept server-side for ten minutes.
CREATE TABLE oidc_logins (
  state          text        PRIMARY KEY,
  code_verifier  text        NOT NULL,
  nonce          text        NOT NULL,
  return_to      text        NOT NULL DEFAULT '/',
  created_at     timestamptz NOT NULL DEFAULT now()
);
