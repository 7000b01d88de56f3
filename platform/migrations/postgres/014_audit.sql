-- The devices' audit chains (docs/audit.md): one row per distinct entry,
-- as the device sealed it (payload), with what the chain check on insert
-- found (problems: '' when the entry joined the chain cleanly). A reused
-- seq is a second row with its own digest; a redelivery is the same row.
CREATE TABLE audit_entries (
	fleet    text   NOT NULL,
	device   text   NOT NULL,
	seq      bigint NOT NULL,
	digest   text   NOT NULL,
	prev     text   NOT NULL,
	time     timestamptz NOT NULL,
	kind     text   NOT NULL,
	result   text   NOT NULL,
	by_keys  text   NOT NULL,
	kid      text   NOT NULL,
	verdict  text   NOT NULL,
	problems text   NOT NULL,
	payload  text   NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (fleet, device, seq, digest)
);

-- The head of each device's chain as stored: the highest seq and its
-- digest, and the device key last announced (a Last Will's state message
-- carries none).
CREATE TABLE audit_heads (
	fleet      text   NOT NULL,
	device     text   NOT NULL,
	seq        bigint NOT NULL,
	digest     text   NOT NULL,
	device_key text   NOT NULL DEFAULT '',
	PRIMARY KEY (fleet, device)
);

-- Consultation and disclosure of personal data by kestrelctl (DPA 2018
-- s.62), hash-chained per platform: digest covers the row and prev.
CREATE TABLE consultations (
	seq        bigint PRIMARY KEY,
	time_ms    bigint NOT NULL,
	operator   text   NOT NULL,
	kid        text   NOT NULL,
	command    text   NOT NULL,
	fleet      text   NOT NULL,
	device     text   NOT NULL,
	range_from bigint NOT NULL,
	range_to   bigint NOT NULL,
	detail     text   NOT NULL,
	outcome    text   NOT NULL,
	prev       text   NOT NULL,
	digest     text   NOT NULL
);
