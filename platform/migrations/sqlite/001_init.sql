-- Kestrel platform schema, version 1 (SQLite).
-- The contract names (DESIGN.md): positions, events, devices, gaps and
-- their listed columns. Everything else is free to change in a later
-- migration.

-- Times are text, RFC 3339 in UTC with exactly three decimals
-- (2006-01-02T15:04:05.000Z): fixed width, so they sort as times do.
CREATE TABLE positions (
	fleet     text             NOT NULL,
	device    text             NOT NULL,
	boot      bigint           NOT NULL,
	seq       bigint           NOT NULL,
	time      text      NOT NULL,
	lat       real NOT NULL,
	lon       real NOT NULL,
	alt       real,
	speed     real,
	track     real,
	mode      smallint         NOT NULL,
	sats      smallint,
	hdop      real,
	priority  text             NOT NULL,
	received  text      NOT NULL,
	eph       real,
	epv       real,
	coarsened integer          NOT NULL DEFAULT 0,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX positions_device_time ON positions (fleet, device, time);

CREATE TABLE events (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	boot     bigint      NOT NULL,
	seq      bigint      NOT NULL,
	time     text NOT NULL,
	type     text        NOT NULL,
	source   text        NOT NULL,
	name     text        NOT NULL,
	value    bigint      NOT NULL,
	text     text        NOT NULL,
	priority text        NOT NULL,
	received text NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX events_device_time ON events (fleet, device, time);
CREATE INDEX events_time ON events (time);

-- Every other record kind (gps, radio, accel, battery, thermal, link,
-- exec), its body in the JSON of "kestrelctl decode".
CREATE TABLE records (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	boot     bigint      NOT NULL,
	seq      bigint      NOT NULL,
	time     text NOT NULL,
	kind     text        NOT NULL,
	priority text        NOT NULL,
	body     text       NOT NULL,
	received text NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX records_device_time ON records (fleet, device, time);
CREATE INDEX records_time ON records (time);

CREATE TABLE devices (
	fleet         text    NOT NULL,
	device        text    NOT NULL,
	online        boolean,
	boot          bigint,
	last_seen     text,
	last_fix_time text,
	version       text,
	state         text,
	state_time    bigint,
	last_lat      real,
	last_lon      real,
	messages      bigint  NOT NULL DEFAULT 0, -- data messages received (redeliveries included)
	bytes         bigint  NOT NULL DEFAULT 0, -- their payload bytes
	PRIMARY KEY (fleet, device)
);

-- Missing sequence ranges, kept as records arrive: an open gap has closed
-- NULL; a late record that fills the last of it sets closed.
CREATE TABLE gaps (
	id        integer PRIMARY KEY AUTOINCREMENT,
	fleet     text        NOT NULL,
	device    text        NOT NULL,
	boot      bigint      NOT NULL,
	first_seq bigint      NOT NULL,
	last_seq  bigint      NOT NULL,
	opened    text NOT NULL,
	closed    text
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
	received text NOT NULL,
	PRIMARY KEY (fleet, device, channel, digest)
);

-- Messages that did not decode, kept whole so nothing is lost.
CREATE TABLE rejected (
	id       integer PRIMARY KEY AUTOINCREMENT,
	topic    text        NOT NULL,
	payload  blob       NOT NULL,
	error    text        NOT NULL,
	received text NOT NULL
);
