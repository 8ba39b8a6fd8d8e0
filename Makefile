# The two commands of this project: `make run` and `make test`. Both install what they
# need (scripts/setup.sh: pinned, cached, skipped when present).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
TARGET_DIR := $(CURDIR)/target/x86_64-unknown-linux-gnu/debug
export PATH := $(VENV)/bin:$(PATH)
export HA_TOOLS_DIR ?= $(HOME)/.cache/ha-orchestrator/tools
export SAM_CLI_TELEMETRY := 0
# sam build runs cargo-lambda: plain cargo (no zig) and the dev profile, so it reuses
# exactly what `cargo build`/`cargo test` compiled. `sam build` without these (as in the
# README's AWS deploy) makes optimised release binaries.
export CARGO_LAMBDA_COMPILER := cargo
LOCAL_SAM_BUILD := SAM_BUILD_MODE=debug sam build

SHELL_SCRIPTS := $(shell git ls-files '*.sh' '*.bash' .ci/run tests/fakes local-cloud/standins local-cloud/hosts | grep -v '\.sql$$' 2>/dev/null)

.PHONY: bench chaos documents help setup build run test lint fmt-check clippy template-lint shellcheck module-graph unit-and-e2e clean

help:
	@echo "make run   - deploy the stack into the local cloud and show it answering"
	@echo "make test  - every check and test (what CI runs)"
	@echo "make chaos - the long chaos run: several seeds, faults on every AWS service"
	@echo "make bench - benchmarks: startup vs Python/boto3, cost per operation, reactions, sweep scale"

setup:
	@scripts/setup.sh

# Compile once for everything: tests, the harness, and the Lambda binaries sam packages.
build: setup
	cargo build --workspace --all-targets
	$(LOCAL_SAM_BUILD)

run: build
	$(TARGET_DIR)/local-cloud demo

test: setup lint build unit-and-e2e

lint: fmt-check clippy template-lint shellcheck module-graph

fmt-check:
	cargo fmt --all --check

# shared/src keeps three layers without an import cycle: domain <- aws <- tasks.
module-graph:
	python3 scripts/module-graph.py

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

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

# Same package selection (--workspace) in every cargo call keeps one feature resolution,
# so nothing is recompiled between the steps.
unit-and-e2e:
	cargo test --workspace --lib --bins
	cargo test --workspace --test '*' -- --nocapture --test-threads=1

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
	cargo build --release $(RELEASE_FUNCTIONS)
	$(TARGET_DIR)/bench $(BENCH_ARGS)

# Regenerate the SSM documents in template.yaml after editing scripts/ssm/.
documents:
	cargo run --quiet --bin local-cloud -- render-documents --write

clean:
	rm -rf .aws-sam target
