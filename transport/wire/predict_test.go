package wire

import "testing"

func TestPredictKnown(t *testing.T) {
	// Two fixes of the santa-rosa run: 38.434049,-122.715151 to
	// 38.43402,-122.715151 one second apart: due south, 3.225 m/s.
	tr, mag, ok := bearingDistance(384340490, -1227151510, 384340200, -1227151510)
	if !ok || tr != 18000 {
		t.Fatalf("track %d ok %v, want 18000", tr, ok)
	}
	if s := predictSpeed(mag, 1000); s < 322 || s > 323 {
		t.Fatalf("speed %d cm/s, want 322..323", s)
	}
	// East along the equator, 1e-3 degree in 10 s: 11.1195 m/s.
	tr, mag, _ = bearingDistance(0, 0, 0, 10000)
	if s := predictSpeed(mag, 10000); tr != 9000 || s < 1111 || s > 1112 {
		t.Fatalf("track %d speed %d", tr, s)
	}
	// North-west at 60N.
	tr, _, _ = bearingDistance(600000000, 0, 600010000, -20000)
	if tr < 31499 || tr > 31501 {
		t.Fatalf("track %d, want about 31500", tr)
	}
}

func TestPredictRoundsWestward(t *testing.T) {
	// Bearings west of north come out of CORDIC as negative angles; they
	// must round like the eastward ones: 280.004 degrees is 28000.
	for _, c := range []struct {
		dlat, dlon int64
		want       int64
	}{
		{1000000, -5671282, 28000}, // atan2(-5671282, 1000000) = -80.0000 deg
		{1000000, 5671282, 8000},
		{-1000000, -1, 18000},
		{1000000, -1, 0},
	} {
		tr, _, ok := bearingDistance(0, 0, c.dlat, c.dlon)
		if !ok || tr != c.want {
			t.Errorf("step %d,%d: track %d, want %d", c.dlat, c.dlon, tr, c.want)
		}
	}
}
