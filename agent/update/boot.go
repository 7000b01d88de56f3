package update

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// Environment the launcher passes to the binary it starts.
const (
	// EnvLaunched marks a process started by Launch: its start is counted.
	EnvLaunched = "KESTREL_LAUNCHED"
	// EnvExecWrapper, when set, runs slot binaries through this program
	// (qemu-arm in tests, where binfmt_misc is not registered).
	EnvExecWrapper = "KESTREL_EXEC_WRAPPER"
)

// Action is what a start must do after Boot.
type Action int

const (
	// Run: carry on (with the health gate if PendingVerify says so).
	Run Action = iota
	// Restart: another slot must run; exit for the service manager to
	// start it.
	Restart
)

// settle brings the state and the link into agreement at a start and
// counts the start of a pending release. It returns the slot that must
// run now. execErr is the error of a launcher that could not start the
// slot it was told to.
func (u *Updater) settle(execErr error) (string, error) {
	link := u.linkSlot()
	p := u.st.Pending
	if p == nil {
		if link != "" {
			if _, err := os.Stat(u.binary(link)); err != nil {
				// Only a hand-made link can name a missing binary: the
				// updater switches to complete, verified ones only.
				u.log.Error("current link names a missing binary: running the package's", "slot", link, "err", err)
				return "", nil
			}
		}
		if execErr != nil {
			return "", nil // the launcher runs itself
		}
		return link, nil
	}
	if p.Reverting != "" {
		_, err := u.revertLocked(p.Reverting)
		return p.From.Slot, err
	}
	if link != p.Slot {
		if p.Boots > 0 {
			_, err := u.revertLocked(fmt.Sprintf("the link was found on %s after %d start(s) of %s", slotLabel(link), p.Boots, slotLabel(p.Slot)))
			return p.From.Slot, err
		}
		// A power cut between recording "pending verify" and renaming
		// the link: finish the switch if the binary is whole.
		sum, n, err := hashFile(u.binary(p.Slot))
		if err != nil || sum != p.SHA256 {
			u.st.Pending = nil
			u.st.Last = &Result{Seq: p.Seq, Version: p.Version, State: "failed", Reason: fmt.Sprintf("staged binary lost before the switch (%d bytes, sha256 %s, err %v)", n, sum, err), Time: u.now().UnixMilli()}
			return link, u.saveLocked("lost")
		}
		if err := u.switchLink(p.Slot); err != nil {
			return link, err
		}
	}
	if execErr != nil {
		_, err := u.revertLocked(fmt.Sprintf("%s could not be started: %v", slotLabel(p.Slot), execErr))
		return p.From.Slot, err
	}
	p.Boots++
	if p.Boots > 1 {
		_, err := u.revertLocked(fmt.Sprintf("%s started again before its health gate passed (a crash, the watchdog or a power cut): %d starts", slotLabel(p.Slot), p.Boots))
		return p.From.Slot, err
	}
	return p.Slot, u.saveLocked("boot")
}

// Boot runs at the agent's start. launched says a launcher (Launch)
// already counted this start; otherwise Boot counts it. It returns Restart
// when this binary is not the one that must run.
func (u *Updater) Boot(launched bool) (Action, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	run := u.self
	if !launched {
		var err error
		if run, err = u.settle(nil); err != nil {
			return Run, err
		}
	}
	if run != u.self {
		return Restart, nil
	}
	if u.st.Pending == nil && u.st.Running.Slot != u.self {
		// The link was changed by hand (a fitter's recovery): the
		// release in force is the one running, as its slot's manifest
		// says (the package's binary has none: seq 0).
		was := u.st.Running
		u.st.Running = u.fresh().Running
		u.log.Warn("running another binary than the update state says: following it", "state_slot", was.Slot, "slot", u.self, "seq", u.st.Running.Seq)
		if err := u.saveLocked("reconcile"); err != nil {
			return Run, err
		}
	}
	if p := u.st.Pending; p != nil && p.Slot == u.self && p.Reverting == "" {
		u.gate = true
		u.log.Warn("release pending verify: running the health gate", "seq", p.Seq, "version", p.Version, "slot", p.Slot)
	}
	return Run, nil
}

// Launch is the launcher at `kestrel run`'s start: it settles the state,
// counts a pending release's start and, if another binary must run, execs
// it with the same arguments (through EnvExecWrapper if set). It returns
// only when this process is to run the agent itself; launched says the
// start was counted (pass it to Boot).
func Launch(opts Options, args []string) (launched bool, err error) {
	if os.Getenv(EnvLaunched) != "" {
		return true, nil
	}
	u, err := Open(opts)
	if err != nil {
		return false, err
	}
	defer u.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	var execErr error
	for try := 0; try < 2; try++ {
		run, err := u.settle(execErr)
		if err != nil {
			return false, err
		}
		if run == u.self || run == "" {
			// This binary, or the package's while a slot binary was
			// started by hand: carry on.
			return true, nil
		}
		path := u.binary(run)
		u.log.Info("starting the current slot", "slot", run, "binary", path)
		execErr = execBinary(path, args)
		u.log.Error("could not start the current slot", "slot", run, "err", execErr)
	}
	return true, fmt.Errorf("update: no slot could be started: %w", execErr)
}

// execBinary replaces this process with path (args[0] included in args).
func execBinary(path string, args []string) error {
	env := append(os.Environ(), EnvLaunched+"=1")
	argv := append([]string{path}, args[1:]...)
	prog := path
	if w := os.Getenv(EnvExecWrapper); w != "" {
		p, err := exec.LookPath(w)
		if err != nil {
			return fmt.Errorf("exec wrapper %s: %w", w, err)
		}
		prog, argv = p, append([]string{p}, argv...)
	}
	return syscall.Exec(prog, argv, env)
}
