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
