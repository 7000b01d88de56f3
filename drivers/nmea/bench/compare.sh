#!/bin/sh
# Throughput of `kestrelctl nmea decode` against Debian's gpsdecode
# (gpsd-clients) on the same ~50 MB NMEA log, measured in one hyperfine run.
#
# The log is the gpsd regression corpus (drivers/nmea/testdata/gpsd/*.log)
# concatenated until it passes 50 MB; it is built in a temporary directory
# and removed afterwards, never committed.
#
# usage: drivers/nmea/bench/compare.sh   (from the repository root)
# needs: go, hyperfine, gpsdecode, python3
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"
go build -o "$tmp/kestrelctl" ./cmd/kestrelctl
: > "$tmp/big.log"
while [ "$(stat -c %s "$tmp/big.log")" -lt 50000000 ]; do
	cat drivers/nmea/testdata/gpsd/*.log >> "$tmp/big.log"
done
size=$(stat -c %s "$tmp/big.log")
echo "input: $size bytes ($(grep -c '' "$tmp/big.log") lines)"
echo "fixes: kestrelctl $("$tmp/kestrelctl" nmea decode "$tmp/big.log" | wc -l), gpsdecode TPV lines $(gpsdecode < "$tmp/big.log" | grep -c '"class":"TPV"' || true)"
hyperfine --warmup 1 --runs 5 --export-json "$tmp/h.json" \
	-n kestrelctl "$tmp/kestrelctl nmea decode $tmp/big.log > /dev/null" \
	-n gpsdecode "gpsdecode < $tmp/big.log > /dev/null"
python3 - "$tmp/h.json" "$size" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
size = int(sys.argv[2]) / 1e6
k, g = r["kestrelctl"]["mean"], r["gpsdecode"]["mean"]
print("kestrelctl nmea decode: %.3f s, %.0f MB/s" % (k, size / k))
print("gpsdecode:              %.3f s, %.1f MB/s" % (g, size / g))
print("ratio: %.1fx" % (g / k))
PY
