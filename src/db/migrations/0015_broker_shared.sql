-- Broker state shared by every replica (docs/adr/0009-replica-coordination.md): budgets and rate limits
-- reserved and settled in PostgreSQL, and the grant signing keys.

-- Spend of one scope on one UTC day: scope 'tenant' (the whole tenant) or 'agent/<name>'. A row exists only
-- for scopes that have a cap; it is created (seeded from the day's usage rows) by the first capped call of
-- the day and locked by every admission of its scope, which serialises admissions across replicas.
CREATE TABLE broker_spend (
  tenant_id  uuid           NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  scope      text           NOT NULL,
  day        date           NOT NULL,
  tokens     bigint         NOT NULL DEFAULT 0,
  cost_usd   numeric(18, 8) NOT NULL DEFAULT 0,
  -- Settled calls that used tokens: tokens / calls is the reservation estimate of the next call.
  calls      bigint         NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, scope, day)
);

-- One row per admitted model call of a capped tenant: its reservation while in flight (settled_at NULL and
-- not expired), its start for the requests-per-minute window. A call whose replica died stops counting as in
-- flight at expires_at; settled and expired rows are pruned after the rate window.
CREATE TABLE broker_reservations (
  id          uuid           PRIMARY KEY,
  tenant_id   uuid           NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent       text           NOT NULL,
  task_id     text,
  day         date           NOT NULL,
  est_tokens  bigint         NOT NULL,
  est_cost    numeric(18, 8) NOT NULL,
  tokens      bigint,
  cost_usd    numeric(18, 8),
  started_at  timestamptz    NOT NULL DEFAULT now(),
  expires_at  timestamptz    NOT NULL,
  settled_at  timestamptz
);
CREATE INDEX broker_reservations_open ON broker_reservations (tenant_id, agent) WHERE settled_at IS NULL;
CREATE INDEX broker_reservations_started ON broker_reservations (tenant_id, started_at);

-- Model calls admitted per task (max_calls_per_task), seeded from the task's usage rows.
CREATE TABLE broker_task_calls (
  tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  task_id     text        NOT NULL,
  calls       integer     NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, task_id)
);

-- Admits one model call or says which cap refuses it, in one round trip. Each scope row is locked (tenant
-- first, then agent), so admissions of a scope are serialised across replicas; PL/pgSQL statements in READ
-- COMMITTED each take a fresh snapshot, so the in-flight sums below see every reservation committed before
-- the lock was granted. A call is admitted while settled spend plus the reservations in flight is below the
-- cap; it then reserves the larger of p_floor and the scope's tokens per call so far today.
-- p_limits: {"tenant": {"tokens", "cost", "rpm"} | null, "agent": {…} | null, "taskCap": n | null}.
CREATE FUNCTION broker_admit(p_tenant uuid, p_agent text, p_task text, p_limits jsonb, p_floor bigint, p_ttl_seconds integer)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_day date := (now() AT TIME ZONE 'UTC')::date;
  v_midnight timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  v_kind text;
  v_key text;
  v_lim jsonb;
  v_row broker_spend%ROWTYPE;
  v_res_tokens numeric;
  v_res_cost numeric;
  v_inflight integer;
  v_recent integer;
  v_oldest timestamptz;
  v_est_tokens bigint := greatest(p_floor, 0);
  v_est_cost numeric := 0;
  v_calls integer;
  v_id uuid := gen_random_uuid();
