package selftest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/drivers/at"
	"github.com/kestrel-edge/kestrel/drivers/radio"
)

const hintRadioPort = "check the cable and radio.port (the radio's AT/PEI port, not its data port); prefer /dev/serial/by-id/...: ls -l /dev/serial/by-id/"

// checkRadio asks the radio "AT", then reads (never sets) its registration
// and signal.
func checkRadio(ctx context.Context, c config.Radio, o *Options) Result {
	if c.Port == "" {
		return skip("not configured (radio.port is empty)")
	}
	if o.inUse("radio") {
		return agentRadio(c.Port, o.Agent)
	}
	if r, held := heldPort("radio.port", c.Port); held {
		return r
	}
	profile, err := radio.ParseProfile(c.Profile)
	if err != nil {
		return fail(fmt.Sprintf("radio.profile: %v", err), "set radio.profile = \"tetra\" or \"lte\"")
	}
	if r, bad := checkDevice("radio.port", c.Port, hintRadioPort); bad {
		return r
	}
	baud := c.Baud
	if baud == 0 {
		baud = 115200 // as the agent does
	}
	p, err := openSerial(ctx, c.Port, baud)
	if err != nil {
		return serialFail("radio.port", c.Port, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	e := at.NewEngine(p, at.Options{Logger: o.Logger, URCPrefixes: []string{"+CREG", "+CEREG", "+CTSDSR", "+CTXD", "+CTICN", "RING"}})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = e.Run(ctx) // ends on cancel: the port has a read timeout
	}()
	defer func() {
		cancel()
		p.Close() // also releases a read in progress
		wg.Wait()
	}()

	// Two tries: the first AT after opening may meet a half line left
	// over in the radio's buffer.
	var answered bool
	for i := 0; i < 2 && !answered; i++ {
		_, err = e.Command(ctx, "AT", o.Timeout/2)
		answered = err == nil
	}
	if !answered {
		if errors.Is(err, at.ErrTimeout) {
			return fail(fmt.Sprintf("no answer to AT on %s at %d baud", c.Port, baud),
				"radio switched on? right port and radio.baud? "+hintRadioPort)
		}
		return fail(fmt.Sprintf("AT on %s at %d baud: %v", c.Port, baud, err), hintRadioPort)
	}

	regCmd := "AT+CEREG?"
	if profile == kestrel.ProfileTETRA {
		regCmd = "AT+CREG?"
	}
	stat, regErr := regStat(ctx, e, regCmd, o.Timeout)
	csqCmd := "AT+CSQ"
	if profile == kestrel.ProfileTETRA {
		csqCmd = "AT+CSQ?" // the PEI's form, as the driver polls it
	}
	rssi, sigErr := csq(ctx, e, csqCmd, o.Timeout)

	var parts []string
	parts = append(parts, profile.String()+" radio answers")
	switch {
	case sigErr != nil:
		parts = append(parts, "signal unknown ("+sigErr.Error()+")")
	case rssi == 99:
		parts = append(parts, "no signal (+CSQ 99)")
	default:
		parts = append(parts, fmt.Sprintf("signal %d dBm", -113+2*rssi))
	}
	if profile == kestrel.ProfileLTE {
		if op := operator(ctx, e, o.Timeout); op != "" {
			parts = append(parts, "operator "+op)
		}
	} else if m := tetraMode(ctx, e, o.Timeout); m != "" {
		parts = append(parts, m)
	}

	switch {
	case regErr != nil:
		parts = append(parts, "registration unknown ("+regErr.Error()+")")
		return warn(strings.Join(parts, ", "), "check radio.profile matches the radio (tetra or lte)")
	case stat < 0 || stat > 255 || !kestrel.RegState(stat).InService():
		parts = append(parts, "not registered: "+regName(stat))
		hint := "antenna connected? coverage here? SIM fitted and active (LTE), or radio provisioned on the network (TETRA)?"
		if stat == 3 {
			hint = "the network denied registration: check the SIM or subscription (LTE), or the radio's provisioning (TETRA)"
		}
		return warn(strings.Join(parts, ", "), hint)
	}
	parts = append(parts, regName(stat))
	if sigErr == nil && (rssi == 99 || rssi < 6) {
		return warn(strings.Join(parts, ", "), "weak signal: check the antenna and its cable, or move to better coverage")
	}
	return pass(strings.Join(parts, ", "))
}

// query runs a read-only command and returns its information lines.
func query(ctx context.Context, e *at.Engine, cmd string, timeout time.Duration) ([]string, error) {
	resp, err := e.Command(ctx, cmd, timeout)
	if err != nil {
		return nil, err
	}
	return resp.Lines, nil
}

func regStat(ctx context.Context, e *at.Engine, cmd string, timeout time.Duration) (int, error) {
	lines, err := query(ctx, e, cmd, timeout)
	if err != nil {
		return 0, err
	}
	return parseRegStat(lines)
}

func csq(ctx context.Context, e *at.Engine, cmd string, timeout time.Duration) (int, error) {
	lines, err := query(ctx, e, cmd, timeout)
	if err != nil {
		return 0, err
	}
	return parseCSQ(lines)
}

func operator(ctx context.Context, e *at.Engine, timeout time.Duration) string {
	lines, _ := query(ctx, e, "AT+COPS?", timeout)
	return parseOperator(lines)
}

func tetraMode(ctx context.Context, e *at.Engine, timeout time.Duration) string {
	lines, _ := query(ctx, e, "AT+CTOM?", timeout)
	return parseTetraMode(lines)
}

var errAnswer = errors.New("unexpected answer")

// parseRegStat reads <stat> from "+CREG: <n>,<stat>[,...]" (EN 300 392-5)
// or "+CEREG: <n>,<stat>[,...]" (TS 27.007 10.1.22).
func parseRegStat(lines []string) (int, error) {
	for _, l := range lines {
		f := at.SplitParams(at.ParseLine(l).Params)
		if len(f) >= 2 {
			if n, ok := at.ParamInt(f[1]); ok {
				return n, nil
			}
		}
	}
	return 0, errAnswer
}

// parseCSQ reads <rssi> from "+CSQ: <rssi>,<ber>" (TS 27.007 8.5).
func parseCSQ(lines []string) (int, error) {
	for _, l := range lines {
		f := at.SplitParams(at.ParseLine(l).Params)
		if len(f) >= 2 {
			if r, ok := at.ParamInt(f[0]); ok {
				return r, nil
			}
		}
	}
	return 0, errAnswer
}

// parseOperator reads <oper> from "+COPS: <mode>,<format>,<oper>[,<AcT>]"
// (TS 27.007 7.3); "" when not registered.
func parseOperator(lines []string) string {
	for _, l := range lines {
		f := at.SplitParams(at.ParseLine(l).Params)
		if len(f) >= 3 {
			return oneLine(f[2])
		}
	}
	return ""
}

// parseTetraMode reads "+CTOM: <mode>": trunked (through the network) or
// direct mode.
func parseTetraMode(lines []string) string {
	for _, l := range lines {
		f := at.SplitParams(at.ParseLine(l).Params)
		if len(f) >= 1 {
			if n, ok := at.ParamInt(f[0]); ok {
				switch n {
				case 0:
					return "trunked mode (TMO)"
				case 1:
					return "direct mode (DMO)"
				default:
					return fmt.Sprintf("mode %d", n)
				}
			}
		}
	}
	return ""
}

func regName(stat int) string {
	switch stat {
	case 0:
		return "not searching"
	case 1:
		return "registered (home)"
	case 2:
		return "searching"
	case 3:
		return "registration denied"
	case 5:
		return "registered (roaming)"
	case 8:
		return "emergency calls only"
	}
	if stat >= 0 && stat <= 255 {
		return strings.ReplaceAll(kestrel.RegState(stat).String(), "_", " ")
	}
	return fmt.Sprintf("registration state %d", stat)
}
