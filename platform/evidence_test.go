package platform

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
	"github.com/tinylib/msgp/msgp"
)

type testSigner struct{ k ed25519.PrivateKey }

func (s testSigner) Sign(m []byte) []byte { return ed25519.Sign(s.k, m) }

func testKey(seed byte) (ed25519.PublicKey, testSigner) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return k.Public().(ed25519.PublicKey), testSigner{k}
}

// keyedState is a state message announcing a device key.
func keyedState(t testing.TB, fl, dev string, boot uint32, at int64, key ed25519.PublicKey) Message {
	b := msgp.AppendMapHeader(nil, 6)
	b = msgp.AppendString(b, "online")
	b = msgp.AppendBool(b, true)
	b = msgp.AppendString(b, "boot")
	b = msgp.AppendUint32(b, boot)
	b = msgp.AppendString(b, "bdseq")
	b = msgp.AppendUint64(b, 1)
	b = msgp.AppendString(b, "version")
	b = msgp.AppendString(b, "1.2.3")
	b = msgp.AppendString(b, "time")
	b = msgp.AppendInt64(b, at)
	b = msgp.AppendString(b, "device_key")
	b = msgp.AppendString(b, base64.StdEncoding.EncodeToString(key))
	return Message{Topic: wire.Topic(fl, dev, ChannelState), Payload: b, Received: time.Now()}
}

// evidenceDevice stamps a shift as the agent does: a boot checkpoint,
// then n records of every stored shape (positions with and without their
// optional fields and with an unknown flag bit, events, a TETRA radio
// status whose location area the JSON body leaves out, a battery with a
// temperature but no flag), a checkpoint every every records, and a
// shutdown checkpoint.
type evidenceDevice struct {
	chain *evidence.Chain
	key   evidence.Signer
	seq   uint64
	boot  uint32
	recs  []kestrel.Record
}

func newEvidenceDevice(s evidence.Signer) *evidenceDevice {
	return &evidenceDevice{chain: evidence.NewChain(evidence.Head{}), key: s, boot: 1}
}

func (d *evidenceDevice) stamp(body kestrel.Body) kestrel.Record {
	d.seq++
	return kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-9", Boot: d.boot, Seq: d.seq, Time: 1_767_225_600_000 + int64(d.seq)*1000, Priority: kestrel.PriorityNormal}, Body: body}
}

func (d *evidenceDevice) checkpoint(t testing.TB, reason kestrel.CheckpointReason) {
	r := d.stamp(nil)
	if err := d.chain.Checkpoint(&r, reason, d.key); err != nil {
		t.Fatal(err)
	}
	_ = d.chain.Add(&r)
	d.recs = append(d.recs, r)
}

func (d *evidenceDevice) add(body kestrel.Body) {
	r := d.stamp(body)
	_ = d.chain.Add(&r)
	d.recs = append(d.recs, r)
}

func (d *evidenceDevice) shift(t testing.TB, n, every int) {
	d.checkpoint(t, kestrel.CheckpointBoot)
	for i := range n {
		switch {
		case i%50 == 7:
			d.add(&kestrel.Event{Type: kestrel.EventRecordingStart, Source: "firmware", Name: "cam", Value: int64(i), Text: "rec\tstart é"})
		case i%50 == 13:
			d.add(&kestrel.RadioStatus{Profile: kestrel.ProfileTETRA, Registered: kestrel.RegHome, Online: true, RSSI: -71, TAC: 4711, CellID: 1 << 40, Identity: "2345678", AccessTech: kestrel.AccessTechUnknown})
		case i%50 == 21:
			d.add(&kestrel.Battery{Capacity: 80, Status: "Discharging", VoltageMV: 3900, TempDeciC: 251})
		case i%2 == 0:
			d.add(&kestrel.Position{Lat: 515000000 + int32(i)*7, Lon: -1275900 - int32(i), Alt: 2150 + int32(i), Speed: 140, Track: 9000, Mode: kestrel.Fix3D, Sats: 9, HDOP: 90, EPH: 77,
				Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP | kestrel.HasEPH | 1<<10})
		default:
			d.add(&kestrel.Position{Lat: -337000000 - int32(i), Lon: 1512000000 + int32(i), Mode: kestrel.Fix2D, Coarsened: uint32(i % 3)})
		}
		if d.chain.Since() >= uint64(every) {
			d.checkpoint(t, kestrel.CheckpointRecords)
		}
	}
	d.checkpoint(t, kestrel.CheckpointShutdown)
}