BEGIN
  -- Async commit for this transaction only: the row lock above is held until COMMIT, and an fsync per call
  -- would cap a scope at ~1/fsync admissions per second. Visibility to other replicas is unchanged; a
  -- PostgreSQL crash may lose the last moment's reservations (those calls then count only by usage row).
  PERFORM set_config('synchronous_commit', 'off', true);
  FOREACH v_kind IN ARRAY ARRAY['tenant', 'agent'] LOOP
    v_lim := p_limits -> v_kind;
    CONTINUE WHEN v_lim IS NULL OR jsonb_typeof(v_lim) <> 'object';
    v_key := CASE v_kind WHEN 'tenant' THEN 'tenant' ELSE 'agent/' || p_agent END;
    SELECT * INTO v_row FROM broker_spend WHERE tenant_id = p_tenant AND scope = v_key AND day = v_day FOR UPDATE;
    IF NOT FOUND THEN
      INSERT INTO broker_spend (tenant_id, scope, day, tokens, cost_usd, calls)
        SELECT p_tenant, v_key, v_day, coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0),
               count(*) FILTER (WHERE input_tokens + output_tokens > 0)
          FROM llm_usage
         WHERE tenant_id = p_tenant AND (v_kind = 'tenant' OR agent = p_agent) AND created_at >= v_midnight
        ON CONFLICT DO NOTHING;
      SELECT * INTO v_row FROM broker_spend WHERE tenant_id = p_tenant AND scope = v_key AND day = v_day FOR UPDATE;
    END IF;
    SELECT coalesce(sum(est_tokens), 0), coalesce(sum(est_cost), 0), count(*) INTO v_res_tokens, v_res_cost, v_inflight
      FROM broker_reservations
     WHERE tenant_id = p_tenant AND (v_kind = 'tenant' OR agent = p_agent) AND settled_at IS NULL AND expires_at > now();
    IF (v_lim ->> 'tokens') IS NOT NULL AND v_row.tokens + v_res_tokens >= (v_lim ->> 'tokens')::numeric THEN
      RETURN jsonb_build_object('refused', 'daily_tokens', 'scope', v_kind, 'cap', (v_lim ->> 'tokens')::numeric, 'spent', v_row.tokens, 'inflight', v_inflight);
    END IF;
    IF (v_lim ->> 'cost') IS NOT NULL AND v_row.cost_usd + v_res_cost >= (v_lim ->> 'cost')::numeric THEN
      RETURN jsonb_build_object('refused', 'daily_cost', 'scope', v_kind, 'cap', (v_lim ->> 'cost')::numeric, 'spent', v_row.cost_usd, 'inflight', v_inflight);
    END IF;
    IF (v_lim ->> 'rpm') IS NOT NULL THEN
      SELECT count(*), min(started_at) INTO v_recent, v_oldest
        FROM broker_reservations
       WHERE tenant_id = p_tenant AND (v_kind = 'tenant' OR agent = p_agent) AND started_at > now() - interval '60 seconds';
      IF v_recent >= (v_lim ->> 'rpm')::integer THEN
        RETURN jsonb_build_object('refused', 'rate_limit', 'scope', v_kind, 'cap', (v_lim ->> 'rpm')::integer,
          'retry', greatest(1, ceil(60 - extract(epoch FROM now() - coalesce(v_oldest, now()))))::integer);
      END IF;
    END IF;
    IF v_row.calls > 0 THEN
      v_est_tokens := greatest(v_est_tokens, ceil(v_row.tokens::numeric / v_row.calls)::bigint);
      v_est_cost := greatest(v_est_cost, v_row.cost_usd / v_row.calls);
    END IF;
  END LOOP;
  IF p_task IS NOT NULL AND (p_limits ->> 'taskCap') IS NOT NULL THEN
    INSERT INTO broker_task_calls (tenant_id, task_id, calls)
      SELECT p_tenant, p_task, count(*) FROM llm_usage WHERE tenant_id = p_tenant AND task_id = p_task AND outcome = 'ok'
      ON CONFLICT DO NOTHING;
    UPDATE broker_task_calls SET calls = calls + 1, updated_at = now()
     WHERE tenant_id = p_tenant AND task_id = p_task AND calls < (p_limits ->> 'taskCap')::integer
    RETURNING calls INTO v_calls;
    IF NOT FOUND THEN
      RETURN jsonb_build_object('refused', 'max_calls_per_task', 'scope', 'task', 'cap', (p_limits ->> 'taskCap')::integer);
    END IF;
  END IF;
  INSERT INTO broker_reservations (id, tenant_id, agent, task_id, day, est_tokens, est_cost, expires_at)
    VALUES (v_id, p_tenant, p_agent, p_task, v_day, v_est_tokens, v_est_cost, now() + make_interval(secs => p_ttl_seconds));
  RETURN jsonb_build_object('id', v_id);
END;
$$;

-- Charges a finished call's real usage to its scopes and frees its reservation (once). Async commit as above.
CREATE FUNCTION broker_settle(p_id uuid, p_tokens bigint, p_cost numeric) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_tenant uuid;
  v_agent text;
  v_day date;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  UPDATE broker_reservations SET settled_at = now(), tokens = p_tokens, cost_usd = p_cost
   WHERE id = p_id AND settled_at IS NULL
  RETURNING tenant_id, agent, day INTO v_tenant, v_agent, v_day;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  UPDATE broker_spend SET tokens = tokens + p_tokens, cost_usd = cost_usd + p_cost, calls = calls + CASE WHEN p_tokens > 0 THEN 1 ELSE 0 END
   WHERE tenant_id = v_tenant AND day = v_day AND scope IN ('tenant', 'agent/' || v_agent);
END;
$$;

-- Grant signing keys (Ed25519), shared by every replica. The private key is sealed in the vault as the
-- platform secret `grant-key.<kid>`; this table holds what verifiers need. One key signs (retired_at NULL);
-- a rotated-out key still verifies until verify_until (the overlap: at least the longest grant lifetime).
CREATE TABLE grant_signing_keys (
  kid           text        PRIMARY KEY,
  public_jwk    jsonb       NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  retired_at    timestamptz,
  verify_until  timestamptz,
  CHECK ((retired_at IS NULL) = (verify_until IS NULL))
);
CREATE UNIQUE INDEX grant_signing_keys_one_current ON grant_signing_keys ((true)) WHERE retired_at IS NULL;
