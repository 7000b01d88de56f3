-- Kestrel platform schema, version 1 (PostgreSQL).
-- The contract names (DESIGN.md): positions, events, devices, gaps and
-- their listed columns. Everything else is free to change in a later
-- migration.

-- positions is partitioned by month on time (see docs/platform.md for the
-- arithmetic). A partitioned table's unique key must contain the partition
-- key, so the key is (fleet, device, boot, seq, time); a record's time is
-- fixed on the device when it is made, so a redelivered record carries the
-- same time and the key is as unique as (fleet, device, boot, seq).
CREATE TABLE positions (
	fleet     text             NOT NULL,
	device    text             NOT NULL,
	boot      bigint           NOT NULL,
	seq       bigint           NOT NULL,
	time      timestamptz      NOT NULL,
	lat       double precision NOT NULL,
	lon       double precision NOT NULL,
	alt       double precision,
	speed     double precision,
	track     double precision,
	mode      smallint         NOT NULL,
	sats      smallint,
	hdop      double precision,
	priority  text             NOT NULL,
	received  timestamptz      NOT NULL,
	eph       double precision,
	epv       double precision,
	coarsened integer          NOT NULL DEFAULT 0,
	PRIMARY KEY (fleet, device, boot, seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX positions_device_time ON positions (fleet, device, time);

CREATE TABLE events (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	boot     bigint      NOT NULL,
	seq      bigint      NOT NULL,
	time     timestamptz NOT NULL,
	type     text        NOT NULL,
	source   text        NOT NULL,
	name     text        NOT NULL,
	value    bigint      NOT NULL,
	text     text        NOT NULL,
	priority text        NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX events_device_time ON events (fleet, device, time);
CREATE INDEX events_time ON events USING brin (time);

-- Every other record kind (gps, radio, accel, battery, thermal, link,
-- exec), its body in the JSON of "kestrelctl decode".
CREATE TABLE records (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	boot     bigint      NOT NULL,
	seq      bigint      NOT NULL,
	time     timestamptz NOT NULL,
	kind     text        NOT NULL,
	priority text        NOT NULL,
	body     jsonb       NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX records_device_time ON records (fleet, device, time);
CREATE INDEX records_time ON records USING brin (time);

CREATE TABLE devices (
	fleet         text    NOT NULL,
	device        text    NOT NULL,
	online        boolean,
	boot          bigint,
	last_seen     timestamptz,
	last_fix_time timestamptz,
	version       text,
	state         jsonb,
	state_time    bigint,
	last_lat      double precision,
	last_lon      double precision,
	messages      bigint  NOT NULL DEFAULT 0, -- data messages received (redeliveries included)
	bytes         bigint  NOT NULL DEFAULT 0, -- their payload bytes
	PRIMARY KEY (fleet, device)
);

-- Missing sequence ranges, kept as records arrive: an open gap has closed
-- NULL; a late record that fills the last of it sets closed.
CREATE TABLE gaps (
	id        bigserial PRIMARY KEY,
	fleet     text        NOT NULL,
	device    text        NOT NULL,
	boot      bigint      NOT NULL,
	first_seq bigint      NOT NULL,
	last_seq  bigint      NOT NULL,
	opened    timestamptz NOT NULL,
	closed    timestamptz
);
CREATE INDEX gaps_open ON gaps (fleet, device, boot) WHERE closed IS NULL;

-- The lowest and highest seq stored per device and boot: what gaps are
-- measured against. Its row is the per-device lock that serialises
-- instances writing the same device.
CREATE TABLE seq_ranges (
	fleet   text   NOT NULL,
	device  text   NOT NULL,
	boot    bigint NOT NULL,
	min_seq bigint NOT NULL,
	max_seq bigint NOT NULL,
	PRIMARY KEY (fleet, device, boot)
);

-- config/reported and audit messages (JSON), kept once per distinct payload.
CREATE TABLE reports (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	channel  text        NOT NULL,
	digest   text        NOT NULL,
	payload  text        NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (fleet, device, channel, digest)
);

-- Messages that did not decode, kept whole so nothing is lost.
CREATE TABLE rejected (
	id       bigserial PRIMARY KEY,
	topic    text        NOT NULL,
	payload  bytea       NOT NULL,
	error    text        NOT NULL,
	received timestamptz NOT NULL
);
