package agent

import (
	"context"
	"io"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/serialport"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
	"github.com/kestrel-edge/kestrel/drivers/radio"
)

// buildSources turns the config into the sources to run. It opens nothing:
// each source opens its port or files when it runs, and the agent restarts
// it with backoff when it fails.
func (a *Agent) buildSources(cfg config.Config) []sourceSpec {
	var specs []sourceSpec
	if cfg.GPS.Port != "" {
		specs = append(specs, sourceSpec{name: "gps", section: "gps", src: a.gpsSource(cfg.GPS)})
	}
	if cfg.Radio.Port != "" {
		if src := a.radioSource(cfg.Radio); src != nil {
			specs = append(specs, sourceSpec{name: "radio", section: "radio", src: src})
		}
	}
	specs = append(specs, a.sensorSources(cfg)...)
	specs = append(specs, a.hookSources(cfg)...)
	return specs
}

// gpsSource keeps the GPS port open across unplug and replug and runs the
// NMEA driver on it.
func (a *Agent) gpsSource(c config.GPS) Source {
	log := a.log.With("part", "gps")
	return SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
		pc := serialport.Config{Path: c.Port, Baud: c.Baud}
		return serialport.Supervise(ctx, pc, log, func(ctx context.Context, p io.ReadWriter) error {
			d := nmea.New(p, nmea.Options{Now: a.opts.Now, WatchdogInterval: c.Watchdog.Duration})
			return d.Run(ctx, emit)
		})
	})
}

// radioSource runs the TETRA or LTE driver on the radio's AT port. A radio
// says nothing until asked, so its rate cannot be heard passively like a
// GPS's: radio.baud 0 means the usual PEI and modem rate, 115200.
func (a *Agent) radioSource(c config.Radio) Source {
	log := a.log.With("part", "radio")
	profile, err := radio.ParseProfile(c.Profile)
	if err != nil {
		log.Error("radio disabled", "err", err)
		return nil
	}
	return SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
		pc := serialport.Config{Path: c.Port, Baud: c.Baud}
		if pc.Baud == 0 {
			pc.Baud = 115200
		}
		return serialport.Supervise(ctx, pc, log, func(ctx context.Context, p io.ReadWriter) error {
			r := radio.New(p, profile, radio.Options{
				Logger:    log,
				Poll:      c.Poll.Duration,
				Heartbeat: c.Heartbeat.Duration,
				Now:       a.opts.Now,
			})
			return r.Run(ctx, emit)
		})
	})
}

// sensorSources: the IIO accelerometer, battery, thermal zones and GPIO
// vehicle inputs.
func (a *Agent) sensorSources(cfg config.Config) []sourceSpec { return nil }

// hookSources: eBPF link usage and exec audit, and the firmware socket.
func (a *Agent) hookSources(cfg config.Config) []sourceSpec { return nil }
