package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// deviceStatus is one device in kestrelctl status (--json: an element of
// "devices"). Values come from the device's retained state message (its
// birth, refreshed every minute, or its will once it is offline) and its
// retained config report; a field the device did not send is left out.
type deviceStatus struct {
	Device    string `json:"device"`
	Online    *bool  `json:"online,omitempty"` // absent: no state message
	Plaintext bool   `json:"plaintext,omitempty"`
	// LastSeen is the state message's time: for an offline device, when
	// it went offline (or its will was armed).
	LastSeen     *time.Time `json:"last_seen,omitempty"`
	AgentVersion string     `json:"agent_version,omitempty"`
	Boot         *int64     `json:"boot,omitempty"`
	Started      *time.Time `json:"started,omitempty"`
	UptimeS      *int64     `json:"uptime_s,omitempty"` // online devices only
	LastFix      *time.Time `json:"last_fix,omitempty"`
	LastFixAgeS  *int64     `json:"last_fix_age_s,omitempty"`
	Battery      *int64     `json:"battery,omitempty"`
	BatteryState string     `json:"battery_status,omitempty"`
	SpoolRecords *int64     `json:"spool_records,omitempty"`
	SpoolBytes   *int64     `json:"spool_bytes,omitempty"`
	SpoolHealth  string     `json:"spool_health,omitempty"`
	RadioProfile string     `json:"radio_profile,omitempty"`
	RadioReg     *int64     `json:"radio_registered,omitempty"`
	RadioRSSI    *int64     `json:"radio_rssi,omitempty"`
	GPS          string     `json:"gps,omitempty"`
	Groups       []string   `json:"groups,omitempty"`
	// ConfigRunning is the config version in force; ConfigLast the last
	// config attempt when it did not apply.
	ConfigRunning *uint64           `json:"config_running,omitempty"`
	ConfigLast    *configAttempt    `json:"config_last,omitempty"`
	Unreadable    string            `json:"unreadable,omitempty"`
	State         map[string]any    `json:"state,omitempty"` // the whole state message
	Layers        map[string]uint64 `json:"layers,omitempty"`
	// LastKnownFrom is "platform" when --db filled the fields that an
	// offline device's will does not carry (battery, spool, radio, last
	// fix) from the platform's record of its last state message.
	LastKnownFrom string `json:"last_known_from,omitempty"`
	// KeyStatus (--db) is the device key against its enrolment: enrolled,
	// unenrolled, or CHANGED (flagged, docs/evidence.md).
	KeyStatus string `json:"key_status,omitempty"`
}

type configAttempt struct {
	Version uint64              `json:"version"`
	Status  string              `json:"status"`
	Errors  []fleet.ReportError `json:"errors,omitempty"`
}

// statusReport is kestrelctl status --json.
type statusReport struct {
	Fleet   string         `json:"fleet"`
	Time    time.Time      `json:"time"`
	Devices []deviceStatus `json:"devices"`
	Total   int            `json:"total"`
	Online  int            `json:"online"`
}

func runStatus(args []string, s stdio) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	device := fs.String("device", "", "only this device")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for retained messages")
	asJSON := addJSONFlag(fs)
	db := fs.String("db", "", "platform database (postgres://... or sqlite:FILE): last-known battery, spool, radio and fix of offline devices")
	op := addOperatorFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl status --broker URL --fleet F [--device D] [--db URL] [--json]\n\n"+
			"The fleet from the retained state and config/reported messages: online,\n"+
			"last seen, agent version, uptime, last fix and its age, battery, spool\n"+
			"depth, radio, GPS and config version. An offline device shows what its\n"+
			"will and last report keep (agent version, boot, when it went offline,\n"+
			"config); the rest is \"-\", unless --db names the platform's database:\n"+
			"then it is filled from the last state message the platform stored,\n"+
			"marked \"(last known)\".\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if err := bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ctx := fleetCtx(s)
	prefix := fleet.Prefix(bf.Fleet)
	dev := "+"
	if *device != "" {
		dev = *device
	}
	cl, col, err := fleetSubscribe(ctx, bf, "status", prefix+dev+"/state", prefix+dev+"/config/reported")
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 300*time.Millisecond, *wait)
	view := newFleetView(bf.Fleet)
	view.addAll(col.take())
	for d, why := range view.unreadable {
		fmt.Fprintf(s.stderr, "%s: unreadable state: %s\n", d, why)
	}
	for d, why := range view.untrusted {
		fmt.Fprintf(s.stderr, "%s: config report NOT BELIEVED (%s); its config column is from the state message\n", d, why)
	}
	names := view.devices()
	for d := range view.unreadable {
		if view.states[d] == nil && view.reports[d] == nil {
			names = append(names, d)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no retained state under %s", prefix)
	}
	now := time.Now()
	rep := statusReport{Fleet: bf.Fleet, Time: now.UTC(), Devices: []deviceStatus{}}
	for _, d := range names {
		ds := buildStatus(view, d, now)
		if ds.Online != nil && *ds.Online {
			rep.Online++
		}
		rep.Devices = append(rep.Devices, ds)
	}
	if *db != "" {
		if err := fillLastKnown(s, *db, op, bf.Fleet, rep.Devices); err != nil {
			return err
		}
	}
	rep.Total = len(rep.Devices)
	if *asJSON {
		return writeJSON(s.stdout, rep)
	}
	return printStatus(s.stdout, rep, now)
}

