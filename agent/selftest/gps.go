package selftest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.bug.st/serial"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/serialport"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

// gpsClock is what the GPS check learnt about the system clock: the
// smallest (local receipt time - fix time) seen, which is the clock error
// plus the receiver's output delay.
type gpsClock struct {
	ok     bool
	offset time.Duration
	fix    time.Time
}

const (
	hintGPSPort = "check the cable and gps.port; prefer the stable /dev/serial/by-id/... name: ls -l /dev/serial/by-id/"
	hintGPSBaud = "wrong baud? set gps.baud = 0 to detect it"
	hintNoFix   = "no fix yet: sky view? check the antenna and its cable; a cold start can take minutes outdoors"
)

// listenStats is what one listening window heard.
type listenStats struct {
	bytes int
	fix   *nmea.Fix
}

func checkGPS(ctx context.Context, c config.GPS, o *Options) (Result, gpsClock) {
	var gc gpsClock
	if c.Port == "" {
		return skip("not configured (gps.port is empty)"), gc
	}
	if o.inUse("gps") {
		return agentGPS(c.Port, o.Agent), gc
	}
	if r, held := heldPort("gps.port", c.Port); held {
		return r, gc
	}
	if r, bad := checkDevice("gps.port", c.Port, hintGPSPort); bad {
		return r, gc
	}

	rates := []int{c.Baud}
	if c.Baud == 0 {
		rates = serialport.DefaultBauds
	}
	// Find the rate: at a configured rate, listen for the whole window;
	// when detecting, give each rate a BaudProbe.
	var (
		p        serialport.Port
		dec      *nmea.Decoder
		rate     int
		heard    int // bytes at rates that gave no valid sentence
		firstFix *nmea.Fix
	)
	for _, b := range rates {
		window := o.BaudProbe
		if c.Baud != 0 {
			window = o.GPSListen
		}
		port, err := openSerial(ctx, c.Port, b)
		if err != nil {
			return serialFail("gps.port", c.Port, err), gc
		}
		d := nmea.NewDecoder(nmea.Options{Now: o.Now})
		ls, found := listen(ctx, port, d, window, o, func() bool { return d.Stats().Sentences >= 2 }, &gc)
		if found {
			p, dec, rate, firstFix = port, d, b, ls.fix
			break
		}
		port.Close()
		heard += ls.bytes
		if ctx.Err() != nil {
			return fail("GPS check interrupted: "+ctx.Err().Error(), ""), gc
		}
	}

	if p == nil {
		if c.Baud != 0 {
			if heard == 0 {
				return fail(fmt.Sprintf("no data from %s in %s at %d baud", c.Port, o.GPSListen, c.Baud),
					"receiver powered and wired (its TX to our RX)? right port? "+hintGPSPort), gc
			}
			// Data at the wrong speed: say which speed works, so the
			// fitter need not guess.
			detail := fmt.Sprintf("%d bytes from %s but no valid NMEA sentence at %d baud", heard, c.Port, c.Baud)
			if got := detectRate(ctx, c.Port, c.Baud, o); got > 0 {
				return fail(detail+fmt.Sprintf("; the receiver talks at %d baud", got),
					fmt.Sprintf("wrong baud: set gps.baud = %d, or 0 to detect it", got)), gc
			}
			return fail(detail, hintGPSBaud+"; if it still fails, the receiver may send binary (UBX/SiRF) only: enable NMEA output"), gc
		}
		if heard == 0 {
			return fail(fmt.Sprintf("no data from %s at any rate (%v)", c.Port, rates),
				"receiver powered and wired (its TX to our RX)? right port? "+hintGPSPort), gc
		}
		return fail(fmt.Sprintf("%d bytes from %s but no valid NMEA at any rate (%v)", heard, c.Port, rates),
			"is this the GPS port? the receiver may send binary (UBX/SiRF) only: enable NMEA output"), gc
	}
	defer p.Close()

	// The rate is right; listen on for a fix, unless one came already.
	if firstFix == nil || !gc.ok {
		ls, _ := listen(ctx, p, dec, o.GPSListen, o, func() bool { return gc.ok }, &gc)
		if firstFix == nil {
			firstFix = ls.fix
		}
	}

	st := dec.Stats()
	status := dec.Status()
	how := fmt.Sprintf("%d baud", rate)
	if c.Baud == 0 {
		how = fmt.Sprintf("%d baud (detected)", rate)
	}
	bad := st.BadChecksum + st.Framing + st.Truncated
	if firstFix == nil {
		return warn(fmt.Sprintf("NMEA flows at %s (%d sentences) but no fix yet: %d satellites in view", how, st.Sentences, status.SatsInView),
			hintNoFix), gc
	}
	detail := fmt.Sprintf("%s fix, %d satellites, HDOP %.1f; NMEA at %s, %d sentences",
		modeName(firstFix.Pos.Mode), firstFix.Pos.Sats, float64(firstFix.Pos.HDOP)/100, how, st.Sentences)
	if total := st.Sentences + bad; bad > 0 && bad*20 > total {
		return warn(fmt.Sprintf("%s; %d of %d sentences corrupt", detail, bad, total),
			"line noise: check the cable, its length and ground; a marginal baud rate does this too"), gc
	}
	return pass(detail), gc
}

