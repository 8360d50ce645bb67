-- Warm resume (issue 10): an idle instance may be suspended to a process snapshot instead of stopped.
-- Its desired state is then 'stopped' (the reconciler leaves it alone) and its status 'suspended'; the
-- snapshot's host directory and figures are kept here until the next start resumes from it (once) or
-- discards it.
ALTER TABLE instances DROP CONSTRAINT instances_status_check;
ALTER TABLE instances ADD CONSTRAINT instances_status_check
  CHECK (status IN ('provisioning', 'running', 'stopped', 'upgrading', 'error', 'destroying', 'suspended'));
ALTER TABLE instances ADD COLUMN snapshot jsonb;
