-- The device list's fields of the last state message (DeviceStatus,
-- docs/platform.md), as columns that sort and filter; rows written before
-- this migration take them from their stored state.
ALTER TABLE devices ADD COLUMN battery_percent  integer;
ALTER TABLE devices ADD COLUMN battery_status   text;
ALTER TABLE devices ADD COLUMN ignition         boolean;
ALTER TABLE devices ADD COLUMN radio_profile    text;
ALTER TABLE devices ADD COLUMN radio_registered integer;
ALTER TABLE devices ADD COLUMN radio_act        integer;
ALTER TABLE devices ADD COLUMN radio_rssi       integer;
ALTER TABLE devices ADD COLUMN spool_records    bigint;
ALTER TABLE devices ADD COLUMN spool_bytes      bigint;
ALTER TABLE devices ADD COLUMN spool_oldest_s   bigint;
ALTER TABLE devices ADD COLUMN privacy_mode     text;
UPDATE devices SET
	battery_percent  = CASE WHEN json_type(state, '$.battery') = 'integer' THEN max(0, min(100, json_extract(state, '$.battery'))) END,
	battery_status   = CASE WHEN json_type(state, '$.battery_status') = 'text' THEN substr(json_extract(state, '$.battery_status'), 1, 64) END,
	ignition         = CASE json_type(state, '$.ignition') WHEN 'true' THEN 1 WHEN 'false' THEN 0 END,
	radio_profile    = CASE WHEN json_type(state, '$.radio_profile') = 'text' THEN substr(json_extract(state, '$.radio_profile'), 1, 64) END,
	radio_registered = CASE WHEN json_type(state, '$.radio_registered') = 'integer' THEN max(0, min(255, json_extract(state, '$.radio_registered'))) END,
	radio_act        = CASE WHEN json_type(state, '$.radio_act') = 'integer' THEN max(0, min(255, json_extract(state, '$.radio_act'))) END,
	radio_rssi       = CASE WHEN json_type(state, '$.radio_rssi') = 'integer' THEN max(-32768, min(32767, json_extract(state, '$.radio_rssi'))) END,
	spool_records    = CASE WHEN json_type(state, '$.spool_records') = 'integer' THEN max(0, json_extract(state, '$.spool_records')) END,
	spool_bytes      = CASE WHEN json_type(state, '$.spool_bytes') = 'integer' THEN max(0, json_extract(state, '$.spool_bytes')) END,
	spool_oldest_s   = CASE WHEN json_type(state, '$.spool_oldest_s') = 'integer' THEN max(0, json_extract(state, '$.spool_oldest_s')) END,
	privacy_mode     = CASE WHEN json_type(state, '$.privacy_mode') = 'text' THEN substr(json_extract(state, '$.privacy_mode'), 1, 64) END
WHERE state IS NOT NULL AND json_valid(state);