func buildStatus(v *fleetView, d string, now time.Time) deviceStatus {
	ds := deviceStatus{Device: d, Unreadable: v.unreadable[d], Groups: v.groupsOf(d)}
	st := v.states[d]
	if st != nil {
		ds.State = st
		if b, ok := st["online"].(bool); ok {
			ds.Online = &b
		}
		ds.Plaintext, _ = st["plaintext"].(bool)
		ds.LastSeen = msTime(st["time"])
		ds.AgentVersion, _ = st["version"].(string)
		ds.Boot = intField(st, "boot")
		ds.Started = msTime(st["started_ms"])
		if ds.Started != nil && ds.Online != nil && *ds.Online {
			up := int64(now.Sub(*ds.Started).Seconds())
			ds.UptimeS = &up
		}
		if ds.LastFix = msTime(st["last_fix_ms"]); ds.LastFix != nil {
			age := int64(now.Sub(*ds.LastFix).Seconds())
			ds.LastFixAgeS = &age
		}
		ds.Battery = intField(st, "battery")
		ds.BatteryState, _ = st["battery_status"].(string)
		ds.SpoolRecords, ds.SpoolBytes = intField(st, "spool_records"), intField(st, "spool_bytes")
		ds.SpoolHealth, _ = st["spool_health"].(string)
		ds.RadioProfile, _ = st["radio_profile"].(string)
		ds.RadioReg, ds.RadioRSSI = intField(st, "radio_registered"), intField(st, "radio_rssi")
		ds.GPS, _ = st["gps"].(string)
		if cv := intField(st, "config_version"); cv != nil {
			u := uint64(*cv)
			ds.ConfigRunning = &u
		}
	}
	if r := v.reports[d]; r != nil {
		// The report is newer than a state message published before the
		// last config change.
		run := r.Running
		ds.ConfigRunning, ds.Layers = &run, r.Layers
		if r.Status != fleet.StatusApplied {
			ds.ConfigLast = &configAttempt{Version: r.Version, Status: r.Status, Errors: r.Errors}
		}
	}
	return ds
}

