-- The device list's fields of the last state message (DeviceStatus,
-- docs/platform.md), as columns that sort and filter; rows written before
-- this migration take them from their stored state.
ALTER TABLE devices
	ADD COLUMN battery_percent  integer,
	ADD COLUMN battery_status   text,
	ADD COLUMN ignition         boolean,
	ADD COLUMN radio_profile    text,
	ADD COLUMN radio_registered integer,
	ADD COLUMN radio_act        integer,
	ADD COLUMN radio_rssi       integer,
	ADD COLUMN spool_records    bigint,
	ADD COLUMN spool_bytes      bigint,
	ADD COLUMN spool_oldest_s   bigint,
	ADD COLUMN privacy_mode     text;
-- A JSON number from the agent is an integer; anything else (or one out of
-- range) is left NULL rather than failing the migration.
UPDATE devices SET
	battery_percent  = CASE WHEN jsonb_typeof(state->'battery') = 'number' AND (state->>'battery') ~ '^-?[0-9]{1,18}$' THEN greatest(0, least(100, (state->>'battery')::bigint)) END,
	battery_status   = CASE WHEN jsonb_typeof(state->'battery_status') = 'string' THEN left(state->>'battery_status', 64) END,
	ignition         = CASE WHEN jsonb_typeof(state->'ignition') = 'boolean' THEN (state->>'ignition')::boolean END,
	radio_profile    = CASE WHEN jsonb_typeof(state->'radio_profile') = 'string' THEN left(state->>'radio_profile', 64) END,
	radio_registered = CASE WHEN jsonb_typeof(state->'radio_registered') = 'number' AND (state->>'radio_registered') ~ '^-?[0-9]{1,18}$' THEN greatest(0, least(255, (state->>'radio_registered')::bigint)) END,
	radio_act        = CASE WHEN jsonb_typeof(state->'radio_act') = 'number' AND (state->>'radio_act') ~ '^-?[0-9]{1,18}$' THEN greatest(0, least(255, (state->>'radio_act')::bigint)) END,
	radio_rssi       = CASE WHEN jsonb_typeof(state->'radio_rssi') = 'number' AND (state->>'radio_rssi') ~ '^-?[0-9]{1,18}$' THEN greatest(-32768, least(32767, (state->>'radio_rssi')::bigint)) END,
	spool_records    = CASE WHEN jsonb_typeof(state->'spool_records') = 'number' AND (state->>'spool_records') ~ '^[0-9]{1,18}$' THEN (state->>'spool_records')::bigint END,
	spool_bytes      = CASE WHEN jsonb_typeof(state->'spool_bytes') = 'number' AND (state->>'spool_bytes') ~ '^[0-9]{1,18}$' THEN (state->>'spool_bytes')::bigint END,
	spool_oldest_s   = CASE WHEN jsonb_typeof(state->'spool_oldest_s') = 'number' AND (state->>'spool_oldest_s') ~ '^[0-9]{1,18}$' THEN (state->>'spool_oldest_s')::bigint END,
	privacy_mode     = CASE WHEN jsonb_typeof(state->'privacy_mode') = 'string' THEN left(state->>'privacy_mode', 64) END
WHERE state IS NOT NULL;
