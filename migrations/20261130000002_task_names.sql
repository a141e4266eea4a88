-- Task names the workers have offered, so that every server (a restarted one, a standby's HTTP
-- API) accepts them before a worker says so again.
CREATE TABLE IF NOT EXISTS task_names (
    name     text PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
