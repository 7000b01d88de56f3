-- OTA update reports (update/reported, transport/fleet.UpdateReport,
-- docs/ota.md): one row per distinct report a device sent, so a device's
-- update history stays; the latest by (time, id: arrival order) is its
-- current state. payload is the message as received (sealed by the device key or
-- bare): kestrelctl update status --db checks its signature against the
-- key the device's state announces. Numbered after issue 17 so that
-- migrations added on other branches do not collide.
CREATE TABLE updates (
	id              bigserial PRIMARY KEY,
	fleet           text    NOT NULL,
	device          text    NOT NULL,
	seq             bigint  NOT NULL,
	version         text    NOT NULL,
	state           text    NOT NULL,
	have            bigint  NOT NULL,
	size            bigint  NOT NULL,
	delta           boolean NOT NULL,
	reason          text    NOT NULL,
	running_seq     bigint  NOT NULL,
	running_version text    NOT NULL,
	time            timestamptz NOT NULL,
	kid             text    NOT NULL,
	digest          text    NOT NULL,
	payload         text    NOT NULL,
	received        timestamptz NOT NULL,
	UNIQUE (fleet, device, digest)
);
CREATE INDEX updates_device_time ON updates (fleet, device, time);
