# sockfaas — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/sockfaas
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## install the Debian packages sockfaas needs (idempotent)
	@scripts/setup.sh

.PHONY: setup-peers
setup-peers: ## also install the peers the tests and benchmarks compare against (runc, crun, ...)
	@scripts/setup.sh --peers

.PHONY: build
build: ## build bin/sockfaas
	$(GO) build -o $(BIN) ./cmd/sockfaas

.PHONY: run
run: setup build ## the main job: run the invoker with the example functions (Ctrl-C stops it and cleans up)
	$(BIN) run --examples

.PHONY: demo
demo: setup build ## create a lean sandbox, run commands in it that show its isolation, and time it
	$(BIN) demo

.PHONY: test
test: setup-peers ## the whole suite (root-only tests skip when not root), then check nothing leaked
	@scripts/debris.sh --clean >/dev/null
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	@scripts/debris.sh && echo "debris: none left behind"

.PHONY: bench
bench: setup-peers ## run the benchmarks side by side (lean vs libcontainer vs crun vs runc)
	@scripts/debris.sh --clean >/dev/null
	$(GO) test ./benchmarks -run '^$$' -bench . -benchtime=200x -timeout 30m
	@scripts/debris.sh && echo "debris: none left behind"

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest $(PKGS)

.PHONY: clean-test
clean-test: ## remove test debris: mounts, cgroups, state dirs and processes named sockfaas-*
	@scripts/debris.sh --clean

.PHONY: clean
clean: clean-test ## remove build output and test debris
	rm -rf bin
