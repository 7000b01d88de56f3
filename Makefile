# Kestrel: common tasks. CI runs .ci/run; these are for developers.
GO      ?= go
DIST    := dist
# The version stamped into the binaries, the state message and the packages:
# 0.<commits>.<short hash> (a Debian version that grows with every commit).
VERSION ?= 0.$(shell git rev-list --count HEAD 2>/dev/null || echo 0).$(shell git rev-parse --short=8 HEAD 2>/dev/null || echo unknown)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: evidence-shift all test test-short dist package ci generate fuzz bench crash-5000 powercut-10000 powercut-nosync spool-measure platform-bench platform-kill-5000 dashboard-bench dashboard-shots footprint gps-compare linkfault linkbudget clean delta-measure

all: test

test:            ## the README's test command (run as root for eBPF, mounts, namespaces)
	$(GO) test ./...

test-short:      ## unit tests only: skips the end-to-end scenarios
	$(GO) test -short ./...

dist:            ## stripped binaries for the devices (kestrel_release: no demo, broker, simulators or SQLite)
	mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -tags kestrel_release -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrel-linux-armv7 ./cmd/kestrel
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags kestrel_release -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrel-linux-arm64 ./cmd/kestrel
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrelctl-linux-armv7 ./cmd/kestrelctl
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrelctl-linux-arm64 ./cmd/kestrelctl
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -tags kestrel_release -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrel-linux-amd64 ./cmd/kestrel
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/kestrelctl-linux-amd64 ./cmd/kestrelctl
	ls -l $(DIST)

