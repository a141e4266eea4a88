-- The leader lease: one active server per prefix. The holder renews `expires_at`; a standby
-- takes the lease once it has expired, or at once when the holder's session (`backend_pid`,
-- the connection it renews on) is gone, as when its process died, and bumps `epoch`. Writes of a control plane carry its
-- epoch and fail once another has taken the lease (`lanes_fence`), so a server that was
-- stopped or cut off and wakes up cannot record anything.
CREATE TABLE IF NOT EXISTS leases (
    prefix      text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    backend_pid int NOT NULL
);

-- True when `p` is not fenced (NULL) or epoch `e` still holds the lease of `p`; raises
-- otherwise. It share-locks the lease row until the calling statement commits, so a standby's
-- takeover (an UPDATE of that row) waits for every write that passed the check, and every
-- write after the takeover sees the new epoch. Called as `(SELECT lanes_fence(...))`: once
-- per statement.
CREATE OR REPLACE FUNCTION lanes_fence(p text, e bigint) RETURNS boolean AS $$
BEGIN
    IF p IS NULL THEN
        RETURN true;
    END IF;
    PERFORM 1 FROM leases WHERE prefix = p AND epoch = e FOR SHARE;
    IF FOUND THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'fenced: epoch % no longer holds the lease of %', e, p
        USING ERRCODE = 'LF001';
END $$ LANGUAGE plpgsql VOLATILE;