// listen reads p into dec for up to d or until done() holds. It records
// the first fix and the clock offset of every fix in gc.
func listen(ctx context.Context, p io.Reader, dec *nmea.Decoder, d time.Duration, o *Options, done func() bool, gc *gpsClock) (listenStats, bool) {
	var ls listenStats
	buf := make([]byte, 512)
	deadline := time.Now().Add(d)
	// The clock is measured on a second decoder without a clock of its
	// own: dec dates cycles that lack a date (GGA alone, or a cycle whose
	// RMC was cut off) from the system clock, which would hide a clock
	// that is days out.
	undated := nmea.NewDecoder(nmea.Options{})
	take := func(f nmea.Fix) {
		if f.Pos.Mode >= kestrel.Fix2D && ls.fix == nil {
			ff := f
			ls.fix = &ff
		}
	}
	measure := func(f nmea.Fix) {
		if f.Pos.Mode < kestrel.Fix2D || f.Time == 0 {
			return
		}
		ft := time.UnixMilli(f.Time)
		off := o.Now().Sub(ft)
		if !gc.ok || off < gc.offset {
			gc.ok, gc.offset, gc.fix = true, off, ft
		}
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, err := p.Read(buf)
		if n > 0 {
			ls.bytes += n
			_, _ = dec.Write(buf[:n])
			_, _ = undated.Write(buf[:n])
			for f, ok := dec.Next(); ok; f, ok = dec.Next() {
				take(f)
			}
			for f, ok := undated.Next(); ok; f, ok = undated.Next() {
				measure(f)
			}
		} else {
			if f, ok := dec.Release(); ok {
				take(f)
			}
			// The line went quiet after a cycle: its fix is fresh, so
			// its time is the best measure of the clock.
			if f, ok := undated.Release(); ok {
				measure(f)
			}
		}
		if done() {
			return ls, true
		}
		if err != nil {
			break
		}
	}
	return ls, done()
}

// detectRate finds the rate a receiver really talks at, skipping the
// configured one that already failed.
func detectRate(ctx context.Context, path string, not int, o *Options) int {
	for _, b := range serialport.DefaultBauds {
		if b == not {
			continue
		}
		p, err := openSerial(ctx, path, b)
		if err != nil {
			return 0
		}
		d := nmea.NewDecoder(nmea.Options{})
		var gc gpsClock
		_, ok := listen(ctx, p, d, o.BaudProbe, o, func() bool { return d.Stats().Sentences >= 2 }, &gc)
		p.Close()
		if ok {
			return b
		}
	}
	return 0
}

// openSerial opens path at baud with short read timeouts, dropping bytes
// that arrived before (at whatever rate the line was set to).
func openSerial(ctx context.Context, path string, baud int) (serialport.Port, error) {
	p, err := serialport.Open(ctx, serialport.Config{Path: path, Baud: baud, ReadTimeout: 50 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	if r, ok := p.(interface{ ResetInputBuffer() error }); ok {
		_ = r.ResetInputBuffer()
	}
	return p, nil
}

// checkDevice checks that a serial device path exists and is a device,
// telling a dangling by-id link from a missing node.
func checkDevice(key, path, hint string) (Result, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, lerr := os.Lstat(path); lerr == nil {
				return fail(fmt.Sprintf("%s %s: link to a device that is gone", key, path), "unplugged? "+hint), true
			}
			return fail(fmt.Sprintf("%s %s: no such device", key, path), hint), true
		}
		if errors.Is(err, os.ErrPermission) {
			return fail(fmt.Sprintf("%s %s: permission denied", key, path), "run as root or add the kestrel user to the dialout group"), true
		}
		return fail(fmt.Sprintf("%s %s: %v", key, path, err), hint), true
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fail(fmt.Sprintf("%s %s: not a serial device (%s)", key, path, fi.Mode().Type()), hint), true
	}
	return Result{}, false
}

// serialFail explains a failed open.
func serialFail(key, path string, err error) Result {
	if errors.Is(err, serialport.ErrInUse) {
		return skip(fmt.Sprintf("%s %s: %v; not opened, so its settings are left alone", key, path, err))
	}
	var pe *serial.PortError
	if errors.As(err, &pe) {
		switch pe.Code() {
		case serial.PermissionDenied:
			return fail(fmt.Sprintf("%s %s: permission denied", key, path), "run as root or add the kestrel user to the dialout group")
		case serial.PortBusy:
			return fail(fmt.Sprintf("%s %s: in use by another program", key, path),
				"stop whatever holds it (the agent: systemctl stop kestrel; gpsd; ModemManager): fuser -v "+path)
		case serial.InvalidSpeed:
			return fail(fmt.Sprintf("%s %s: the port refuses this baud rate", key, path), "use a standard rate")
		}
	}
	if strings.Contains(err.Error(), "inappropriate ioctl") {
		return fail(fmt.Sprintf("%s %s: not a serial port", key, path), "point it at the tty of the device")
	}
	return fail(fmt.Sprintf("%s %s: %v", key, path, err), "check the cable and the port name")
}

func modeName(m kestrel.FixMode) string {
	switch m {
	case kestrel.Fix3D:
		return "3D"
	case kestrel.Fix2D:
		return "2D"
	}
	return "no"
}
