-- Append-only, hash-chained audit log (issue 2). The application computes each row's hash over a
-- canonical form (src/audit/chain.ts) while holding the single audit_head row FOR UPDATE, in the same
-- transaction as the change it records. The triggers below keep the table append-only and the chain
-- linked; a superuser can still disable them, which `clawplane audit verify` detects.

CREATE TABLE audit_events (
  seq        bigint      PRIMARY KEY,
  ts         timestamptz NOT NULL,
  actor      text        NOT NULL,
  tenant_id  uuid,
  action     text        NOT NULL,
  target     text,
  decision   text,
  detail     jsonb       NOT NULL DEFAULT '{}'::jsonb,
  request_id text,
  prev_hash  text        NOT NULL,
  hash       text        NOT NULL
);

CREATE INDEX audit_events_tenant_seq ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_action_seq ON audit_events (action, seq);

CREATE TABLE audit_head (
  id   boolean PRIMARY KEY DEFAULT true CHECK (id),
  seq  bigint  NOT NULL,
  hash text    NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (true, 0, repeat('0', 64));

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE OR TRUNCATE ON audit_head
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- A new row must continue the chain from the current head; the head then advances to it.
CREATE FUNCTION audit_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  head audit_head%ROWTYPE;
BEGIN
  SELECT * INTO head FROM audit_head WHERE id FOR UPDATE;
  IF NEW.seq <> head.seq + 1 OR NEW.prev_hash <> head.hash THEN
    RAISE EXCEPTION 'audit chain broken: row % does not follow head %', NEW.seq, head.seq USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id;
  RETURN NEW;
END;
$$;

CREATE TRIGGER audit_events_link BEFORE INSERT ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_link();

-- Smoke check for the durable engine: one row per run of the trivial workflow's first step, so a test
-- can count that a completed step never runs twice across a crash.
CREATE TABLE durable_self_checks (
  workflow_id text        NOT NULL,
  step        text        NOT NULL,
  ran_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX durable_self_checks_wf ON durable_self_checks (workflow_id);
