package linkstats

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
)

// procReader reads /proc/net/dev.
type procReader struct{ path string }

func (p *procReader) read() (map[string]counters, error) {
	b, err := os.ReadFile(p.path)
	if err != nil {
		return nil, err
	}
	return parseProcNetDev(bytes.NewReader(b))
}

func (p *procReader) Close() error { return nil }

// parseProcNetDev parses the format written by dev_seq_printf_stats in
// net/core/net-procfs.c: two header lines, then per interface
//
//	name: rx_bytes rx_packets rx_errs rx_drop rx_fifo rx_frame rx_compressed rx_multicast
//	      tx_bytes tx_packets tx_errs tx_drop tx_fifo tx_colls tx_carrier tx_compressed
//
// The name is right-aligned and may be long enough to touch the colon's
// first number on old kernels ("eth0:123"), so we split at the last colon
// of the name field rather than on white space.
func parseProcNetDev(r io.Reader) (map[string]counters, error) {
	sc := bufio.NewScanner(r)
	out := make(map[string]counters)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Bytes()
		colon := bytes.LastIndexByte(text, ':')
		if line <= 2 && colon < 0 {
			continue // the two header lines
		}
		if colon < 0 {
			return nil, fmt.Errorf("/proc/net/dev line %d: no colon", line)
		}
		name := string(bytes.TrimSpace(text[:colon]))
		if name == "" {
			return nil, fmt.Errorf("/proc/net/dev line %d: empty interface name", line)
		}
		f := bytes.Fields(text[colon+1:])
		if len(f) < 16 {
			return nil, fmt.Errorf("/proc/net/dev line %d (%s): %d fields, want 16", line, name, len(f))
		}
		var v [16]uint64
		for i := range v {
			n, err := strconv.ParseUint(string(f[i]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev line %d (%s) field %d: %w", line, name, i+1, err)
			}
			v[i] = n
		}
		out[name] = counters{
			RxBytes: v[0], RxPackets: v[1], TxBytes: v[8], TxPackets: v[9],
			Drops: v[3] + v[11],
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/proc/net/dev: %w", err)
	}
	return out, nil
}
