-- Knowledge search re-ranks candidates in memory by an int8 code of each vector (docs/adr/0007): a float32
-- scale then one signed byte a dimension (1,540 bytes at 1,536 dimensions, stored inline, not TOASTed like
-- the 6 KB float vector). Replicas load it with the sign sketch; rows embedded before this column have none
-- and are coded from their float vector when first loaded.
ALTER TABLE agent_memories ADD COLUMN qvec bytea;
ALTER TABLE findings ADD COLUMN qvec bytea;
ALTER TABLE chat_messages ADD COLUMN qvec bytea;
ALTER TABLE agent_memories ALTER COLUMN qvec SET STORAGE MAIN;
ALTER TABLE findings ALTER COLUMN qvec SET STORAGE MAIN;
ALTER TABLE chat_messages ALTER COLUMN qvec SET STORAGE MAIN;

-- Session ingestion's state API (GET /tenants/{t}/knowledge/ingestion) reports when the job last tried
-- each item: set on every claim.
ALTER TABLE conversation_ingests ADD COLUMN attempted_at timestamptz;
