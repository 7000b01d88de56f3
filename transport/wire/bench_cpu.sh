#!/bin/sh
# CPU time per benchmark op, robust on a shared machine: perf's task-clock
# (CPU time of the process, all threads) for 12000 and for 2000 iterations,
# the difference divided by 10000, so setup (loading the tracks) cancels.
# Usage: transport/wire/bench_cpu.sh [RUNS]   (needs perf; Debian: linux-perf)
set -eu
runs=${1:-3}
cd "$(dirname "$0")"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
go test -c -o "$bin" .
cpu() {
	perf stat -x, -e task-clock "$bin" -test.run '^$' -test.bench "^Benchmark$1\$" \
		-test.benchtime "$2x" -test.cpu 1 2>&1 >/dev/null | grep task-clock | cut -d, -f1
}
for b in AppendBatch30 DecodeBatch30 AppendBatchV1_30 DecodeBatchV1_30 AppendRecord30 DecodeRecord30 AppendJSON30 \
	PeerEncodingJSONMarshal30 PeerEncodingJSONUnmarshal30 PeerCodec8Encode30 PeerLIPEncode30; do
	printf '%s' "$b"
	i=0
	while [ "$i" -lt "$runs" ]; do
		lo=$(cpu "$b" 2000)
		hi=$(cpu "$b" 12000)
		awk -v lo="$lo" -v hi="$hi" 'BEGIN { printf " %d", (hi - lo) / 10000 * 1e6 }'
		i=$((i + 1))
	done
	echo " ns CPU/op"
done
