# Tollgate: `make run` serves the embedded default; `make test` runs everything CI checks.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tollgate-target
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test build build-release lint unit e2e venv model system-deps browser-deps db-deps node-deps contracts bench-overhead bench-engine bench-settle bench-verify bench-pipeline bench-shared clean

run: build-release contracts
	scripts/run-dev

# cmake and libclang build llama.cpp (the CPU runtime) from source.
system-deps:
	scripts/system-deps

# Debian's Chromium, for the dashboard's browser test.
browser-deps:
	scripts/system-deps browser

# PostgreSQL and Redis, for the tests of several gateways sharing one ledger.
# (Debian's postgresql package starts no cluster the tests use: each test
# makes its own on a free port.)
db-deps:
	scripts/system-deps db

# The pinned npm packages: the Solidity toolchain and playwright-core.
node-deps: node_modules/.installed

node_modules/.installed: package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# Solidity toolchain from npm (package-lock.json) and the contracts' artifacts,
# which `tollgate chain deploy` reads.
contracts: node-deps
	scripts/forge build

build: system-deps
	cargo build --workspace --bins

build-release: system-deps
	cargo build --release -p tollgate-gateway -p tollgate-node -p tollgate-loadtest

model:
	scripts/fetch-model
	scripts/fetch-gemma

venv: $(VENV)/.installed

$(VENV)/.installed: tests/e2e/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

lint: system-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit: system-deps db-deps model contracts
	cargo nextest run --workspace --no-fail-fast
	scripts/forge test

e2e: build venv model contracts node-deps browser-deps db-deps
	TOLLGATE_BIN_DIR=$(CARGO_TARGET_DIR)/debug $(PY) -m pytest -q tests/e2e

test: lint unit e2e

bench-overhead:
	scripts/bench-overhead

bench-engine:
	scripts/bench-engine

bench-settle: contracts
	scripts/bench-settle

bench-verify: system-deps
	scripts/bench-verify

bench-pipeline: system-deps
	scripts/bench-pipeline

bench-shared: system-deps db-deps
	scripts/bench-shared

clean:
	rm -rf data
