-- Lists that stay fast on a table of months of finished jobs.
--
-- Unfinished jobs (submitted, waiting, queued, running) are few beside the finished ones.
-- Their seqs are kept in `open_jobs` by triggers, like `rare_states` and `delayed` (an index
-- on `jobs.state` would cost every state change its HOT update, see hot_state_changes), so a
-- list by an unfinished state and a restart's recovery walk them instead of the table. The
-- triggers fire only when a job enters or leaves that set (or a job in it gets a new seq), not
-- on its moves within it.
CREATE TABLE IF NOT EXISTS open_jobs (seq bigint PRIMARY KEY);

CREATE OR REPLACE FUNCTION lanes_open_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE')
       AND OLD.state IN ('submitted', 'waiting', 'queued', 'running') THEN
        DELETE FROM open_jobs WHERE seq = OLD.seq;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE')
       AND NEW.state IN ('submitted', 'waiting', 'queued', 'running') THEN
        INSERT INTO open_jobs (seq) VALUES (NEW.seq) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS open_jobs_insert ON jobs;
CREATE TRIGGER open_jobs_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.state IN ('submitted', 'waiting', 'queued', 'running'))
    EXECUTE FUNCTION lanes_open_jobs();
DROP TRIGGER IF EXISTS open_jobs_update ON jobs;
CREATE TRIGGER open_jobs_update AFTER UPDATE OF state, seq ON jobs FOR EACH ROW
    WHEN ((OLD.state IN ('submitted', 'waiting', 'queued', 'running'))
          IS DISTINCT FROM (NEW.state IN ('submitted', 'waiting', 'queued', 'running'))
          OR (OLD.seq <> NEW.seq AND NEW.state IN ('submitted', 'waiting', 'queued', 'running')))
    EXECUTE FUNCTION lanes_open_jobs();
DROP TRIGGER IF EXISTS open_jobs_delete ON jobs;
CREATE TRIGGER open_jobs_delete AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.state IN ('submitted', 'waiting', 'queued', 'running'))
    EXECUTE FUNCTION lanes_open_jobs();

INSERT INTO open_jobs (seq)
    SELECT seq FROM jobs WHERE state IN ('submitted', 'waiting', 'queued', 'running')
    ON CONFLICT DO NOTHING;

-- `GET /jobs?task=` walks its task's jobs newest first. A job's task never changes, so the
-- index costs an insert its entry and no state change anything.
CREATE INDEX IF NOT EXISTS jobs_task_seq ON jobs (task, seq);
