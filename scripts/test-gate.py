#!/usr/bin/env python3
"""Runs the stages of `make test` (or `make check`) and ends with one summary.

Each stage is a target of the Makefile, run through `scripts/measure` (wall time, CPU time
and peak memory of everything it started), its output in `target/test-gate/logs/<stage>.log`.
The last stage runs every test binary with cargo-nextest (`.config/nextest.toml` says
which tests run side by side); its JUnit report gives each suite's result and time, and the
output of every test that failed is written to `target/test-gate/logs/<suite>/<test>.log`.

The gate does not stop at the first failure: every stage whose inputs exist runs, so one
run tells everything that is wrong. Only a failed compile skips what needs its binaries.

    scripts/test-gate.py [--nextest-profile P] STAGE...

Exit status 0 when every stage passed, 1 otherwise.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "target", "test-gate")
LOGS = os.path.join(OUT, "logs")
RECORD = os.path.join(OUT, "stages.jsonl")

# What each stage is, for the summary; the command is `make <stage>`.
STAGES = {
    "setup": "install pinned tools (skipped when present)",
    "fmt-check": "cargo fmt --check",
    "module-graph": "shared/ layering, no import cycle",
    "shellcheck": "every script sent over SSM or user data",
    "template-lint": "sam validate --lint, cfn-lint with the project's rules",
    "compile": "clippy -D warnings and the build, in one pass",
    "sam-build": "sam build (packages the binaries just built)",
    "tests": "every test binary (unit and end to end) with cargo-nextest",
}
# Stages that need the compiled binaries.
NEEDS_BINARIES = {"sam-build", "tests"}


def log(message):
    print(f"[gate {datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def run_stage(stage, env):
    path = os.path.join(LOGS, f"{stage}.log")
    started = time.monotonic()
    log(f"{stage}: {STAGES[stage]} (log: {os.path.relpath(path, ROOT)})")
    with open(path, "w") as out:
        rc = subprocess.call(
            [os.path.join(ROOT, "scripts", "measure"), RECORD, stage, "--",
             "make", "--no-print-directory", stage],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    log(f"{stage}: {'passed' if rc == 0 else f'FAILED (exit {rc})'} in "
        f"{time.monotonic() - started:.0f} s")
    if rc != 0:
        tail = open(path, errors="replace").read().splitlines()[-25:]
        print("\n".join("    " + line for line in tail), flush=True)
    return rc


def junit_path(profile):
    return os.path.join(ROOT, "target", "nextest", profile, "junit.xml")


def parse_time(text):
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


TEST_RECORD = os.path.join(OUT, "tests.jsonl")


def binary_key(suite):
    """The file name (without its hash) of the binary behind a JUnit suite name:
    `crate::bin/name` -> name, `crate::test` -> test, `crate` (its unit tests) -> crate with
    underscores."""
    if "::" not in suite:
        return suite.replace("-", "_")
    rest = suite.split("::", 1)[1]
    return rest.split("/", 1)[1] if rest.startswith("bin/") else rest


def test_costs():
    """(binary, test) -> the record scripts/measure-test wrote for that test process."""
    costs = {}
    if os.path.exists(TEST_RECORD):
        for line in open(TEST_RECORD):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            binary, _, test = entry["label"].partition(" ")
            costs[(binary, test)] = entry
    return costs


def suites(profile):
    """Per test binary: tests, failures, wall time (first start to last end), CPU time (of
    its tests' processes and everything they started), the largest peak memory of one of its
    tests, and the logs written for the tests that failed."""
    path = junit_path(profile)
    if not os.path.exists(path):
        return []
    costs = test_costs()
    found = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        name = suite.get("name", "?")
        cases = list(suite.iter("testcase"))
        starts, ends, failed_logs = [], [], []
        failed = 0
        cpu, peak, measured = 0.0, 0, 0
        for case in cases:
            cost = costs.get((binary_key(name), case.get("name", "")))
            if cost and cost.get("cpu_s") is not None:
                cpu += cost["cpu_s"]
                peak = max(peak, cost.get("peak_mib") or 0)
                measured += 1
            took = float(case.get("time") or 0)
            start = parse_time(case.get("timestamp"))
            if start is not None:
                starts.append(start)
                ends.append(start + took)
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is None:
                continue
            failed += 1
            directory = os.path.join(LOGS, safe(name))
            os.makedirs(directory, exist_ok=True)
            case_log = os.path.join(directory, safe(case.get("name", "test")) + ".log")
            with open(case_log, "w") as out:
                out.write(f"{name} {case.get('name')}: {problem.get('message', '')}\n")
                for part in ("system-out", "system-err"):
                    element = case.find(part)
                    if element is not None and element.text:
                        out.write(f"--- {part}\n{element.text}\n")
                if problem.text:
                    out.write(f"--- {problem.tag}\n{problem.text}\n")
            failed_logs.append(os.path.relpath(case_log, ROOT))
        if starts:
            wall = max(ends) - min(starts)
        else:
            wall = sum(float(c.get("time") or 0) for c in cases)
        found.append({
            "name": name, "tests": len(cases), "failed": failed, "wall_s": wall,
            "cpu_s": cpu if measured else None, "peak_mib": peak if measured else None,
            "logs": failed_logs,
        })
    return sorted(found, key=lambda s: s["name"])


def fmt(value, unit=""):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}"
    return f"{value}{unit}"


def summary(ran, skipped, profile, total):
    records = {}
    if os.path.exists(RECORD):
        for line in open(RECORD):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            records[entry["label"]] = entry
    rows = []
    failures = []
    for stage in ran:
        entry = records.get(stage, {})
        ok = entry.get("rc", 1) == 0
        rows.append((stage, "passed" if ok else "FAILED", entry.get("wall_s"),
                     entry.get("cpu_s"), entry.get("peak_mib"),
                     "" if ok else os.path.relpath(os.path.join(LOGS, f"{stage}.log"), ROOT)))
        if not ok:
            failures.append(stage)
        if stage == "tests":
            for suite in suites(profile):
                result = (f"{suite['tests'] - suite['failed']}/{suite['tests']} passed"
                          if not suite["failed"] else f"{suite['failed']}/{suite['tests']} FAILED")
                rows.append(("  " + suite["name"], result, suite["wall_s"], suite["cpu_s"],
                             suite["peak_mib"], ", ".join(suite["logs"])))
                if suite["failed"]:
                    failures.append(suite["name"])
    for stage in skipped:
        rows.append((stage, "skipped (compile failed)", None, None, None, ""))
        failures.append(stage)
    width = max(len(r[0]) for r in rows + [("stage / suite",)])
    print()
    print(f"{'stage / suite':<{width}}  {'result':<24} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9}  log")
    for name, result, wall, cpu, peak, where in rows:
        print(f"{name:<{width}}  {result:<24} {fmt(wall):>7} {fmt(cpu):>7} {fmt(peak):>9}  {where}")
    print(f"{'total':<{width}}  {'passed' if not failures else 'FAILED':<24} {total:>7.0f}")
    print("(a suite's wall time runs from its first test's start to its last test's end, beside"
          " other suites; its CPU time is its tests' processes and all they started; its peak"
          " is its largest test's)")
    if failures:
        print(f"\nfailed: {', '.join(failures)}; logs under {os.path.relpath(LOGS, ROOT)}/")
    print(f"(per-stage records: {os.path.relpath(RECORD, ROOT)}; "
          f"JUnit: {os.path.relpath(junit_path(profile), ROOT)})")
    return not failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nextest-profile", default="default",
                        help="the .config/nextest.toml profile the tests stage runs")
    parser.add_argument("stages", nargs="+", choices=list(STAGES))
    args = parser.parse_args()
    os.makedirs(LOGS, exist_ok=True)
    if os.path.exists(RECORD):
        os.remove(RECORD)
    junit = junit_path(args.nextest_profile)
    if os.path.exists(junit):
        os.remove(junit)
    env = dict(os.environ, NEXTEST_PROFILE=args.nextest_profile)
    started = time.monotonic()
    ran, skipped = [], []
    compiled = True
    for stage in args.stages:
        if stage in NEEDS_BINARIES and not compiled:
            skipped.append(stage)
            log(f"{stage}: skipped, the compile failed")
            continue
        rc = run_stage(stage, env)
        ran.append(stage)
        if stage == "compile" and rc != 0:
            compiled = False
    ok = summary(ran, skipped, args.nextest_profile, time.monotonic() - started)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