// send writes the device's records as the agent publishes them: events
// on their channel, the rest as telemetry, in batches of 20.
func (d *evidenceDevice) send(t *testing.T, s *Store, from int) {
	t.Helper()
	var tel, evs []kestrel.Record
	flush := func() {
		if len(tel) > 0 {
			write(t, s, message(t, "met", "bwc-9", ChannelTelemetry, tel...))
		}
		if len(evs) > 0 {
			write(t, s, message(t, "met", "bwc-9", ChannelEvents, evs...))
		}
		tel, evs = nil, nil
	}
	for _, r := range d.recs[from:] {
		if r.Kind() == kestrel.KindEvent {
			evs = append(evs, r)
		} else {
			tel = append(tel, r)
		}
		if len(tel)+len(evs) >= 20 {
			flush()
		}
	}
	flush()
}

func verifyDB(t *testing.T, s *Store, q EvidenceQuery) *evidence.Report {
	t.Helper()
	b, err := s.EvidenceBundle(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	// Through the bundle format, as kestrelctl writes and reads it.
	var w bytes.Buffer
	if err := evidence.WriteBundle(&w, b); err != nil {
		t.Fatal(err)
	}
	rb, err := evidence.ReadBundle(&w)
	if err != nil {
		t.Fatal(err)
	}
	return evidence.Verify(rb, nil)
}

func wantFirst(t *testing.T, rep *evidence.Report, kind string, seq uint64) {
	t.Helper()
	if rep.OK() {
		t.Fatalf("not caught: %s", rep.Summary())
	}
	if p := rep.Problems[0]; p.Kind != kind || (seq != 0 && p.Seq != seq) {
		t.Fatalf("first problem %s, want %s at seq %d\n%s", p, kind, seq, rep.Summary())
	}
}

func exec(t *testing.T, s *Store, q string, args ...any) {
	t.Helper()
	r, err := s.DB().Exec(s.d.q(q), args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, _ := r.RowsAffected(); n != 1 && !strings.HasPrefix(q, "UPDATE enrolments") {
		t.Fatalf("%s: %d rows", q, n)
	}
}

// TestEvidenceFromDatabase stores a device's shift through ingest's Write,
// enrols its key, and verifies the database: clean, every record proven
// (the kinds whose JSON is lossy included); then each tampering of the
// stored rows is caught and named.
func TestEvidenceFromDatabase(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		pub, signer := testKey(1)
		setup := func(t *testing.T) (*Store, *evidenceDevice) {
			s := open(t)
			d := newEvidenceDevice(signer)
			d.shift(t, 400, 60)
			write(t, s, keyedState(t, "met", "bwc-9", 1, 1_767_225_600_000, pub))
			d.send(t, s, 0)
			if _, err := s.Enrol(context.Background(), EnrolRequest{Fleet: "met", Device: "bwc-9", Key: pub, By: "test", Source: "key"}); err != nil {
				t.Fatal(err)
			}
			return s, d
		}
		q := EvidenceQuery{Device: "bwc-9"}
		seqOf := func(d *evidenceDevice, k kestrel.Kind, nth int) uint64 {
			for _, r := range d.recs {
				if r.Kind() == k {
					if nth == 0 {
						return r.Seq
					}
					nth--
				}
			}
			t.Fatalf("no %s", k)
			return 0
		}
		t.Run("clean", func(t *testing.T) {
			s, d := setup(t)
			rep := verifyDB(t, s, q)
			if !rep.OK() || rep.Proven != len(d.recs) || rep.Records != len(d.recs) {
				t.Fatalf("clean: %s", rep.Summary())
			}
			keys, err := s.DeviceKeys(context.Background(), "met", "bwc-9")
			if err != nil || len(keys) != 1 || keys[0].Status != KeyEnrolled || keys[0].Checkpoints[VerdictAnnounced] == 0 {
				t.Fatalf("device keys %+v %v", keys, err)
			}
		})
		t.Run("range", func(t *testing.T) {
			s, d := setup(t)
			mid := d.recs[len(d.recs)/2]
			rep := verifyDB(t, s, EvidenceQuery{Device: "bwc-9", From: time.UnixMilli(mid.Time), To: time.UnixMilli(mid.Time + 30_000)})
			if !rep.OK() || rep.FirstSeq == 0 || rep.Records >= len(d.recs) || rep.Records < 30 {
				t.Fatalf("range: %s", rep.Summary())
			}
		})
		cases := []struct {
			name, kind string
			tamper     func(t *testing.T, s *Store, d *evidenceDevice) uint64 // the seq named
		}{
			{"lat", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindPosition, 100)
				exec(t, s, "UPDATE positions SET lat = lat + 0.0000001 WHERE seq = ?", int64(seq))
				return 0 // the segment's first seq
			}},
			{"alt wrapped", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindPosition, 0)
				exec(t, s, "UPDATE positions SET alt = alt + 42949672.96 WHERE seq = ?", int64(seq))
				return seq
			}},
			{"alt nulled", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindPosition, 0)
				exec(t, s, "UPDATE positions SET alt = NULL WHERE seq = ?", int64(seq))
				return seq
			}},
			{"event text", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				exec(t, s, "UPDATE events SET text = 'nothing happened' WHERE seq = ?", int64(seqOf(d, kestrel.KindEvent, 2)))
				return 0
			}},
			{"radio body", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindRadio, 1)
				exec(t, s, "UPDATE records SET body = ? WHERE seq = ?", `{"kind":"radio"}`, int64(seq))
				return seq
			}},
			{"deleted", "missing", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindPosition, 150)
				exec(t, s, "DELETE FROM positions WHERE seq = ?", int64(seq))
				return seq
			}},
			{"reordered", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				a, b := seqOf(d, kestrel.KindPosition, 40), seqOf(d, kestrel.KindPosition, 42)
				exec(t, s, "UPDATE positions SET seq = -1 WHERE seq = ?", int64(a))
				exec(t, s, "UPDATE positions SET seq = ? WHERE seq = ?", int64(a), int64(b))
				exec(t, s, "UPDATE positions SET seq = ? WHERE seq = -1", int64(b))
				return 0
			}},
			{"forged checkpoint", "forged", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				// Re-signed by another key over an altered head, in both
				// tables, as a forger with database access would.
				_, other := testKey(7)
				var ck kestrel.Record
				for _, r := range d.recs {
					if c, ok := r.Body.(*kestrel.Checkpoint); ok && c.Reason == kestrel.CheckpointRecords {
						ck = r
					}
				}
				c := *ck.Body.(*kestrel.Checkpoint)
				c.Head = bytes.Repeat([]byte{9}, 32)
				ck.Body = &c
				msg, _ := evidence.SignedMessage(&ck)
				c.Sig = other.Sign(msg)
				raw, _ := wire.AppendRecord(nil, &ck)
				exec(t, s, "UPDATE checkpoints SET head = ?, sig = ? WHERE seq = ?", c.Head, c.Sig, int64(ck.Seq))
				exec(t, s, "UPDATE records SET record_wire = ?, body = ? WHERE seq = ?", raw, string(wire.AppendJSON(nil, &ck)), int64(ck.Seq))
				return ck.Seq
			}},
			{"checkpoint copy", "altered", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				seq := seqOf(d, kestrel.KindCheckpoint, 2)
				exec(t, s, "UPDATE checkpoints SET count = count + 1 WHERE seq = ?", int64(seq))
				return seq
			}},
			{"enrolled key swapped", "key", func(t *testing.T, s *Store, d *evidenceDevice) uint64 {
				other, _ := testKey(8)
				exec(t, s, "UPDATE enrolments SET device_key = ?", base64.StdEncoding.EncodeToString(other))
				return 0
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s, d := setup(t)
				seq := c.tamper(t, s, d)
				wantFirst(t, verifyDB(t, s, q), c.kind, seq)
			})
		}
	})
}

