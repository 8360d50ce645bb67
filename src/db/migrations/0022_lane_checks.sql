-- Lane check steps (docs/lanes.md, "The doctor lane"): a step may be a check Clawplane computes itself rather
-- than an agent's task; what it found (check, severity, subject, message) is kept on the step's row.
ALTER TABLE lane_run_steps ADD COLUMN findings jsonb;
