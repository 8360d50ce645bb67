-- A tenant's own idle timeout (issue 7): minutes of no traffic before its instances are backed up and
-- stopped; NULL = the platform default (agent defaults), 0 = never.
ALTER TABLE tenants ADD COLUMN idle_timeout_minutes integer CHECK (idle_timeout_minutes BETWEEN 0 AND 525600);
