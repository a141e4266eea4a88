-- Resource limits: how many `slot:` holders a resource admits at once, and how many starts it
-- allows per period. The active control plane reads the table when it starts and whenever it
-- changes; a resource with no row has one slot and no rate.
CREATE TABLE IF NOT EXISTS resource_limits (
    name        text PRIMARY KEY,
    slots       int NOT NULL DEFAULT 1 CHECK (slots >= 1),
    rate_starts int CHECK (rate_starts >= 1),
    rate_per_ms bigint CHECK (rate_per_ms >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_starts IS NULL) = (rate_per_ms IS NULL))
);
