package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/power"
	"github.com/kestrel-edge/kestrel/agent/serialport"
	"github.com/kestrel-edge/kestrel/drivers/battery"
	"github.com/kestrel-edge/kestrel/drivers/gpio"
	"github.com/kestrel-edge/kestrel/drivers/iio"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
	"github.com/kestrel-edge/kestrel/drivers/radio"
	"github.com/kestrel-edge/kestrel/drivers/thermal"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/firmware-hooks/execaudit"
	"github.com/kestrel-edge/kestrel/firmware-hooks/linkstats"
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
			err := d.Run(ctx, emit)
			if ctx.Err() == nil {
				// The receiver is gone (unplugged, cable knocked
				// loose): the driver's watchdog stopped with it, so
				// say so here, at once.
				now := a.opts.Now().UnixMilli()
				st := d.Decoder().Status()
				st.State = kestrel.GPSNoData
				emit(kestrel.Record{Envelope: kestrel.Envelope{Time: now}, Body: &st})
				emit(kestrel.Record{Envelope: kestrel.Envelope{Time: now}, Body: &kestrel.Event{
					Type: kestrel.EventGPSState, Source: "gps", Name: "nmea", Value: int64(kestrel.GPSNoData),
					Text: "no_data: port lost: " + err.Error()}})
			}
			return err
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
				Logger: log,
				// The power policy slows the poll with the ignition off.
				Poll:      power.RadioPoll(a.power.Config(), a.power.Status().State, c.Poll.Duration),
				Heartbeat: c.Heartbeat.Duration,
				Now:       a.opts.Now,
			})
			return r.Run(ctx, emit)
		})
	})
}

// sensorSources: the IIO accelerometer, battery, thermal zones and GPIO
// vehicle inputs.
func (a *Agent) sensorSources(cfg config.Config) []sourceSpec {
	sc := cfg.Sensors
	log := a.log.With("part", "sensors")
	var specs []sourceSpec
	if sc.AccelRate > 0 {
		src := iio.New(sc.SysfsRoot, iio.Options{Rate: sc.AccelRate, DevRoot: sc.DevRoot, Logger: log, Now: a.opts.Now})
		// Every sample also goes through the motion detector (agent/motion),
		// which raises harsh-driving events and the crash emergency.
		withMotion := SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
			return src.Run(ctx, func(r kestrel.Record) {
				emit(r)
				if s, ok := r.Body.(*kestrel.Accel); ok {
					a.motion.Observe(r.Time, s, emit)
					if a.motion.Moving() {
						a.power.Wake("movement")
					}
				}
			})
		})
		specs = append(specs, sourceSpec{name: "accel", section: "sensors", src: absentOK(withMotion, iio.ErrNoDevice, log)})
	}
	if sc.BatteryPeriod.Duration > 0 {
		src := battery.New(sc.SysfsRoot, battery.Options{Period: sc.BatteryPeriod.Duration, Logger: log, Now: a.opts.Now})
		specs = append(specs, sourceSpec{name: "battery", section: "sensors", src: absentOK(src, battery.ErrNoBattery, log)})
	}
	if sc.ThermalPeriod.Duration > 0 {
		src := thermal.New(sc.SysfsRoot, thermal.Options{Period: sc.ThermalPeriod.Duration, Logger: log, Now: a.opts.Now})
		specs = append(specs, sourceSpec{name: "thermal", section: "sensors", src: absentOK(src, thermal.ErrNoZone, log)})
	}
	if len(cfg.GPIO.Lines) > 0 {
		lines := make([]gpio.LineConfig, len(cfg.GPIO.Lines))
		raise := map[string]kestrel.Priority{}
		for i, l := range cfg.GPIO.Lines {
			lines[i] = gpio.LineConfig{Name: l.Name, Chip: l.Chip, Offset: uint32(l.Offset), ActiveLow: l.ActiveLow}
			if p, err := kestrel.ParsePriority(l.Priority); err == nil {
				raise[l.Name] = p
			}
		}
		in := gpio.New(cfg.GPIO.DevRoot, lines, gpio.Options{Debounce: cfg.GPIO.Debounce.Duration, Logger: log, Now: a.opts.Now, Fake: a.opts.GPIOFake})
		specs = append(specs, sourceSpec{name: "gpio", section: "gpio", src: SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
			// gpio.lines[].priority raises an input's events: blue
			// lights may matter more to a control room than a door.
			return in.Run(ctx, func(r kestrel.Record) {
				if ev, ok := r.Body.(*kestrel.Event); ok {
					r.Priority = max(r.Priority, raise[ev.Name])
				}
				emit(r)
			})
		})})
	}
	return specs
}

