-- Applied only where the postgis extension is available (Debian
-- postgresql-15-postgis-3): a geography column computed from lat/lon and
-- a spatial index on it.
CREATE EXTENSION IF NOT EXISTS postgis;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS geog geography(Point, 4326)
	GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography) STORED;
CREATE INDEX IF NOT EXISTS positions_geog ON positions USING gist (geog);
