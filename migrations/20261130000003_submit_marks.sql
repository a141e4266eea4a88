-- Submit messages without a message_id, recorded and not yet acked: a digest of the message
-- (body and properties) and the job it became. A redelivery of such a message (its server
-- died between the insert and the ack) finds its job here instead of becoming a second one.
-- A mark goes once its message is acked; marks left by a crash in between are purged.
CREATE TABLE IF NOT EXISTS submit_marks (
    job     uuid PRIMARY KEY,
    digest  uuid NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS submit_marks_digest ON submit_marks (digest, at);