func msTime(v any) *time.Time {
	ms, ok := asInt(v)
	if !ok || ms <= 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func intField(st map[string]any, k string) *int64 {
	v, ok := asInt(st[k])
	if !ok {
		return nil
	}
	return &v
}

func printStatus(w io.Writer, rep statusReport, now time.Time) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tONLINE\tLAST SEEN\tBATTERY\tSPOOL\tRADIO\tGPS\tCONFIG\tAGENT\tUPTIME\tLAST FIX")
	for _, ds := range rep.Devices {
		on := "?"
		if ds.Online != nil {
			on = map[bool]string{true: "yes", false: "no"}[*ds.Online]
			if ds.Plaintext {
				on += " (plaintext)"
			}
			if ds.LastKnownFrom != "" {
				on += " (last known)"
			}
		}
		seen := "-"
		if ds.LastSeen != nil {
			seen = ago(now.Sub(*ds.LastSeen))
		}
		batt := "-"
		if ds.Battery != nil {
			batt = fmt.Sprintf("%d%%", *ds.Battery)
			if ds.BatteryState != "" {
				batt += " " + strings.ToLower(ds.BatteryState)
			}
		}
		spool := "-"
		if ds.SpoolRecords != nil {
			spool = fmt.Sprint(*ds.SpoolRecords)
			if ds.SpoolBytes != nil {
				spool += " (" + humanBytes(*ds.SpoolBytes) + ")"
			}
			if ds.SpoolHealth != "" && ds.SpoolHealth != "ok" {
				spool += " " + ds.SpoolHealth
			}
		}
		radio := "-"
		if ds.RadioProfile != "" {
			radio = ds.RadioProfile
			if ds.RadioReg != nil {
				radio += " " + regName(*ds.RadioReg)
			}
			if ds.RadioRSSI != nil && *ds.RadioRSSI != 0 {
				radio += fmt.Sprintf(" %d dBm", *ds.RadioRSSI)
			}
		}
		cfg := "-"
		if ds.ConfigRunning != nil {
			cfg = fmt.Sprint(*ds.ConfigRunning)
		}
		if a := ds.ConfigLast; a != nil {
			cfg += fmt.Sprintf(" (v%d %s)", a.Version, strings.ReplaceAll(a.Status, "_", " "))
		}
		uptime := "-"
		if ds.UptimeS != nil {
			uptime = strings.TrimSuffix(ago(time.Duration(*ds.UptimeS)*time.Second), " ago")
		}
		fix := "-"
		if ds.LastFix != nil {
			fix = ago(now.Sub(*ds.LastFix))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ds.Device, on, seen, batt, spool, radio,
			dash(ds.GPS), cfg, dash(ds.AgentVersion), uptime, fix)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ds := range rep.Devices {
		if strings.HasPrefix(ds.KeyStatus, "CHANGED") {
			fmt.Fprintf(w, "%s: DEVICE KEY %s\n", ds.Device, ds.KeyStatus)
		}
	}
	fmt.Fprintf(w, "%d devices, %d online\n", rep.Total, rep.Online)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fillLastKnown completes offline devices from the platform's devices
// table: the will that replaced their retained state message carries only
// the core fields, but the platform keeps what the last birth said.
func fillLastKnown(s stdio, url string, op *operatorFlags, fleetID string, devs []deviceStatus) error {
	st, err := openPlatformDB(s, url)
	if err != nil {
		return err
	}
	defer st.Close()
	k, err := startConsultation(s, st, op, Consultation{Command: "status --db", Fleet: fleetID, Detail: "last-known state of offline devices"})
	if err != nil {
		return err
	}
	rows, err := st.Devices(s.ctx, fleetID)
	if err := k.finish(err, fmt.Sprintf("%d devices", len(rows))); err != nil {
		return fmt.Errorf("--db: %w", err)
	}
	byID := make(map[string]int, len(rows))
	for i, r := range rows {
		byID[r.Device] = i
	}
	if err := fillKeyStatus(s, st, fleetID, devs); err != nil {
		return fmt.Errorf("--db: %w", err)
	}
	for i := range devs {
		ds := &devs[i]
		j, ok := byID[ds.Device]
		if !ok || (ds.Online != nil && *ds.Online) {
			continue
		}
		r := rows[j]
		filled := false
		fill := func(dst **int64, v *int64) {
			if *dst == nil && v != nil {
				*dst, filled = v, true
			}
		}
		fill(&ds.Battery, r.BatteryPercent)
		fill(&ds.SpoolRecords, r.SpoolRecords)
		fill(&ds.SpoolBytes, r.SpoolBytes)
		fill(&ds.RadioReg, r.RadioRegistered)
		fill(&ds.RadioRSSI, r.RadioRSSI)
		if ds.BatteryState == "" && r.BatteryStatus != nil {
			ds.BatteryState, filled = *r.BatteryStatus, true
		}
		if ds.RadioProfile == "" && r.RadioProfile != nil {
			ds.RadioProfile, filled = *r.RadioProfile, true
		}
		if ds.LastFix == nil && r.LastFixTime != nil {
			t := r.LastFixTime.UTC()
			age := int64(time.Since(t).Seconds())
			ds.LastFix, ds.LastFixAgeS, filled = &t, &age, true
		}
		if filled {
			ds.LastKnownFrom = "platform"
		}
	}
	return nil
}
