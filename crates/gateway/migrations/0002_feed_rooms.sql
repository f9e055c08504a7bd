-- Feed rooms: anyone may join and read, only the app's backend publishes (server API).
ALTER TABLE rooms DROP CONSTRAINT rooms_kind_check;
ALTER TABLE rooms ADD CONSTRAINT rooms_kind_check
    CHECK (kind IN ('public', 'private', 'password', 'direct', 'feed'));
