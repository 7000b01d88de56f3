# Kestrel: common tasks. CI runs .ci/run; these are for developers.
GO      ?= go
LDFLAGS := -s -w
DIST    := dist

.PHONY: all test test-short dist ci generate fuzz bench crash-5000 powercut-10000 powercut-nosync spool-measure footprint gps-compare clean

all: test

test:            ## the README's test command (run as root for eBPF, mounts, namespaces)
	$(GO) test ./...

test-short:      ## unit tests only: skips the end-to-end scenarios
	$(GO) test -short ./...

dist:            ## stripped binaries for the devices
	mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrel-linux-armv7 ./cmd/kestrel
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrel-linux-arm64 ./cmd/kestrel
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrelctl-linux-armv7 ./cmd/kestrelctl
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrelctl-linux-arm64 ./cmd/kestrelctl
	ls -l $(DIST)

ci:              ## what CI runs
	bash .ci/run

generate:        ## msgp and bpf2go output (committed; CI fails on drift)
	$(GO) generate ./...

fuzz:            ## a minute on each parser of outside input
	$(GO) test ./drivers/nmea -run '^$$' -fuzz '^FuzzStream$$' -fuzztime 60s
	$(GO) test ./drivers/nmea -run '^$$' -fuzz '^FuzzSentence$$' -fuzztime 60s
	$(GO) test ./drivers/at -run '^$$' -fuzz . -fuzztime 60s
	$(GO) test ./transport/wire -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime 60s
	$(GO) test ./transport/wire -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime 60s
	$(GO) test ./agent/config -run '^$$' -fuzz . -fuzztime 60s
	$(GO) test ./firmware-hooks/eventsock -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime 60s
	$(GO) test ./agent/spool -run '^$$' -fuzz '^FuzzRecover$$' -fuzztime 60s
	$(GO) test ./agent/spool -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime 60s

bench:           ## the benchmarks behind docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem ./drivers/nmea ./transport/wire ./agent/spool ./agent/tracking
	$(GO) test ./transport/mqtt -run '^$$' -bench 'DrainDay|PeerJSON|EmergencyDuringDrain' -benchtime 10x

crash-5000:      ## the spool's SIGKILL crash test, 5,000 cycles (docs/spool.md)
	KESTREL_CRASH_CYCLES=5000 $(GO) test -count=1 -timeout 2h -v ./hwtest/crash

powercut-10000:  ## the power-cut test on a real kernel, 10,000 crash states (root, qemu; docs/spool.md)
	KESTREL_RIG_REQUIRED=1 KESTREL_POWERCUT_STATES=10000 KESTREL_POWERCUT_SECONDS=90 $(GO) test -count=1 -timeout 3h -run '^TestPowerCut$$' -v ./hwtest/powercut

powercut-nosync: ## the test of the test: with the spool's syncs removed the power-cut test must fail
	! KESTREL_RIG_REQUIRED=1 $(GO) test -count=1 -tags kestrel_nosync -timeout 30m -run '^TestPowerCut$$' -v ./hwtest/powercut

spool-measure:   ## spool write amplification, fsyncs, 1 GiB recovery vs bbolt (root: loop ext4)
	KESTREL_SPOOL_MEASURE=1 $(GO) test -count=1 -timeout 60m -run '^TestMeasure' -v ./agent/spool

footprint:       ## RSS, CPU, wakeups and flash writes of the real binary (docs/benchmarks.md)
	KESTREL_FOOTPRINT=1 $(GO) test -count=1 -timeout 30m -v ./hwtest/footprint

gps-compare:     ## NMEA throughput against gpsd's gpsdecode on a ~50 MB log
	drivers/nmea/bench/compare.sh

clean:
	rm -rf $(DIST)
