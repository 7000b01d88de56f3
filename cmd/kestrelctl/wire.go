package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"io"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

func runWire(args []string, s stdio) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(s.stderr, "usage: kestrelctl wire encode [--batch N] [--jsonl] [--fleet F] [--device D] [FILE|-]\n")
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand (encode)", errUsage)
		}
		return nil
	}
	if args[0] != "encode" {
		return fmt.Errorf("%w: unknown wire subcommand %q (want encode)", errUsage, args[0])
	}
	return runWireEncode(args[1:], s)
}

func runWireEncode(args []string, s stdio) error {
	fs := flag.NewFlagSet("wire encode", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	batch := fs.Int("batch", 30, "fixes per batch (1 to 10000)")
	jsonl := fs.Bool("jsonl", false, "input is fixes in the kestrelctl nmea decode JSON format, one per line")
	fleet := fs.String("fleet", "demo", "fleet id for the topic")
	device := fs.String("device", "kestrelctl", "device id for the topic and the records")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: kestrelctl wire encode [--batch N] [--jsonl] [--fleet F] [--device D] [FILE|-]

Prints the telemetry payloads the agent would publish for the fixes read
from FILE (or stdin), as "TOPIC HEXPAYLOAD" lines that
"kestrelctl decode --hex" reads back. Records get seq 1..n, boot 1 and
priority normal; N fixes go in each batch (the last may hold fewer).
Input is NMEA 0183 (one fix per receiver cycle, exactly the fixes that
"kestrelctl nmea decode" prints; bad sentences are skipped), or with
--jsonl one fix per line in the "kestrelctl nmea decode" format, where a
bad line is reported on stderr with its number and skipped, and the exit
status is then 1.

  kestrelctl wire encode --batch 30 --jsonl track.fixes.jsonl | kestrelctl decode --hex

flags:
`)
		fs.PrintDefaults()
	}
	pos, help, err := decodeParseInterleaved(fs, args)
	if help || err != nil {
		return err
	}
	if *batch < 1 || *batch > wire.MaxRecords {
		return fmt.Errorf("%w: --batch %d out of range 1..%d", errUsage, *batch, wire.MaxRecords)
	}
	if *device == "" || *fleet == "" {
		return fmt.Errorf("%w: --fleet and --device must not be empty", errUsage)
	}
	in, err := openInput(pos, s)
	if err != nil {
		return err
	}
	defer in.Close()
	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	w := wireBatcher{
		out:    out,
		topic:  wire.Topic(*fleet, *device, "telemetry"),
		device: *device,
		batch:  *batch,
	}
	var failed int
	if *jsonl {
		failed, err = w.encodeJSONL(in, s.stderr)
	} else {
		err = w.encodeNMEA(s, in)
	}
	if err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if failed > 0 {
		return fmt.Errorf("%d input lines could not be parsed", failed)
	}
	return nil
}

// wireBatcher gathers records into batches and prints each as a line.
type wireBatcher struct {
	out    *bufio.Writer
	topic  string
	device string
	batch  int
	enc    wire.Encoder
	recs   []kestrel.Record
	pos    []kestrel.Position
	seq    uint64
	buf    []byte
	line   []byte
}

func (w *wireBatcher) encodeJSONL(in io.Reader, stderr io.Writer) (failed int, err error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	w.pos = make([]kestrel.Position, w.batch)
	n := 0
	for sc.Scan() {
		n++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		t, p, err := wire.ParseFixJSON(text)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "kestrelctl wire encode: line %d: %v\n", n, err)
			continue
		}
		if err := w.add(t, p); err != nil {
			return failed, err
		}
	}
	if err := sc.Err(); err != nil {
		return failed, fmt.Errorf("read input after line %d: %w", n, err)
	}
	return failed, w.flush()
}

// encodeNMEA decodes NMEA 0183 with the GPS driver, one fix per receiver
// cycle exactly as `kestrelctl nmea decode` prints them.
func (w *wireBatcher) encodeNMEA(s stdio, in io.Reader) error {
	w.pos = make([]kestrel.Position, w.batch)
	r := in
	if s.ctx != nil {
		r = ctxReader{s.ctx, in}
	}
	if _, err := nmea.Decode(r, nmea.Options{}, func(f nmea.Fix) error { return w.add(f.Time, f.Pos) }); err != nil {
		return fmt.Errorf("decode NMEA: %w", err)
	}
	return w.flush()
}

func (w *wireBatcher) add(t int64, p kestrel.Position) error {
	w.seq++
	i := len(w.recs)
	w.pos[i] = p
	w.recs = append(w.recs, kestrel.Record{
		Envelope: kestrel.Envelope{Device: w.device, Boot: 1, Seq: w.seq, Time: t, Priority: kestrel.PriorityNormal},
		Body:     &w.pos[i],
	})
	if len(w.recs) == w.batch {
		return w.flush()
	}
	return nil
}

func (w *wireBatcher) flush() error {
	if len(w.recs) == 0 {
		return nil
	}
	var err error
	w.buf, err = w.enc.AppendBatch(w.buf[:0], w.device, w.recs)
	if err != nil {
		return fmt.Errorf("encode batch ending at seq %d: %w", w.seq, err)
	}
	w.recs = w.recs[:0]
	w.line = append(w.line[:0], w.topic...)
	w.line = append(w.line, ' ')
	w.line = hex.AppendEncode(w.line, w.buf)
	w.line = append(w.line, '\n')
	if _, err := w.out.Write(w.line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
