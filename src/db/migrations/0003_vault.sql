-- Credential vault and LLM provider settings (issue 4). Envelope encryption: each tenant has one data
-- key (DEK) wrapped by a versioned master key (KEK). The KEK itself is never stored: the local provider
-- derives version N from CLAWPLANE_SECRET_KEY with HKDF; a KMS would hold it instead. Values are
-- AES-256-GCM ciphertext with additional authenticated data binding them to their row, so a ciphertext
-- copied to another row or tenant does not open.

-- Which master key versions exist and which one wraps new keys. `check_value` is an HMAC of a fixed
-- label under the derived key: it tells "CLAWPLANE_SECRET_KEY changed" apart from "data tampered".
CREATE TABLE vault_key_versions (
  key_id       text        NOT NULL,
  version      integer     NOT NULL CHECK (version >= 1),
  is_current   boolean     NOT NULL DEFAULT false,
  check_value  text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (key_id, version)
);
CREATE UNIQUE INDEX vault_key_versions_one_current ON vault_key_versions (key_id) WHERE is_current;

-- One data key per tenant, wrapped under (kek_id, kek_version). A KMS provider may keep iv/tag inside
-- its opaque ciphertext and store empty byte strings here.
CREATE TABLE tenant_data_keys (
  tenant_id     uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  kek_id        text        NOT NULL,
  kek_version   integer     NOT NULL CHECK (kek_version >= 1),
  wrapped_dek   bytea       NOT NULL,
  iv            bytea       NOT NULL,
  tag           bytea       NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  rewrapped_at  timestamptz
);
-- Rotation scans for keys still wrapped under an old version.
CREATE INDEX tenant_data_keys_kek ON tenant_data_keys (kek_id, kek_version);

-- Credentials: the value is write-only. `version` goes up when the value is replaced and is part of the
-- AAD, so an old ciphertext cannot be put back. `last4` is the only part of the value ever shown.
CREATE TABLE credentials (
  id            uuid        PRIMARY KEY,
  tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name          text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'),
  type          text        NOT NULL CHECK (type IN ('api_key', 'oauth_token', 'bot_token', 'pat', 'secret')),
  skill         text        CHECK (skill ~ '^[a-z0-9][a-z0-9_-]{0,49}$'),
  status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired', 'revoked')),
  -- Non-secret settings that belong with the value (GitHub scopes, WhatsApp phone number id).
  metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  expires_at    timestamptz,
  last_used_at  timestamptz,
  revoked_at    timestamptz,
  created_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  version       integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
  ciphertext    bytea       NOT NULL,
  iv            bytea       NOT NULL CHECK (length(iv) = 12),
  tag           bytea       NOT NULL CHECK (length(tag) = 16),
  aad_version   smallint    NOT NULL DEFAULT 1,
  last4         text        NOT NULL CHECK (length(last4) <= 4),
  -- Lets other tenant-owned tables reference a credential only within the same tenant.
  UNIQUE (tenant_id, id)
);
-- A name is unique among a tenant's usable credentials; a revoked one frees its name.
CREATE UNIQUE INDEX credentials_tenant_name ON credentials (tenant_id, name) WHERE status <> 'revoked';
CREATE INDEX credentials_tenant_created ON credentials (tenant_id, created_at);

CREATE TABLE llm_providers (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  kind           text        NOT NULL CHECK (kind IN ('anthropic', 'openai', 'gemini', 'mistral', 'deepseek', 'openrouter', 'openai_compatible')),
  name           text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  base_url       text        NOT NULL CHECK (length(base_url) BETWEEN 1 AND 2048),
  credential_id  uuid,
  default_model  text        CHECK (length(default_model) BETWEEN 1 AND 200),
  enabled        boolean     NOT NULL DEFAULT true,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, id),
  -- Same-tenant only; losing the credential leaves the provider configured but keyless.
  FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE SET NULL (credential_id)
);

-- Model routing: for a scope (the tenant default, one agent type, one skill) an ordered list of
-- (provider, model); position 0 is the primary, the rest are fallbacks tried in order.
CREATE TABLE model_routes (
  tenant_id    uuid     NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  scope        text     NOT NULL CHECK (scope IN ('tenant', 'agent', 'skill')),
  scope_name   text     NOT NULL DEFAULT '' CHECK (length(scope_name) <= 100),
  position     smallint NOT NULL CHECK (position BETWEEN 0 AND 15),
  provider_id  uuid     NOT NULL,
  model        text     NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
  PRIMARY KEY (tenant_id, scope, scope_name, position),
  FOREIGN KEY (tenant_id, provider_id) REFERENCES llm_providers (tenant_id, id) ON DELETE CASCADE,
  CHECK ((scope = 'tenant') = (scope_name = ''))
);
CREATE INDEX model_routes_provider ON model_routes (tenant_id, provider_id);

-- Platform secrets that belong to no tenant (the OIDC client secret). Each has its own data key, wrapped
-- by the master key like a tenant's, so rotation re-wraps these too.
CREATE TABLE platform_secrets (
  name          text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
  version       integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
  ciphertext    bytea       NOT NULL,
  iv            bytea       NOT NULL CHECK (length(iv) = 12),
  tag           bytea       NOT NULL CHECK (length(tag) = 16),
  kek_id        text        NOT NULL,
  kek_version   integer     NOT NULL CHECK (kek_version >= 1),
  wrapped_dek   bytea       NOT NULL,
  dek_iv        bytea       NOT NULL,
  dek_tag       bytea       NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_secrets_kek ON platform_secrets (kek_id, kek_version);