// TestDeviceKeyChangeFlagged: a device that announces another key than
// its enrolled one is flagged on ingest (status, metric count), its new
// checkpoints are stored unverified and the records after the change are
// not proven; an explicit re-enrolment from the change proves them.
func TestDeviceKeyChangeFlagged(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		ctx := context.Background()
		s := open(t)
		pubA, a := testKey(1)
		pubB, bk := testKey(2)
		d := newEvidenceDevice(a)
		d.shift(t, 200, 60)
		write(t, s, keyedState(t, "met", "bwc-9", 1, 1_767_225_600_000, pubA))
		if _, err := s.Enrol(ctx, EnrolRequest{Fleet: "met", Device: "bwc-9", Key: pubA, By: "fitter", Source: "key"}); err != nil {
			t.Fatal(err)
		}
		d.send(t, s, 0)
		// The device comes back with a new key (the chain head kept).
		n := len(d.recs)
		d.key, d.boot = bk, 2
		d.chain = evidence.NewChain(d.chain.Head())
		d.shift(t, 100, 60)
		if r := write(t, s, keyedState(t, "met", "bwc-9", 2, 1_767_225_900_000, pubB)); r.KeyChanges != 1 {
			t.Fatalf("state with a new key: %+v", r)
		}
		d.send(t, s, n)
		keys, err := s.DeviceKeys(ctx, "met", "bwc-9")
		if err != nil || keys[0].Status != KeyChanged || keys[0].ChangedSeq == nil || *keys[0].ChangedSeq != d.recs[n].Seq || keys[0].Unverified != 3 {
			t.Fatalf("flag: %+v %v", keys, err)
		}
		// The dashboard's device view reads it from Devices.
		if devs, err := s.Devices(ctx, "met"); err != nil || devs[0].KeyStatus != KeyChanged || devs[0].KeyChangedSeq == nil {
			t.Fatalf("devices: %+v %v", devs, err)
		}
		rep := verifyDB(t, s, EvidenceQuery{Device: "bwc-9"})
		wantFirst(t, rep, "key", d.recs[n].Seq)
		if rep.Proven != n {
			t.Fatalf("proven %d, want the %d records before the change: %s", rep.Proven, n, rep.Summary())
		}
		// Another state message with the enrolled key does not clear it.
		write(t, s, keyedState(t, "met", "bwc-9", 2, 1_767_226_000_000, pubA))
		if keys, _ := s.DeviceKeys(ctx, "met", "bwc-9"); keys[0].Status != KeyChanged {
			t.Fatalf("flag cleared without re-enrolment: %+v", keys[0])
		}
		write(t, s, keyedState(t, "met", "bwc-9", 2, 1_767_226_100_000, pubB))
		if _, err := s.Enrol(ctx, EnrolRequest{Fleet: "met", Device: "bwc-9", Key: pubB, By: "fitter", Source: "key"}); err == nil {
			t.Fatal("re-enrolled without --re-enrol")
		}
		e, err := s.Enrol(ctx, EnrolRequest{Fleet: "met", Device: "bwc-9", Key: pubB, By: "sergeant", Source: "key", Note: "camera reset", ReEnrol: true})
		if err != nil || e.FromSeq != d.recs[n].Seq || e.PreviousKeyID == "" {
			t.Fatalf("re-enrol: %+v %v", e, err)
		}
		if rep := verifyDB(t, s, EvidenceQuery{Device: "bwc-9"}); !rep.OK() || rep.Proven != len(d.recs) {
			t.Fatalf("after re-enrolment: %s", rep.Summary())
		}
		keys, _ = s.DeviceKeys(ctx, "met", "bwc-9")
		if keys[0].Status != KeyEnrolled || len(keys[0].Enrolments) != 2 {
			t.Fatalf("after re-enrolment: %+v", keys[0])
		}
	})
}

