-- Bans set by the app's backend (server API): connections are refused until banned_until.
ALTER TABLE users ADD COLUMN banned_until timestamptz, ADD COLUMN ban_reason text;
