-- A job's state changes are HOT updates: no index covers a column that changes after the
-- insert, and pages keep room for new row versions, so a change writes no index entry.
-- Before, each change wrote one into every index, the GIN on resources among them.
-- Recovery finds unfinished jobs by scanning the table once, at start.
DROP INDEX IF EXISTS jobs_state_seq;
DROP INDEX IF EXISTS jobs_unfinished;
ALTER TABLE jobs SET (fillfactor = 50);
