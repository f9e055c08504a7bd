-- Push for unread messages and notifications (docs/webhooks.md#push; the rule is in
-- crates/gateway/src/webhooks/push.rs).

-- A member's setting, and how far their messages were pushed to them (or need never be: what
-- came before they joined, or while the room was muted).
ALTER TABLE room_members
    ADD COLUMN muted boolean NOT NULL DEFAULT false,
    ADD COLUMN pushed_seq bigint NOT NULL DEFAULT 0 CHECK (pushed_seq >= 0);

-- Existing members owe nothing from before this migration.
UPDATE room_members m SET pushed_seq = r.last_seq FROM rooms r WHERE r.id = m.room;

-- When the room's messages are next looked at by a push pass: one mark per room, set by the
-- message commits that find it empty.
ALTER TABLE rooms ADD COLUMN push_due_at timestamptz;
CREATE INDEX rooms_push_due ON rooms (push_due_at) WHERE push_due_at IS NOT NULL;

-- The same for a user's notifications, and how far a pass looked at them.
CREATE TABLE switchboard_push_users (
    user_id     text COLLATE "C" PRIMARY KEY,
    due_at      timestamptz,
    pushed_id   bigint NOT NULL DEFAULT 0
);
CREATE INDEX switchboard_push_users_due ON switchboard_push_users (due_at)
    WHERE due_at IS NOT NULL;
