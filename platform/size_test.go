package platform

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestPositionRowBytes measures what one stored position costs in
// PostgreSQL (heap, TOAST and every index, PostGIS column included): the
// figure behind the arithmetic of docs/platform.md. It writes 100 devices x
// 1,000 fixes through Store.Write.
//
//	KESTREL_PLATFORM_MEASURE=1 go test -run TestPositionRowBytes -v ./platform
func TestPositionRowBytes(t *testing.T) {
	if os.Getenv("KESTREL_PLATFORM_MEASURE") == "" {
		t.Skip("a measurement: set KESTREL_PLATFORM_MEASURE=1")
	}
	srv := sharedPostgres(t)
	s := openStore(t, srv.URL(t))
	start := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC).UnixMilli()
	const devices, fixes, per = 100, 1000, 50
	for i := 0; i < fixes; i += per {
		var b Batch
		for d := range devices {
			dev := fmt.Sprintf("bwc-%05d", d)
			var recs []kestrel.Record
			for k := i; k < i+per; k++ {
				r := pos(dev, 3, uint64(k+1), start+int64(k)*1000, 515000000+int32(k*13+d), -1200000+int32(k*7))
				recs = append(recs, r)
			}
			_ = b.Add(message(t, "met", dev, ChannelTelemetry, recs...))
		}
		if _, err := s.Write(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DB().Exec("VACUUM ANALYZE positions"); err != nil {
		t.Fatal(err)
	}
	var total, heap int64
	if err := s.DB().QueryRow(`SELECT sum(pg_total_relation_size(c.oid)), sum(pg_relation_size(c.oid))
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'positions'::regclass`).Scan(&total, &heap); err != nil {
		t.Fatal(err)
	}
	n := int64(devices * fixes)
	t.Logf("%d positions: %d bytes in all (%.0f per row), heap %d (%.0f per row), indexes %.0f per row; postgis %v",
		n, total, float64(total)/float64(n), heap, float64(heap)/float64(n), float64(total-heap)/float64(n), s.PostGIS())
}