package: dist     ## .deb packages for armhf, arm64 and amd64 (nfpm, pinned in go.mod)
	mkdir -p dist/pkg
	$(DIST)/kestrel-linux-amd64 config defaults > dist/pkg/kestrel.toml
	for a in armhf:armv7 arm64:arm64 amd64:amd64; do \
		cp $(DIST)/kestrel-linux-$${a##*:} dist/pkg/kestrel && cp $(DIST)/kestrelctl-linux-$${a##*:} dist/pkg/kestrelctl && \
		ARCH=$${a%%:*} VERSION=$(VERSION) $(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target $(DIST)/ || exit 1; \
	done
	ls -l $(DIST)/*.deb

evidence-shift:  ## docs/evidence.md: a 24-hour shift through the real agent, mosquitto and PostgreSQL, exported and checked by kestrelctl verify
	mkdir -p $(DIST)
	KESTREL_SHIFT_OUT=$(CURDIR)/$(DIST)/shift.evidence $(GO) test ./hwtest/shift -run TestShiftVerifiesFromDatabase -count=1 -v
	$(GO) run ./cmd/kestrelctl verify $(DIST)/shift.evidence

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
	$(GO) test ./platform -run '^$$' -fuzz '^FuzzBatchAdd$$' -fuzztime 60s
	$(GO) test ./firmware-hooks/eventsock -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime 60s
	$(GO) test ./platform/web -run '^$$' -fuzz '^FuzzParseUsers$$' -fuzztime 60s
	$(GO) test ./agent/spool -run '^$$' -fuzz '^FuzzRecover$$' -fuzztime 60s
	$(GO) test ./agent/spool -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime 60s
	$(GO) test ./agent/update -run '^$$' -fuzz '^FuzzLoadState$$' -fuzztime 60s
	$(GO) test ./transport/delta -run '^$$' -fuzz '^FuzzPatch$$' -fuzztime 60s

bench:           ## the benchmarks behind docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem ./drivers/nmea ./transport/wire ./agent/spool ./agent/tracking
	$(GO) test ./transport/mqtt -run '^$$' -bench 'DrainDay|PeerJSON|EmergencyDuringDrain' -benchtime 10x

crash-5000:      ## the spool's SIGKILL crash test, 5,000 cycles (docs/spool.md)
	KESTREL_CRASH_CYCLES=5000 $(GO) test -count=1 -timeout 2h -v ./hwtest/crash

powercut-10000:  ## the power-cut test on a real kernel, 10,000 crash states (root, qemu; docs/spool.md)
	KESTREL_RIG_REQUIRED=1 KESTREL_POWERCUT_STATES=10000 KESTREL_POWERCUT_SECONDS=90 $(GO) test -count=1 -timeout 3h -run '^TestPowerCut$$' -v ./hwtest/powercut

powercut-update: ## the update workload on the real kernel, 3,000 crash states (root, qemu; docs/ota.md)
	KESTREL_RIG_REQUIRED=1 KESTREL_POWERCUT_UPDATE_STATES=3000 $(GO) test -count=1 -timeout 60m -run '^TestPowerCutUpdate$$' -v ./hwtest/powercut

powercut-nosync: ## the test of the test: with the spool's syncs removed the power-cut test must fail
	! KESTREL_RIG_REQUIRED=1 $(GO) test -count=1 -tags kestrel_nosync -timeout 30m -run '^TestPowerCut$$' -v ./hwtest/powercut

ota-crash:       ## (result in docs/ota.md) SIGKILL after every durable step of an update, every chunk included
	mkdir -p dist
	KESTREL_OTA_CRASH_ALL=1 $(GO) test -count=1 -timeout 60m -run '^TestCrashAtEveryUpdateStep$$' -v ./hwtest/ota > dist/ota-crash.log 2>&1; st=$$?; \
		grep -E '^(    crash_test|--- (PASS|FAIL): TestCrash|ok|FAIL)' dist/ota-crash.log | tee dist/ota-crash.txt; exit $$st

spool-measure:   ## spool write amplification, fsyncs, 1 GiB recovery vs bbolt (root: loop ext4)
	KESTREL_SPOOL_MEASURE=1 $(GO) test -count=1 -timeout 60m -run '^TestMeasure' -v ./agent/spool

dashboard-bench: ## (result in dist/dashboard-bench.txt) the browser test with 5,000 devices at 0.2 Hz: first paint and live update latency (docs/benchmarks.md)
	mkdir -p $(DIST)
	KESTREL_DASHBOARD_DEVICES=5000 KESTREL_DASHBOARD_RATE_MILLI=200 $(GO) test -count=1 -timeout 20m -run '^TestBrowserDashboard$$' -v ./platform/web | tee $(DIST)/dashboard-bench.txt

dashboard-shots: ## the dashboard's screenshots into docs/ (docs/dashboard.md)
	KESTREL_DASHBOARD_SHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestBrowserDashboard$$' -v ./platform/web

platform-bench:  ## (result in dist/platform-bench.txt) 5,000 devices at 1 Hz -> mosquitto -> 2 serve -> PostgreSQL, beside the naive peer (docs/benchmarks.md)
	mkdir -p $(DIST)
	KESTREL_BENCH_DEVICES=5000 KESTREL_BENCH_FOR=60s KESTREL_BENCH_OUT=$(CURDIR)/$(DIST)/platform-bench.txt $(GO) test -count=1 -timeout 40m -run '^TestFleetIngest$$' -v ./hwtest/fleetsim

platform-kill-5000: ## serve SIGKILLed 20 times during a 5,000-device run (DB, broker, devices restarted once)
	KESTREL_FLEETSIM_DEVICES=5000 KESTREL_FLEETSIM_RATE=1 KESTREL_SERVE_KILLS=20 $(GO) test -count=1 -timeout 60m -run '^TestServeKilledExactlyOnce$$' -v ./hwtest/fleetsim

footprint:       ## RSS, CPU, wakeups and flash writes of the real binary (docs/benchmarks.md)
	KESTREL_FOOTPRINT=1 $(GO) test -count=1 -timeout 30m -v ./hwtest/footprint

linkfault:       ## (result in dist/linkfault.txt) 20 % loss over 20,000 fixes, a 1 h outage compressed, 100 USB unplugs, on the kernel rig (root, qemu; docs/benchmarks.md)
	mkdir -p $(DIST)
	KESTREL_RIG_REQUIRED=1 KESTREL_LINKFAULT_LOSS_FIXES=20000 KESTREL_LINKFAULT_OUTAGE_FIXES=3600 KESTREL_LINKFAULT_UNPLUGS=100 \
		$(GO) test -count=1 -timeout 90m -run '^TestLinkFault$$' -v ./hwtest/linkfault >$(DIST)/linkfault.txt 2>&1; \
		rc=$$?; grep -v '^time=' $(DIST)/linkfault.txt | tail -40; exit $$rc

gps-compare:     ## NMEA throughput against gpsd's gpsdecode on a ~50 MB log
	drivers/nmea/bench/compare.sh

clean:
	rm -rf $(DIST)

linkbudget:      ## (result in dist/linkbudget.txt) the whole agent's bytes per fix on the MQTT stream, 10 min per profile, TLS too (docs/benchmarks.md)
	mkdir -p $(DIST)
	KESTREL_AGENT_LINKBUDGET=1 KESTREL_LINKBUDGET_TABLE=$(CURDIR)/$(DIST)/linkbudget.txt $(GO) test -count=1 -timeout 30m -parallel 4 -run '^TestAgentLinkBudget$$' -v ./hwtest/linkbudget

# make delta-measure: the OTA delta between two real device builds (linux/arm
# GOARM=7, the release flags), kestrel-bsdiff/1 beside Debian's bsdiff,
# xdelta3 and zstd --patch-from in the same run (apt-get install bsdiff
# xdelta3 zstd; a missing peer is listed as not installed). The figures go
# to docs/benchmarks.md.
DELTA_OLD ?= main~1
DELTA_NEW ?= main
DELTA_DIR ?= /tmp/kestrel-delta
delta-measure:
	rm -rf $(DELTA_DIR) && mkdir -p $(DELTA_DIR)
	for r in old:$(DELTA_OLD) new:$(DELTA_NEW); do \
		n=$${r%%:*}; rev=$${r#*:}; \
		git worktree add -f --detach $(DELTA_DIR)/src-$$n $$rev >/dev/null || exit 1; \
		v=0.$$(git rev-list --count $$rev).$$(git rev-parse --short=8 $$rev); \
		(cd $(DELTA_DIR)/src-$$n && CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -tags kestrel_release -trimpath \
			-ldflags="-s -w -X main.version=$$v -X main.commit=$$(git rev-parse $$rev)" -o $(DELTA_DIR)/kestrel-$$n ./cmd/kestrel) || exit 1; \
		git worktree remove --force $(DELTA_DIR)/src-$$n; \
		echo "$$n: $$rev = $$v"; \
	done
	KESTREL_DELTA_OLD=$(DELTA_DIR)/kestrel-old KESTREL_DELTA_NEW=$(DELTA_DIR)/kestrel-new $(GO) test -count=1 -run '^TestMeasureBuilds$$' -v ./transport/delta | grep -v -e '^=== RUN' -e '^--- ' -e '^PASS' -e '^ok '
