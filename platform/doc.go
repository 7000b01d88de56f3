// Package platform is the command platform's end of the wire: it ingests
// what a fleet sends over MQTT into a database, at least once, and reads it
// back (the read API of "kestrelctl track/gaps/devices" and of
// "kestrel-platform serve --http").
//
// Ingest subscribes with a persistent session (clean session off, a fixed
// client id) at QoS 1 to the telemetry, events, state, config/reported and
// audit channels of docs/topics.md, decodes the data channels with
// transport/wire, writes a batch of messages in one database transaction and
// sends each message's PUBACK only after that transaction has committed
// (paho's manual acknowledgement, in the order the messages arrived, as MQTT
// 3.1.1 section 4.6 requires). Inserts are idempotent on (fleet, device,
// boot, seq), so a redelivered message never duplicates a row; missing
// sequence ranges are kept in the gaps table as they open and close.
//
// Stores: PostgreSQL (jackc/pgx; monthly partitions of positions, PostGIS
// geography where the extension is available) and SQLite (modernc.org/sqlite,
// no cgo) as "sqlite:FILE". Both run the same SQL through database/sql with
// a small dialect, the migrations embedded and versioned in migrations/, and
// one contract suite (store_test.go) runs against both.
//
// This package imports transport and the record model, never agent
// (DESIGN.md, "Data path").
package platform