// absentOK runs src, but when the hardware it reads is simply not fitted
// (a vehicle gateway without a battery) it says so once and idles instead
// of failing and being restarted for ever.
func absentOK(src Source, absent error, log *slog.Logger) Source {
	return SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
		err := src.Run(ctx, emit)
		if errors.Is(err, absent) {
			log.Info("sensor not fitted; not reading it", "reason", err)
			<-ctx.Done()
			return ctx.Err()
		}
		return err
	})
}

// hookSources: link usage (eBPF, else /proc/net/dev), the eBPF exec audit,
// and the firmware event socket. Each probes the kernel when it starts and
// records in the state message whether it is available and why not.
func (a *Agent) hookSources(cfg config.Config) []sourceSpec {
	h := cfg.Hooks
	log := a.log.With("part", "hooks")
	var specs []sourceSpec
	if h.LinkPeriod.Duration > 0 {
		specs = append(specs, sourceSpec{name: "link", section: "hooks", src: SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
			src := linkstats.New(linkstats.Options{Period: h.LinkPeriod.Duration, ProcfsOnly: !h.EBPF, Logger: log})
			if err := src.Reason(); err != nil {
				a.latest.setCapability("ebpf_link", "unavailable: "+err.Error())
			} else {
				a.latest.setCapability("ebpf_link", "ok")
			}
			a.latest.setCapability("link_counters", src.Mode())
			return src.Run(ctx, emit)
		})})
	}
	if h.EBPF {
		specs = append(specs, sourceSpec{name: "exec", section: "hooks", src: SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
			allow := h.ExecAllow
			if len(allow) == 0 {
				allow = execaudit.DefaultAllow
			}
			src, err := execaudit.New(execaudit.Options{Allow: allow, Logger: log})
			if err != nil {
				a.latest.setCapability("ebpf_exec", "unavailable: "+err.Error())
				if errors.Is(err, execaudit.ErrUnavailable) {
					// The kernel said no; retrying will not change
					// its mind. Wait for shutdown or a reload.
					log.Warn("exec audit unavailable; running without it", "err", err)
					<-ctx.Done()
					return ctx.Err()
				}
				return err
			}
			defer src.Close()
			a.latest.setCapability("ebpf_exec", "ok")
			return src.Run(ctx, emit)
		})})
	} else {
		a.latest.setCapability("ebpf_exec", "disabled by configuration")
	}
	if h.Socket != "" {
		specs = append(specs, sourceSpec{name: "firmware", section: "hooks", src: SourceFunc(func(ctx context.Context, emit func(kestrel.Record)) error {
			srv, err := eventsock.Listen(h.Socket, eventsock.Options{
				AllowUIDs: h.AllowUIDs, AllowGIDs: h.AllowGIDs, Logger: log, Now: a.opts.Now,
				RatePerSec: h.Rate, Burst: h.Burst, MaxConns: h.MaxConns, IdleTimeout: h.IdleTimeout.Duration,
			})
			if err != nil {
				a.latest.setCapability("firmware_socket", "unavailable: "+err.Error())
				return err
			}
			defer srv.Close()
			a.latest.setCapability("firmware_socket", "ok")
			return srv.Run(ctx, emit)
		})})
	}
	return specs
}
