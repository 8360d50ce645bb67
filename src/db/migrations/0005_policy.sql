-- Tool policy (Cedar) and tool grants (issue 5, items 5, 6, 8). The platform baseline holds the only
-- permits; tenants may only add forbids (checked when written, src/policy/compile.ts). Grants are
-- short-lived signed tokens; this table is their revocation list, keyed by jti.

-- The tool registry: every tool the broker and the rendered OpenClaw config know about. Names follow
-- OpenClaw's tool ids (exec, read, web_fetch…) or `<skill>.<verb>` for skill APIs behind the broker.
-- Scopes: allowed channels, repos and hosts; an empty array means "any".
CREATE TABLE policy_tools (
  name         text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,99}$'),
  risk         text        NOT NULL CHECK (risk IN ('low', 'medium', 'high', 'critical')),
  tool_group   text        NOT NULL CHECK (tool_group ~ '^[a-z][a-z0-9_-]{0,49}$'),
  description  text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  channels     text[]      NOT NULL DEFAULT '{}',
  repos        text[]      NOT NULL DEFAULT '{}',
  hosts        text[]      NOT NULL DEFAULT '{}',
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The platform baseline, in evaluation-independent order (Cedar: forbid overrides permit; no permit
-- means deny). A platform admin replaces it as a whole.
CREATE TABLE policy_baseline (
  id           text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  position     integer     NOT NULL,
  description  text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
  cedar        text        NOT NULL CHECK (length(cedar) BETWEEN 1 AND 10000),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  updated_by   text
);

-- A tenant's governance for tools: whether shell/exec may run after a person approves ('ask') or never
-- ('deny'), and its forbid-only restrictions ([{id, description, scope, cedar}]).
CREATE TABLE tenant_tool_policies (
  tenant_id    uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  exec_policy  text        NOT NULL DEFAULT 'deny' CHECK (exec_policy IN ('deny', 'ask')),
  policies     jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(policies) = 'array'),
  version      integer     NOT NULL DEFAULT 1,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  updated_by   text
);

-- Every grant issued (never the token itself): revocation sets revoked_at; verification checks it.
-- Rows past expires_at can be pruned: the token is refused by its exp claim anyway.
CREATE TABLE tool_grants (
  jti              uuid        PRIMARY KEY,
  tenant_id        uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id      text        NOT NULL,
  sandbox_start_id text        NOT NULL,
  agent            text        NOT NULL,
  tool             text        NOT NULL,
  scope            text        NOT NULL,
  issued_at        timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz NOT NULL,
  revoked_at       timestamptz,
  revoked_reason   text
);
CREATE INDEX tool_grants_tenant ON tool_grants (tenant_id, issued_at);
CREATE INDEX tool_grants_sandbox ON tool_grants (sandbox_start_id) WHERE revoked_at IS NULL;
CREATE INDEX tool_grants_expires ON tool_grants (expires_at);

-- "Requires approval": a parked request a person must decide; the tasks issue resumes the workflow.
CREATE TABLE tool_approvals (
  id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  instance_id      text,
  sandbox_start_id text,
  agent            text        NOT NULL,
  tool             text        NOT NULL,
  context          jsonb       NOT NULL DEFAULT '{}'::jsonb,
  policy_ids       text[]      NOT NULL,
  explanation      text        NOT NULL,
  status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  decided_at       timestamptz,
  decided_by       text
);
CREATE INDEX tool_approvals_pending ON tool_approvals (tenant_id, created_at) WHERE status = 'pending';

-- OpenClaw's built-in tools (groups as in its `group:*` names) and their risk classes.
INSERT INTO policy_tools (name, risk, tool_group, description) VALUES
  ('read',           'low',      'fs',        'Read a file in the workspace'),
  ('ls',             'low',      'fs',        'List workspace files'),
  ('write',          'medium',   'fs',        'Write a file in the workspace'),
  ('edit',           'medium',   'fs',        'Edit a file in the workspace'),
  ('apply_patch',    'medium',   'fs',        'Apply a patch to workspace files'),
  ('web_search',     'low',      'web',       'Search the web'),
  ('web_fetch',      'medium',   'web',       'Fetch a web page through the egress proxy'),
  ('browser',        'high',     'ui',        'Drive a headless browser'),
  ('canvas',         'medium',   'ui',        'Render to the canvas'),
  ('message',        'medium',   'messaging', 'Send a message on a connected channel'),
  ('sessions_spawn', 'medium',   'sessions',  'Start a sub-agent session'),
  ('sessions_send',  'medium',   'sessions',  'Send to another session'),
  ('exec',           'high',     'runtime',   'Run a shell command'),
  ('process',        'high',     'runtime',   'Manage background processes'),
  ('cron',           'high',     'automation','Schedule recurring work'),
  ('nodes',          'high',     'nodes',     'Control paired devices'),
  ('gateway',        'critical', 'automation','Reconfigure or restart the gateway itself');

-- The shipped baseline. Annotations: @approval("required") turns a matching forbid into "a person must
-- approve" instead of "no"; @contextual("true") marks forbids that depend on the request context, which
-- the rendered OpenClaw config cannot express (the broker checks them on every use).
INSERT INTO policy_baseline (id, position, description, cedar) VALUES
  ('permit-standard-risk', 1, 'Tools of low, medium and high risk may be used unless a forbid applies',
   $c$permit (principal, action == Action::"UseTool", resource) when { ["low", "medium", "high"].contains(resource.risk) };$c$),
  ('forbid-critical', 2, 'Critical-risk tools are never used by agents',
   $c$forbid (principal, action, resource) when { resource.risk == "critical" };$c$),
  ('forbid-exec', 3, 'Shell and process tools are off unless the tenant''s governance sets exec to "ask"',
   $c$forbid (principal, action, resource) when { resource.group == "runtime" && principal.tenant.execPolicy != "ask" };$c$),
  ('approve-exec', 4, 'Shell and process tools need a person''s approval for each use',
   $c$@approval("required")
forbid (principal, action, resource) when { resource.group == "runtime" };$c$),
  ('tool-channel-scope', 5, 'A tool limited to some channels is used only from those channels',
   $c$@contextual("true")
forbid (principal, action, resource) when { !resource.channels.isEmpty() && !(context has channel && resource.channels.contains(context.channel)) };$c$),
  ('tool-repo-scope', 6, 'A tool limited to some repositories is used only on those repositories',
   $c$@contextual("true")
forbid (principal, action, resource) when { !resource.repos.isEmpty() && !(context has repo && resource.repos.contains(context.repo)) };$c$),
  ('tool-host-scope', 7, 'A tool limited to some hosts reaches only those hosts',
   $c$@contextual("true")
forbid (principal, action, resource) when { !resource.hosts.isEmpty() && !(context has host && resource.hosts.contains(context.host)) };$c$);
