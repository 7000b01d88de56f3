-- The dashboard reads the unacknowledged emergencies of the last day every
-- 250 ms: a partial index keeps that read to the emergency events, however
-- many other events the fleet sends. (Built inside the migration's
-- transaction: on a large events table ingest waits for it once.)
CREATE INDEX events_emergency ON events (time) WHERE type = 'emergency';
