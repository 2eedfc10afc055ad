# Tollgate: `make run` serves the embedded default; `make test` runs everything CI checks.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tollgate-target
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test build build-release lint unit e2e venv model system-deps bench-overhead bench-engine clean

run: build-release
	scripts/run-dev

# cmake and libclang build llama.cpp (the CPU runtime) from source.
system-deps:
	scripts/system-deps

build: system-deps
	cargo build --workspace --bins

build-release: system-deps
	cargo build --release -p tollgate-gateway -p tollgate-node -p tollgate-loadtest

model:
	scripts/fetch-model

venv: $(VENV)/.installed

$(VENV)/.installed: tests/e2e/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

lint: system-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit: system-deps model
	cargo nextest run --workspace --no-fail-fast

e2e: build venv model
	TOLLGATE_BIN_DIR=$(CARGO_TARGET_DIR)/debug $(PY) -m pytest -q tests/e2e

test: lint unit e2e

bench-overhead:
	scripts/bench-overhead

bench-engine:
	scripts/bench-engine

clean:
	rm -rf data
