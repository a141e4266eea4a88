-- Delayed jobs: a job submitted with `run_at` in the future is recorded `scheduled` and waits
-- in the table, not in the broker, until then. `delayed` holds the due times of the
-- scheduled jobs, kept by triggers like `rare_states`: an index on `jobs.state` would cost
-- every state change its HOT update (see hot_state_changes).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS run_at timestamptz;

ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('scheduled', 'submitted', 'waiting', 'queued', 'running', 'completed', 'failed', 'canceled'))
    NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_state_check;

CREATE TABLE IF NOT EXISTS delayed (
    run_at timestamptz NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    PRIMARY KEY (run_at, seq)
);
-- `GET /jobs?state=scheduled` walks it newest first.
CREATE INDEX IF NOT EXISTS delayed_seq ON delayed (seq);

CREATE OR REPLACE FUNCTION lanes_delayed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'scheduled' THEN
        DELETE FROM delayed WHERE run_at = OLD.run_at AND seq = OLD.seq;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'scheduled' THEN
        INSERT INTO delayed (run_at, seq, id) VALUES (NEW.run_at, NEW.seq, NEW.id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS delayed_insert ON jobs;
CREATE TRIGGER delayed_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.state = 'scheduled')
    EXECUTE FUNCTION lanes_delayed();
DROP TRIGGER IF EXISTS delayed_update ON jobs;
CREATE TRIGGER delayed_update AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND (OLD.state = 'scheduled' OR NEW.state = 'scheduled'))
    EXECUTE FUNCTION lanes_delayed();
DROP TRIGGER IF EXISTS delayed_delete ON jobs;
CREATE TRIGGER delayed_delete AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.state = 'scheduled')
    EXECUTE FUNCTION lanes_delayed();
