-- `GET /jobs?state=failed` walks the seq index newest first; where failures are rare in a
-- large table, that walk reads every row. An index on `state` would cost every state change
-- its HOT update (see hot_state_changes), so the seqs of failed and canceled jobs are kept in
-- a table of their own, by triggers that run only for rows entering or leaving those states.
CREATE TABLE IF NOT EXISTS rare_states (
    state text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (state, seq)
);

CREATE OR REPLACE FUNCTION lanes_rare_states() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF OLD.state IN ('failed', 'canceled') THEN
            DELETE FROM rare_states WHERE state = OLD.state AND seq = OLD.seq;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.state IN ('failed', 'canceled') THEN
            INSERT INTO rare_states (state, seq) VALUES (NEW.state, NEW.seq)
                ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS rare_states_insert ON jobs;
CREATE TRIGGER rare_states_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.state IN ('failed', 'canceled'))
    EXECUTE FUNCTION lanes_rare_states();
DROP TRIGGER IF EXISTS rare_states_update ON jobs;
CREATE TRIGGER rare_states_update AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND (OLD.state IN ('failed', 'canceled') OR NEW.state IN ('failed', 'canceled')))
    EXECUTE FUNCTION lanes_rare_states();
DROP TRIGGER IF EXISTS rare_states_delete ON jobs;
CREATE TRIGGER rare_states_delete AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.state IN ('failed', 'canceled'))
    EXECUTE FUNCTION lanes_rare_states();

INSERT INTO rare_states (state, seq)
    SELECT state, seq FROM jobs WHERE state IN ('failed', 'canceled')
    ON CONFLICT DO NOTHING;
