package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// decodeMaxLine bounds one `TOPIC HEX` line: a batch of wire.MaxRecords
// positions is far smaller, so a longer line is garbage.
const decodeMaxLine = 16 << 20

// decodeDataChannels are the channels whose payloads are wire batches.
var decodeDataChannels = map[string]bool{"telemetry": true, "events": true}

func runDecode(args []string, s stdio) error {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	hexIn := fs.Bool("hex", false, "input is TOPIC HEXPAYLOAD lines, as mosquitto_sub -F '%t %x' prints")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: kestrelctl decode [--hex] [FILE|-]

Decodes Kestrel wire payloads (transport/wire batches) to JSON lines, one
record per line: kind, device, boot, seq, time, the kind's fields, priority.
Positions carry the fields of "kestrelctl nmea decode".

Without --hex the input is raw payloads: one payload, or several written
back to back (each batch is one self-delimiting msgpack array).
With --hex each line is "TOPIC HEXPAYLOAD" (or just HEXPAYLOAD); lines on
topics other than .../telemetry and .../events (state, config, replies) are
skipped, and blank lines and lines starting with # are ignored. A bad line
is reported on stderr with its number and the rest are still decoded; the
exit status is then 1.

  mosquitto_sub -t 'kestrel/v1/demo/+/telemetry' -F '%%t %%x' | kestrelctl decode --hex

flags:
`)
		fs.PrintDefaults()
	}
	pos, help, err := decodeParseInterleaved(fs, args)
	if help || err != nil {
		return err
	}
	in, err := openInput(pos, s)
	if err != nil {
		return err
	}
	defer in.Close()
	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	if *hexIn {
		err = decodeHexLines(in, out, s.stderr)
	} else {
		err = decodeRaw(in, out)
	}
	if ferr := out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	return err
}

// decodeParseInterleaved parses flags that may come before or after the
// positional arguments, and returns the positional ones; help and err are
// subcmd.Parse's.
func decodeParseInterleaved(fs *flag.FlagSet, args []string) (pos []string, help bool, err error) {
	for {
		if help, err := subcmd.Parse(fs, args); help || err != nil {
			return nil, help, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, false, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func decodeRaw(in io.Reader, out *bufio.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	var line []byte
	for n, off := 1, 0; len(data) > 0; n++ {
		payload, rest, err := wire.SplitBatch(data)
		if err == nil {
			line, err = decodeAppendBatch(line[:0], "", payload)
		}
		if err != nil {
			// A raw stream has no framing to resynchronise on: stop here.
			return fmt.Errorf("payload %d at byte %d: %w", n, off, err)
		}
		if _, err := out.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		off += len(payload)
		data = rest
	}
	return nil
}

// decodeAppendBatch appends the JSON lines of one batch payload (version 1
// or 2) to dst. A version 2 payload carries no device: it comes from the
// topic when there is one, else the JSON's device is "".
func decodeAppendBatch(dst []byte, topic string, payload []byte) ([]byte, error) {
	recs, err := wire.DecodeBatchTopic(topic, payload)
	if err != nil {
		return dst, err
	}
	for i := range recs {
		dst = wire.AppendJSON(dst, &recs[i])
		dst = append(dst, '\n')
	}
	return dst, nil
}

func decodeHexLines(in io.Reader, out *bufio.Writer, stderr io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), decodeMaxLine)
	var (
		line    []byte
		payload []byte
		failed  int
		skipped int
		n       int
	)
	for sc.Scan() {
		n++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		topic, hexText := "", text
		if i := bytes.LastIndexAny(text, " \t"); i >= 0 {
			topic, hexText = string(bytes.TrimSpace(text[:i])), text[i+1:]
		}
		if topic != "" && !decodeIsData(topic) {
			skipped++
			continue
		}
		var err error
		payload = payload[:0]
		if payload, err = hex.AppendDecode(payload, hexText); err != nil {
			err = fmt.Errorf("bad hex: %w", err)
		} else {
			line, err = decodeAppendBatch(line[:0], topic, payload)
		}
		if err != nil {
			failed++
			if topic != "" {
				fmt.Fprintf(stderr, "kestrelctl decode: line %d (%s): %v\n", n, topic, err)
			} else {
				fmt.Fprintf(stderr, "kestrelctl decode: line %d: %v\n", n, err)
			}
			continue
		}
		if _, err := out.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read input after line %d: %w", n, err)
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "kestrelctl decode: skipped %d messages on non-data topics\n", skipped)
	}
	if failed > 0 {
		return fmt.Errorf("%d of the input lines could not be decoded", failed)
	}
	return nil
}

// decodeIsData reports whether a topic carries wire batches: a Kestrel
// telemetry or events topic, or a topic outside the Kestrel tree (a
// bridge may have renamed it; the payload is tried as a batch).
func decodeIsData(topic string) bool {
	rest, ok := strings.CutPrefix(topic, "kestrel/v1/")
	if !ok {
		return true
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 3 {
		return false
	}
	return decodeDataChannels[parts[2]]
}
