package evidence

import (
	"encoding/hex"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The vector in docs/evidence.md: a third party's implementation of the
// canonical encoding and the chain must give these bytes.
func TestCanonicalVector(t *testing.T) {
	r := kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-1", Boot: 3, Seq: 1001, Time: 1700000000123, Priority: kestrel.PriorityNormal},
		Body: &kestrel.Position{Lat: 515007800, Lon: -1275900, Alt: 2150, Speed: 140, Track: 9000, Mode: kestrel.Fix3D, Sats: 9, HDOP: 90,
			EPH:   77, // no HasEPH: taken as zero
			Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP}}
	c, err := AppendCanonical(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	const wantC = "056277632d310000000300000000000003e90000018bcfe5687b019cd21eb26538d2ffec8804d10866d1008ccd232803095a0000001f"
	if got := hex.EncodeToString(c); got != wantC {
		t.Fatalf("canonical %s\nwant      %s", got, wantC)
	}
	d, _, _ := Next(Genesis, &r, nil)
	const wantD = "f9ec22af5c11a93faa4bbeb82dccd5c1775efc36d6e6c138a5e67715ced62429"
	if got := hex.EncodeToString(d[:]); got != wantD {
		t.Fatalf("digest after genesis %s, want %s", got, wantD)
	}
}
