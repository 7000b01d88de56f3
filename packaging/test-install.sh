#!/usr/bin/env bash
# Installs the amd64 package on this machine (CI runs it as root on a
# throwaway machine), checks the unit, and runs the installed agent as the
# kestrel user from the installed config through a short scenario: it
# publishes to the local mosquitto, takes an emergency through the default
# event socket, answers `kestrel status`, and drains on SIGTERM.
# setpriv, not runuser, runs the agent: it execs, so SIGTERM reaches it.
# Usage: packaging/test-install.sh DEB [BROKER_URL]
set -euo pipefail
deb=$1
broker=${2:-tcp://127.0.0.1:1883}
fail() { echo "test-install: $*" >&2; exit 1; }

dpkg -i "$deb" >/dev/null
getent passwd kestrel >/dev/null || fail "no kestrel user"
id -nG kestrel | grep -qw dialout || fail "kestrel is not in dialout"
[ "$(stat -c '%U:%G %a' /etc/kestrel/kestrel.toml)" = "root:kestrel 640" ] || fail "config is $(stat -c '%U:%G %a' /etc/kestrel/kestrel.toml), want root:kestrel 640"
[ "$(stat -c '%U:%G' /var/lib/kestrel)" = "kestrel:kestrel" ] || fail "/var/lib/kestrel is $(stat -c '%U:%G' /var/lib/kestrel)"
systemd-analyze verify /usr/lib/systemd/system/kestrel.service || fail "systemd-analyze verify failed"
kestrel version | grep -q '^kestrel 0\.[0-9]*\.[0-9a-f]* .* commit [0-9a-f]\{40\}$' || fail "version not stamped: $(kestrel version)"

# Unconfigured (no device.id): EX_CONFIG, which the unit does not restart.
set +e
runuser -u kestrel -- kestrel run --config /etc/kestrel/kestrel.toml 2>/tmp/kestrel-unconfigured.log
rc=$?
set -e
[ "$rc" = 78 ] || fail "unconfigured run exited $rc, want 78: $(cat /tmp/kestrel-unconfigured.log)"

install -d -m 0750 -o kestrel -g kestrel /run/kestrel
rm -f /run/kestrel/events.sock /run/kestrel/control.sock # left by anything that ran before
sub=/tmp/kestrel-install-sub.txt
timeout 40 mosquitto_sub -L "${broker/tcp:/mqtt:}/kestrel/v1/ci/pkg-test/#" -F '%t' >"$sub" &
subpid=$!
sleep 0.5
setpriv --reuid=kestrel --regid=kestrel --init-groups kestrel run --config /etc/kestrel/kestrel.toml \
	--set device.id=pkg-test --set device.fleet=ci --set broker.urls="$broker" \
	--set broker.batch_age=200ms >/tmp/kestrel-installed.log 2>&1 &
agent=$!
trap 'kill "$agent" "$subpid" 2>/dev/null || true' EXIT # a failed check leaves nothing running
for _ in $(seq 50); do [ -S /run/kestrel/events.sock ] && [ "$(stat -c %U /run/kestrel/events.sock)" = kestrel ] && break; sleep 0.2; done
runuser -u kestrel -- kestrel hook send emergency name=install-test || fail "emergency refused"
runuser -u kestrel -- kestrel status >/tmp/kestrel-status.txt || fail "kestrel status: $(cat /tmp/kestrel-status.txt)"
grep -q 'pkg-test' /tmp/kestrel-status.txt || fail "status lacks the device: $(cat /tmp/kestrel-status.txt)"
for _ in $(seq 50); do grep -q 'kestrel/v1/ci/pkg-test/events' "$sub" && break; sleep 0.2; done
kill -TERM "$agent"
wait "$agent" || fail "agent exited $? on SIGTERM: $(tail -20 /tmp/kestrel-installed.log)"
kill "$subpid" 2>/dev/null || true
grep -q 'kestrel/v1/ci/pkg-test/events' "$sub" || fail "no events message reached the broker; agent log: $(tail -20 /tmp/kestrel-installed.log)"
grep -q 'kestrel/v1/ci/pkg-test/state' "$sub" || fail "no state message reached the broker"
[ "$(stat -c '%U' /var/lib/kestrel/spool)" = kestrel ] || fail "spool not owned by kestrel"
echo "test-install: ok: installed, unit verified, ran as kestrel from the installed config"
