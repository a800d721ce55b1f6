# ctr-cr: checkpoint/restore for Linux processes and OCI containers (runc, crun).
SHELL   := /bin/bash
GO      ?= go
BIN     := bin/ctr-cr
export CGO_ENABLED := 0

.PHONY: build deps test stress bench demo proto vet clean

# Release builds drop the symbol table and DWARF (-s -w): a third of the
# binary's size, and ~0.5 ms of every start (perf stat -r 100 of
# `ctr-cr --version`: 9.7-9.9 → 9.1-9.4 ms). Panics still print full
# stack traces (they use the pclntab). `make build LDFLAGS=` keeps them,
# for perf or a debugger.
LDFLAGS ?= -s -w

# bin/runtime/runc -> ../ctr-cr is ctr-cr as a runc-compatible OCI runtime
# for podman and containerd (`podman --runtime bin/runtime/runc`), and
# bin/criu/criu -> ../ctr-cr answers their criu version probe
# (docs/platforms.md): each in a directory of its own, so that adding one
# to a PATH shadows nothing else.
build:
	$(GO) build -ldflags="$(LDFLAGS)" -o $(BIN) ./cmd/ctr-cr
	mkdir -p bin/runtime bin/criu
	ln -sfn ../ctr-cr bin/runtime/runc
	ln -sfn ../ctr-cr bin/criu/criu

# The Debian packages the tests, the demo and the bench need: as root,
# scripts/deps.sh apt-get installs those missing (a no-op of a few ms when
# all are there); otherwise it names them.
deps:
	./scripts/deps.sh

# All tests. As root (CI), a skipped test is a failure (internal/testreport).
# The C/R cases need root, gcc and python3. Inherited fds are closed so the
# processes the tests checkpoint hold only what they open themselves.
# Packages run one at a time (-p 1): the restore tests hand out pids through
# the host-wide ns_last_pid cursor, which another package's forks (runc's
# threads) can take first, and contend for the 2 CPUs' timing otherwise.
test: deps build
	set -o pipefail; $(GO) vet ./... && \
	CTRCR_BIN=$(CURDIR)/$(BIN) $(GO) test -p 1 -json -count=1 -timeout 25m -skip '^TestStress' ./... | $(GO) run ./internal/testreport

# The long runs (CI runs them after make test): crash sweeps and concurrency
# stress, TestStress_* (only here), and again TestCrash_* and TestConcurrent_*,
# the crash tests killing ctr-cr at every step of injection
# (CTRCR_CRASH_STRIDE=1) instead of every n-th (docs/crash.md). STRESS
# selects the tests.
STRESS ?= ^(TestStress|TestCrash|TestConcurrent)
stress: deps build
	set -o pipefail; CTRCR_BIN=$(CURDIR)/$(BIN) CTRCR_CRASH_STRIDE=1 $(GO) test -p 1 -json -count=1 -timeout 30m \
		-run '$(STRESS)' ./tests/ ./bundle-tests/ | $(GO) run ./internal/testreport

bench: deps build
	CTRCR_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench

demo: deps build
	./scripts/demo.sh $(CURDIR)/$(BIN)

proto:
	cd core/image/imagepb && protoc --go_out=. --go_opt=paths=source_relative image.proto
	$(GO) run ./internal/protolazy/cmd core/image/imagepb/image.pb.go

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
