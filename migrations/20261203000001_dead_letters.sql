-- What the control plane set aside in <prefix>.dead (refused submits, event messages that do
-- not parse), with the reason, for the dashboard's dead-letters page. The messages themselves
-- stay in the queue; this is their record, kept as long as finished jobs (LANES_RETENTION).
CREATE TABLE IF NOT EXISTS dead_letters (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL,
    job uuid,
    reason text NOT NULL,
    body text NOT NULL
);
