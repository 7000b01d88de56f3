package selftest

import (
	"fmt"
	"time"

	"github.com/kestrel-edge/kestrel/agent/localctl"
	"github.com/kestrel-edge/kestrel/agent/serialport"
)

// heldPort reports a port whose FHS lock file a live process holds: the
// check must not open it, because opening a tty resets its line settings
// (the agent's GPS would go silent at the wrong baud).
func heldPort(key, path string) (Result, bool) {
	dev, err := serialport.Resolve(path)
	if err != nil {
		return Result{}, false
	}
	pid := serialport.HeldBy(serialport.DefaultLockDir, dev)
	if pid == 0 {
		return Result{}, false
	}
	return skip(fmt.Sprintf("%s %s is held by pid %d (%s); not opened", key, path, pid, serialport.LockPath(serialport.DefaultLockDir, dev))), true
}

// agentGPS reports the GPS from the running agent's status.
func agentGPS(port string, st *localctl.Status) Result {
	if st == nil || st.GPS == nil {
		return skip(port + " is in use by the running agent; it has reported no GPS status yet (kestrel status)")
	}
	g := st.GPS
	detail := fmt.Sprintf("%s, held by the running agent (pid %d): %s, %d sats used, %d sentences", port, st.PID, g.State, g.SatsUsed, g.Sentences)
	if g.LastFix != nil {
		detail += fmt.Sprintf(", last fix %s ago", st.Now.Sub(*g.LastFix).Round(time.Second))
	}
	switch g.State {
	case "fix":
		return pass(detail)
	case "no_fix":
		return warn(detail, hintNoFix)
	}
	return fail(detail, hintGPSPort)
}

// agentRadio reports the radio from the running agent's status.
func agentRadio(port string, st *localctl.Status) Result {
	if st == nil || st.Radio == nil {
		return skip(port + " is in use by the running agent; it has reported no radio status yet (kestrel status)")
	}
	r := st.Radio
	detail := fmt.Sprintf("%s, held by the running agent (pid %d): %s, registered %s, rssi %d dBm", port, st.PID, r.Profile, r.Registered, r.RSSI)
	if !r.Online {
		return fail(detail+", not answering AT", hintRadioPort)
	}
	return pass(detail)
}
