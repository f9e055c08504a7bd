-- The transactional outbox: the app inserts a row here in its own transaction, and a gateway
-- appends it to its room once the transaction commits (docs/api.md, "Publish from your
-- database"). Rows are deleted once appended; rows that cannot be (no such room, bad content)
-- stay, with failed_at and error set.
CREATE TABLE switchboard_outbox (
    id          bigserial PRIMARY KEY,
    room        text NOT NULL,
    content     text NOT NULL,
    kind        text NOT NULL DEFAULT 'text',
    -- NULL: the system user.
    sender_id   text,
    sender_name text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    failed_at   timestamptz,
    error       text
);

CREATE INDEX switchboard_outbox_pending ON switchboard_outbox (id) WHERE failed_at IS NULL;

-- Wakes the gateways' relays when an insert commits (a NOTIFY is sent at commit, and never for
-- a transaction that rolls back).
CREATE FUNCTION switchboard_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER switchboard_outbox_notify AFTER INSERT ON switchboard_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION switchboard_outbox_notify();
