-- The webhook outbox (docs/webhooks.md): an event is written here in the transaction of the
-- change that caused it, and every gateway's delivery worker claims due rows with
-- FOR UPDATE SKIP LOCKED under a lease (locked_until). A delivered row is deleted; one whose
-- retries ran out stays with failed_at set, until the app sends it again through the server API.
CREATE TABLE switchboard_webhooks (
    id              bigserial PRIMARY KEY,
    -- webhook-id: the same for every attempt.
    event_id        text NOT NULL UNIQUE,
    type            text NOT NULL,
    -- The exact bytes every attempt sends and signs.
    body            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Where the retry window began: created_at, or when a failed row was sent again.
    retry_from      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Claimed by a worker until then; a dead worker's claim runs out.
    locked_until    timestamptz,
    failed_at       timestamptz,
    last_error      text
);

CREATE INDEX switchboard_webhooks_due ON switchboard_webhooks (next_attempt_at)
    WHERE failed_at IS NULL;
CREATE INDEX switchboard_webhooks_failed ON switchboard_webhooks (failed_at DESC)
    WHERE failed_at IS NOT NULL;
