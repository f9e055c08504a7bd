-- Switchboard schema, version 1.
--
-- Identifiers compare byte by byte (COLLATE "C"), like the gateway's own ordering of ids,
-- whatever the database's locale. Times are timestamptz; the gateway speaks Unix milliseconds.

-- The store's identity: positions (room seqs) are only meaningful within one epoch.
CREATE TABLE store_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     text NOT NULL
);
INSERT INTO store_meta (epoch) VALUES (gen_random_uuid()::text);

-- Upserted from the token on every connect.
CREATE TABLE users (
    id        text COLLATE "C" PRIMARY KEY,
    name      text NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now(),
    status    text NOT NULL DEFAULT 'online'
);

CREATE TABLE rooms (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('public', 'private', 'password', 'direct')),
    -- Argon2 PHC string, for password rooms only.
    password_hash text,
    created_by    text COLLATE "C" NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The seq of the latest message; the group committer moves it under the row lock.
    last_seq      bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE TABLE room_members (
    room      text COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   text COLLATE "C" NOT NULL,
    role      text NOT NULL DEFAULT 'member',
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, user_id)
);
CREATE INDEX room_members_by_user ON room_members (user_id);

-- No foreign key to rooms: the group committer checks the room under its row lock, and rooms
-- are never deleted; a per-row key check would cost about a fifth of the insert throughput.
CREATE TABLE messages (
    room          text COLLATE "C" NOT NULL,
    seq           bigint NOT NULL CHECK (seq > 0),
    id            uuid NOT NULL,
    sender        text COLLATE "C" NOT NULL,
    -- The sender's display name when the message was sent.
    sender_name   text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('text', 'image', 'file')),
    content       text NOT NULL,
    client_msg_id text COLLATE "C" NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (room, seq),
    -- Idempotency: a retried clientMsgId finds the original.
    UNIQUE (room, sender, client_msg_id)
);

CREATE TABLE read_watermarks (
    user_id       text COLLATE "C" NOT NULL,
    room          text COLLATE "C" NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    last_read_seq bigint NOT NULL CHECK (last_read_seq >= 0),
    PRIMARY KEY (user_id, room)
);

CREATE TABLE notifications (
    id         bigserial PRIMARY KEY,
    user_id    text COLLATE "C" NOT NULL,
    kind       text NOT NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz
);
CREATE INDEX notifications_by_user ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

-- A pending request is one row (asker → asked); an accepted friendship is two rows, one
-- each way, so "my friends" is one index range.
CREATE TABLE friendships (
    user_id    text COLLATE "C" NOT NULL,
    friend_id  text COLLATE "C" NOT NULL,
    status     text NOT NULL CHECK (status IN ('pending', 'accepted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, friend_id),
    CHECK (user_id <> friend_id)
);
CREATE INDEX friendships_by_friend ON friendships (friend_id);