// TestIngestKeyChangeMetric: through a real broker, a state message with
// another key than the enrolled one raises the key-change metric and the
// ingest logs it; the enrolled key does not.
func TestIngestKeyChangeMetric(t *testing.T) {
	b := broker.StartMochi(t)
	s := openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "k.db"))
	pubA, _ := testKey(1)
	pubB, _ := testKey(2)
	if _, err := s.Enrol(context.Background(), EnrolRequest{Fleet: "met", Device: "bwc-9", Key: pubA, By: "test", Source: "key"}); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	stop := startIngest(t, s, IngestOptions{Broker: b.URL(), ClientID: "platform-keys", Metrics: m})
	defer stop()
	c := publisher(t, b.URL())
	metric := func() float64 {
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "kestrel_platform_device_key_changes_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no kestrel_platform_device_key_changes_total")
		return 0
	}
	status := func() string {
		keys, err := s.DeviceKeys(context.Background(), "met", "bwc-9")
		if err != nil || len(keys) == 0 {
			return ""
		}
		return keys[0].Status
	}
	publish(t, c, keyedState(t, "met", "bwc-9", 1, 1000, pubA), false)
	waitUntil(t, func() bool { return status() == KeyEnrolled })
	if metric() != 0 {
		t.Fatalf("metric %v after the enrolled key", metric())
	}
	publish(t, c, keyedState(t, "met", "bwc-9", 2, 2000, pubB), false)
	waitUntil(t, func() bool { return status() == KeyChanged && metric() == 1 })
	publish(t, c, keyedState(t, "met", "bwc-9", 2, 3000, pubB), false)
	time.Sleep(300 * time.Millisecond)
	if metric() != 1 {
		t.Fatalf("a flagged device counted again: %v", metric())
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
