-- Recurring schedules. `last_tick` is the tick the active control plane made a job for last
-- (that job's id is derived from the name and the tick, so it is made once).
CREATE TABLE IF NOT EXISTS schedules (
    name         text PRIMARY KEY,
    cron         text NOT NULL,
    tz           text NOT NULL DEFAULT 'UTC',
    task         text NOT NULL,
    args         jsonb,
    resources    text[] NOT NULL DEFAULT '{}',
    max_attempts int,
    timeout_ms   bigint,
    missed       text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'once')),
    paused       boolean NOT NULL DEFAULT false,
    last_tick    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
