-- The job table: one row per job, the contract for readers (DESIGN.md).
CREATE TABLE IF NOT EXISTS jobs (
    id              uuid PRIMARY KEY,
    seq             bigserial NOT NULL,
    task            text NOT NULL,
    args            jsonb,
    resources       text[] NOT NULL DEFAULT '{}',
    queue           text,
    state           text NOT NULL CHECK (state IN
                        ('submitted', 'waiting', 'queued', 'running', 'completed', 'failed', 'canceled')),
    attempts        int NOT NULL DEFAULT 0,
    max_attempts    int NOT NULL DEFAULT 3,
    worker          text,
    progress        jsonb,
    result          jsonb,
    error           text,
    reply_to        text,
    correlation_id  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    queued_at       timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (seq)
    WHERE state IN ('submitted', 'waiting', 'queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_resources ON jobs USING gin (resources);
