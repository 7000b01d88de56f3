package platform

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// TrackFormats are the formats WriteTrack writes.
var TrackFormats = []string{"jsonl", "geojson", "gpx", "csv"}

// ContentType is the media type of a track format.
func ContentType(format string) string {
	switch format {
	case "geojson":
		return "application/geo+json"
	case "gpx":
		return "application/gpx+xml"
	case "csv":
		return "text/csv; charset=utf-8"
	}
	return "application/x-ndjson"
}

// TrackWriter writes a track point by point in one format:
//   - jsonl: one "kestrelctl decode" JSON object per position;
//   - geojson: a FeatureCollection of Point features (RFC 7946), the
//     record's fields as properties;
//   - gpx: GPX 1.1, one trk/trkseg, with ele, time, fix, sat and hdop;
//   - csv: a header, then time,lat,lon,alt,speed,track,mode,sats,hdop,fleet,device,boot,seq,priority.
type TrackWriter struct {
	w      *bufio.Writer
	format string
	n      int
	buf    []byte
}

// NewTrackWriter checks the format and writes the header.
func NewTrackWriter(w io.Writer, format, device string) (*TrackWriter, error) {
	t := &TrackWriter{w: bufio.NewWriter(w), format: format}
	switch format {
	case "jsonl":
	case "geojson":
		t.w.WriteString(`{"type":"FeatureCollection","features":[`)
	case "gpx":
		t.w.WriteString(xml.Header)
		t.w.WriteString(`<gpx version="1.1" creator="kestrel" xmlns="http://www.topografix.com/GPX/1/1"><trk><name>`)
		xml.EscapeText(t.w, []byte(device))
		t.w.WriteString("</name><trkseg>\n")
	case "csv":
		t.w.WriteString("time,lat,lon,alt,speed,track,mode,sats,hdop,fleet,device,boot,seq,priority\n")
	default:
		return nil, fmt.Errorf("track format %q: want jsonl, geojson, gpx or csv", format)
	}
	return t, nil
}

func num(b []byte, v float64, ok bool, null string) []byte {
	if !ok {
		return append(b, null...)
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}

// Write adds one point.
func (t *TrackWriter) Write(p *TrackPoint) error {
	pos, ok := p.Record.Body.(*kestrel.Position)
	if !ok {
		return fmt.Errorf("track: record %d is not a position", p.Record.Seq)
	}
	b := t.buf[:0]
	ts := time.UnixMilli(p.Record.Time).UTC().Format("2006-01-02T15:04:05.000Z")
	lat, lon := float64(pos.Lat)/1e7, float64(pos.Lon)/1e7
	f := pos.Flags
	switch t.format {
	case "jsonl":
		b = wire.AppendJSON(b, &p.Record)
		b = append(b, '\n')
	case "geojson":
		if t.n > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n{\"type\":\"Feature\",\"geometry\":{\"type\":\"Point\",\"coordinates\":["...)
		b = num(b, lon, true, "")
		b = append(b, ',')
		b = num(b, lat, true, "")
		if f&kestrel.HasAlt != 0 {
			b = append(b, ',')
			b = num(b, float64(pos.Alt)/100, true, "")
		}
		b = append(b, "]},\"properties\":"...)
		b = wire.AppendJSON(b, &p.Record)
		b = append(b, '}')
	case "gpx":
		b = append(b, `<trkpt lat="`...)
		b = num(b, lat, true, "")
		b = append(b, `" lon="`...)
		b = num(b, lon, true, "")
		b = append(b, `">`...)
		if f&kestrel.HasAlt != 0 {
			b = append(b, "<ele>"...)
			b = num(b, float64(pos.Alt)/100, true, "")
			b = append(b, "</ele>"...)
		}
		b = append(b, "<time>"...)
		b = append(b, ts...)
		b = append(b, "</time>"...)
		if pos.Mode == kestrel.Fix2D {
			b = append(b, "<fix>2d</fix>"...)
		} else if pos.Mode == kestrel.Fix3D {
			b = append(b, "<fix>3d</fix>"...)
		}
		if f&kestrel.HasSats != 0 {
			b = append(b, "<sat>"...)
			b = strconv.AppendUint(b, uint64(pos.Sats), 10)
			b = append(b, "</sat>"...)
		}
		if f&kestrel.HasHDOP != 0 {
			b = append(b, "<hdop>"...)
			b = num(b, float64(pos.HDOP)/100, true, "")
			b = append(b, "</hdop>"...)
		}
		b = append(b, "</trkpt>\n"...)
	case "csv":
		b = append(b, ts...)
		b = append(b, ',')
		b = num(b, lat, true, "")
		b = append(b, ',')
		b = num(b, lon, true, "")
		b = append(b, ',')
		b = num(b, float64(pos.Alt)/100, f&kestrel.HasAlt != 0, "")
		b = append(b, ',')
		b = num(b, float64(pos.Speed)/100, f&kestrel.HasSpeed != 0, "")
		b = append(b, ',')
		b = num(b, float64(pos.Track)/100, f&kestrel.HasTrack != 0, "")
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(pos.Mode), 10)
		b = append(b, ',')
		b = num(b, float64(pos.Sats), f&kestrel.HasSats != 0, "")
		b = append(b, ',')
		b = num(b, float64(pos.HDOP)/100, f&kestrel.HasHDOP != 0, "")
		b = append(b, ',')
		b = appendCSVField(b, p.Fleet)
		b = append(b, ',')
		b = appendCSVField(b, p.Record.Device)
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(p.Record.Boot), 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, p.Record.Seq, 10)
		b = append(b, ',')
		b = append(b, p.Record.Priority.String()...)
		b = append(b, '\n')
	}
	t.buf = b
	t.n++
	_, err := t.w.Write(b)
	return err
}

// appendCSVField quotes a field as RFC 4180 does when it needs it.
func appendCSVField(b []byte, s string) []byte {
	needs := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '"', '\n', '\r':
			needs = true
		}
	}
	if !needs {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// Close writes the footer and flushes.
func (t *TrackWriter) Close() error {
	switch t.format {
	case "geojson":
		t.w.WriteString("\n]}\n")
	case "gpx":
		t.w.WriteString("</trkseg></trk></gpx>\n")
	}
	return t.w.Flush()
}

// Points is how many points were written.
func (t *TrackWriter) Points() int { return t.n }
