-- Evidence (docs/evidence.md, "On the platform"): what kestrelctl verify
-- needs from the database to recompute every record's chain digest.

-- A position's flags as the device sent them (the columns' NULLs say the
-- same for the known bits; a row stored before this migration has NULL).
ALTER TABLE positions ADD COLUMN flags integer;

-- The record in the spool's single-record form (wire.AppendRecord), for the kinds whose
-- JSON body is not lossless (a TETRA radio's location area, a battery
-- temperature without its flag): what the chain digest covers.
ALTER TABLE records ADD COLUMN record_wire blob;

-- Signed checkpoints (record kind 10), one row each: the chain heads.
CREATE TABLE checkpoints (
	fleet    text        NOT NULL,
	device   text        NOT NULL,
	boot     bigint      NOT NULL,
	seq      bigint      NOT NULL,
	time     text NOT NULL,
	reason   smallint    NOT NULL,
	from_seq bigint      NOT NULL,
	last_seq bigint      NOT NULL,
	count    bigint      NOT NULL,
	head     blob       NOT NULL,
	sig      blob       NOT NULL,
	key_id   text,                 -- the key that verified the signature at ingest; NULL: none did
	verdict  text        NOT NULL, -- enrolled, announced (not enrolled), unverified
	priority text        NOT NULL,
	received text NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
);
CREATE INDEX checkpoints_device_seq ON checkpoints (fleet, device, seq);

-- Enrolments: each act of pinning a device key, never updated or deleted
-- (a re-enrolment is a new row naming the key it replaces).
CREATE TABLE enrolments (
	id              integer     PRIMARY KEY AUTOINCREMENT,
	fleet           text        NOT NULL,
	device          text        NOT NULL,
	device_key      text        NOT NULL,
	key_id          text        NOT NULL,
	from_seq        bigint      NOT NULL,
	enrolled        text NOT NULL,
	enrolled_by     text        NOT NULL,
	source          text        NOT NULL,
	note            text        NOT NULL,
	previous_key_id text
);
CREATE INDEX enrolments_device ON enrolments (fleet, device, id);

-- The key a device announces, checked against its enrolment on ingest.
ALTER TABLE devices ADD COLUMN device_key text;
ALTER TABLE devices ADD COLUMN key_status text; -- unenrolled, enrolled, changed
ALTER TABLE devices ADD COLUMN key_changed text;
ALTER TABLE devices ADD COLUMN key_changed_seq bigint; -- first checkpoint not signed by the enrolled key
ALTER TABLE devices ADD COLUMN unverified_checkpoints bigint NOT NULL DEFAULT 0;
