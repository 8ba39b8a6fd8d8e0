# The two commands of this project: `make run` and `make test`. Both install what they
# need (scripts/setup.sh: pinned, cached, skipped when present).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
TARGET_DIR := $(CURDIR)/target/x86_64-unknown-linux-gnu/debug
export HA_TOOLS_DIR ?= $(HOME)/.cache/ha-orchestrator/tools
# The project's pinned tools first: the .venv (SAM CLI, cfn-lint, ...) and the tools
# folder's bin (cargo-nextest when the machine's is not the pinned version).
export PATH := $(VENV)/bin:$(HA_TOOLS_DIR)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
# sam build runs cargo-lambda: plain cargo (no zig) and the dev profile, so it reuses
# exactly what `cargo build`/`cargo test` compiled. `sam build` without these (as in the
# README's AWS deploy) makes optimised release binaries.
export CARGO_LAMBDA_COMPILER := cargo
LOCAL_SAM_BUILD := SAM_BUILD_MODE=debug sam build

# Clippy and the build in one compile. `cargo clippy` is `cargo check` with clippy-driver
# as the workspace's compiler, and check mode compiles every dependency (the AWS SDK) once
# more into metadata the build cannot use: 280 s of a fresh-clone CI run. Instead every
# cargo call make runs (the build, the tests, and cargo-lambda under `sam build`) compiles
# the workspace's own crates with clippy-driver, which lints them (with -D warnings, as
# `cargo clippy -- -D warnings` passes it) and then builds them as rustc would; the
# dependencies are built once, by plain rustc. All calls share the same wrapper and
# arguments, so none recompiles what another built (cargo fingerprints both).
CLIPPY_DRIVER := $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
export RUSTC_WORKSPACE_WRAPPER := $(CLIPPY_DRIVER)
export CLIPPY_ARGS := -D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

SHELL_SCRIPTS := $(shell git ls-files '*.sh' '*.bash' .ci/run tests/fakes local-cloud/standins local-cloud/hosts | grep -v '\.sql$$' 2>/dev/null)

.PHONY: bench chaos check documents help setup build compile sam-build run test tests lint fmt-check clippy template-lint shellcheck module-graph clean

help:
	@echo "make run   - deploy the stack into the local cloud and show it answering"
	@echo "make test  - every check and test (what CI runs), with a summary at the end"
	@echo "make check - the quick loop: fmt, clippy, unit tests and the fast end-to-end suites"
	@echo "make chaos - the long chaos run: several seeds, faults on every AWS service"
	@echo "make bench - benchmarks: startup vs Python/boto3, cost per operation, reactions, sweep scale"

# setup.sh builds fakecloud with `cargo install`: not a crate of this workspace, so not
# compiled through clippy-driver.
setup:
	@env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS scripts/setup.sh

# Compile once for everything: lints, tests, the harness, and the Lambda binaries sam
# packages.
build: setup compile sam-build

compile:
	cargo build --workspace --all-targets

sam-build:
	$(LOCAL_SAM_BUILD)

run: build
	$(TARGET_DIR)/local-cloud demo

# Every stage below, one after another, then one summary (scripts/test-gate.py): each
# stage's time, CPU and peak memory, each test suite's result and time, and where the log
# of anything that failed is. The tests stage runs the suites side by side
# (.config/nextest.toml).
test:
	@python3 scripts/test-gate.py setup fmt-check module-graph shellcheck template-lint compile sam-build tests

# The loop while working on the code: under 10 minutes once compiled. The full gate stays
# `make test`.
check:
	@python3 scripts/test-gate.py --nextest-profile check setup fmt-check compile sam-build tests

# Every test binary of the workspace, unit and end to end, with cargo-nextest (pinned in
# scripts/setup.sh). NEXTEST_PROFILE picks the profile of .config/nextest.toml. Each test
# process runs through scripts/measure-test (cargo's target runner), which records its wall
# time, CPU time and peak memory for the summary.
NEXTEST_PROFILE ?= default
TEST_RECORD := $(CURDIR)/target/test-gate/tests.jsonl
tests:
	mkdir -p $(dir $(TEST_RECORD)) && rm -f $(TEST_RECORD)
	HA_TEST_RECORD=$(TEST_RECORD) \
	  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$(CURDIR)/scripts/measure-test \
	  cargo nextest run --workspace --profile $(NEXTEST_PROFILE) --no-fail-fast

lint: fmt-check module-graph shellcheck template-lint compile

fmt-check:
	cargo fmt --all --check

# shared/src keeps three layers without an import cycle: domain <- aws <- tasks.
module-graph:
	python3 scripts/module-graph.py

# Clippy with -D warnings runs as the workspace compiles (see CLIPPY_DRIVER above).
clippy: compile

# cfn-lint with the project's security rules (scripts/cfn-rules: open ingress, IMDSv1,
# encryption, IAM scoping, API authorization, SSM document updates); tests/security holds a
# failing fragment each. cfn-lint checks SAM resources against SAM's schemas without the
# transform, so the template is linted once more as CloudFormation gets it after the SAM
# transform (the IAM policies SAM writes: W3037 unknown action, ...). E9107 (literal ARN
# partition) applies to the template as written only: the transform, run for one region,
# writes that region's partition into the ARNs it adds, as it does on deploy.
TRANSFORMED_TEMPLATE := target/template/transformed.json
template-lint:
	sam validate --lint --template-file template.yaml
	cfn-lint template.yaml --append-rules scripts/cfn-rules
	python scripts/sam-transform.py template.yaml $(TRANSFORMED_TEMPLATE)
	cfn-lint $(TRANSFORMED_TEMPLATE) --append-rules scripts/cfn-rules --ignore-checks E9107

shellcheck:
	shellcheck -x $(SHELL_SCRIPTS)

# The long chaos run (make test runs one seed against the fleet-facing services): prints a
# table of scenario steps, faults injected by kind, invariant violations and leaks, and
# writes target/chaos/report.json. Override CHAOS_SEEDS / CHAOS_RATE / CHAOS_SERVICES.
CHAOS_SEEDS ?= 7,19,31
CHAOS_RATE ?= 0.2
CHAOS_KINDS ?= throttle,5xx,timeout,drop
CHAOS_SERVICES ?= ec2,elasticloadbalancing,dynamodb,states,ssm,s3,secretsmanager,monitoring
chaos: build
	CHAOS_SEEDS=$(CHAOS_SEEDS) CHAOS_RATE=$(CHAOS_RATE) CHAOS_KINDS=$(CHAOS_KINDS) \
	  CHAOS_SERVICES=$(CHAOS_SERVICES) \
	  cargo test --workspace --test chaos -- --nocapture --test-threads=1

# Benchmarks (bench/): numbers, never pass/fail, never part of `make test`. The stripped
# release binaries are what startup, memory and size are measured on; their first build
# compiles the AWS SDK with the release profile (~15-25 min on 2 cores), later ones reuse it.
# The local-cloud operations run the debug build `make build` deploys. Writes bench-out/.
RELEASE_FUNCTIONS := -p api -p provision -p replication -p instance-events -p scaling -p alb-target -p backups
BENCH_ARGS ?=
bench: build
	env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo build --release $(RELEASE_FUNCTIONS)
	$(TARGET_DIR)/bench $(BENCH_ARGS)

# Regenerate the SSM documents in template.yaml after editing scripts/ssm/.
documents:
	cargo run --quiet --bin local-cloud -- render-documents --write

clean:
	rm -rf .aws-sam target
