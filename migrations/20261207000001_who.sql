-- Who submitted a job (the API token's name, or `amqp` for a publisher on the broker), and who
-- steered it (canceled or retried it through the API). Adding a nullable column rewrites
-- nothing; steers go with their job when retention deletes it.
ALTER TABLE jobs ADD COLUMN submitted_by text;

CREATE TABLE steers (
    seq bigserial PRIMARY KEY,
    job uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    action text NOT NULL,
    by_name text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX steers_by_job ON steers (job, seq);
