-- An optional bound on each attempt of a job (`timeout_ms` in the submit message).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS timeout_ms bigint;
