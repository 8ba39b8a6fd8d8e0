//! The bench's results: the printed table, the targets (met / not met), `report.json` and
//! the chart `startup.svg`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::operations::{OperationStats, Reactions};
use crate::startup::FunctionStartup;
use crate::sweep::SweepFigures;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: (memory_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub value: f64,
    pub limit: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub runs: usize,
    pub functions: Vec<FunctionStartup>,
    pub operations: Vec<OperationStats>,
    pub reactions: Option<Reactions>,
    pub sweeps: Vec<SweepFigures>,
    pub targets: Vec<Target>,
}

const MB: f64 = 1024.0 * 1024.0;

/// The issue's targets, checked against what was measured (absent parts are not checked).
pub fn targets(
    functions: &[FunctionStartup],
    operations: &[OperationStats],
    reactions: Option<&Reactions>,
    sweeps: &[SweepFigures],
) -> Vec<Target> {
    let mut targets = Vec::new();
    let mut check = |name: String, value: f64, limit: &str, met: bool| {
        targets.push(Target {
            name,
            value,
            limit: limit.to_string(),
            met,
        });
    };
    for f in functions {
        let cold = f.rust.cold_start_ms.median;
        check(
            format!("{} cold start median (ms)", f.function),
            cold,
            "< 50",
            cold < 50.0,
        );
        let rss = f.rust.peak_rss_mb.max;
        check(
            format!("{} peak RSS (MB)", f.function),
            rss,
            "< 40",
            rss < 40.0,
        );
        let size = f.binary_bytes as f64 / MB;
        check(
            format!("{} binary, stripped (MB)", f.function),
            size,
            "< 15",
            size < 15.0,
        );
        check(
            format!("{} init vs Python/boto3 (x faster)", f.function),
            f.init_ratio,
            ">= 30",
            f.init_ratio >= 30.0,
        );
    }
    if let Some(create) = operations.iter().find(|o| o.name.starts_with("create")) {
        let transitions = create.state_transitions as f64;
        check(
            "state transitions, create 2 web + 3 db".into(),
            transitions,
            "<= 60",
            transitions <= 60.0,
        );
    }
    if let Some(reactions) = reactions {
        for (name, summary) in [
            (
                "reaction EC2 event -> RunInstances, median (ms)",
                &reactions.ec2_terminated_to_run_instances_ms,
            ),
            (
                "reaction SSM event -> workflow resumed, median (ms)",
                &reactions.ssm_status_to_workflow_resumed_ms,
            ),
        ] {
            check(
                name.into(),
                summary.median,
                "< 2000",
                summary.n > 0 && summary.median < 2000.0,
            );
        }
    }
    if let Some(largest) = sweeps.iter().map(|s| s.clusters).max() {
        for sweep in sweeps.iter().filter(|s| s.clusters == largest) {
            check(
                format!("sweep of {largest} clusters ({}), wall (s)", sweep.sweep),
                sweep.wall_seconds,
                "< 30",
                sweep.wall_seconds < 30.0,
            );
            check(
                format!(
                    "sweep of {largest} clusters ({}), Describe calls",
                    sweep.sweep
                ),
                sweep.describe_calls as f64,
                "< 150",
                sweep.describe_calls < 150,
            );
        }
    }
    targets
}

/// A titled Markdown table, then a blank line.
fn markdown(out: &mut String, title: &str, headers: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(
        out,
        "{title}\n\n| {} |\n|{}",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    // A blank line ends the table: the detail lines below it are not rows.
    out.push('\n');
}

/// `key count` pairs of a call map, for the detail line under a table.
fn call_list(calls: &std::collections::BTreeMap<String, usize>) -> String {
    calls
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole report as the terminal shows it (and the README quotes it).
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "Machine: {} ({} cores, {} GiB), {}\nCommand: {}\n",
        m.cpu, m.cores, m.memory_gib, m.os, report.command
    );
    if !report.functions.is_empty() {
        let warm = report.functions.first().map_or(0, |f| f.rust.warm_ms.n);
        markdown(
            &mut out,
            &format!(
                "Startup ({} cold starts each; warm = {warm} events to the last process)",
                report.runs
            ),
            &[
                "function",
                "binary MB",
                "init ms p50/p95",
                "cold start ms p50/p95",
                "peak RSS MB",
                "warm ms p50",
                "Python init ms p50",
                "Python cold ms p50",
                "Python RSS MB",
                "init ratio",
            ],
            report
                .functions
                .iter()
                .map(|f| {
                    vec![
                        f.function.clone(),
                        format!("{:.1}", f.binary_bytes as f64 / MB),
                        format!("{:.1} / {:.1}", f.rust.init_ms.median, f.rust.init_ms.p95),
                        format!(
                            "{:.1} / {:.1}",
                            f.rust.cold_start_ms.median, f.rust.cold_start_ms.p95
                        ),
                        format!("{:.1}", f.rust.peak_rss_mb.max),
                        format!("{:.2}", f.rust.warm_ms.median),
                        format!("{:.0}", f.python.init_ms.median),
                        format!("{:.0}", f.python.cold_start_ms.median),
                        format!("{:.1}", f.python.peak_rss_mb.max),
                        format!("{:.0}x", f.init_ratio),
                    ]
                })
                .collect(),
        );
        for f in &report.functions {
            let calls = if f.first_calls.is_empty() {
                "no AWS call".to_string()
            } else {
                f.first_calls.join(", ")
            };
            let error = if f.rust.answered_with_error {
                " (answered with an error document)"
            } else {
                ""
            };
            let peer = if f.same_calls {
                "the peer makes the same"
            } else {
                "THE PEER MAKES OTHER CALLS"
            };
            let _ = writeln!(
                out,
                "  {}: the event makes {calls}{error}; {peer}",
                f.function
            );
        }
        out.push('\n');
    }
    if !report.operations.is_empty() {
        markdown(
            &mut out,
            "Per operation (local cloud; bill = the orchestration at us-east-1 list prices)",
            &[
                "operation",
                "wall s",
                "AWS calls",
                "mutating",
                "executions",
                "state transitions",
                "Lambda invocations",
                "handler ms",
                "DynamoDB RRU/WRU",
                "bill USD",
            ],
            report
                .operations
                .iter()
                .map(|o| {
                    vec![
                        o.name.clone(),
                        format!("{:.1}", o.wall_seconds),
                        o.total_calls.to_string(),
                        o.mutating_calls.to_string(),
                        o.executions.to_string(),
                        o.state_transitions.to_string(),
                        o.total_invocations.to_string(),
                        format!("{:.0}", o.handler_ms),
                        format!("{}/{}", o.dynamodb.read_units, o.dynamodb.write_units),
                        format!("{:.6}", o.bill.total_usd),
                    ]
                })
                .collect(),
        );
        for o in &report.operations {
            let _ = writeln!(out, "  {}: {}", o.name, call_list(&o.calls));
        }
        out.push('\n');
    }
    if let Some(r) = &report.reactions {
        let rows = [
            (
                "EC2 terminated event -> replacement RunInstances",
                &r.ec2_terminated_to_run_instances_ms,
            ),
            (
                "SSM status event -> workflow resumed",
                &r.ssm_status_to_workflow_resumed_ms,
            ),
        ]
        .iter()
        .map(|(name, s)| {
            vec![
                name.to_string(),
                s.n.to_string(),
                format!("{:.0}", s.median),
                format!("{:.0}", s.p95),
                format!("{:.0}", s.max),
            ]
        })
        .collect();
        markdown(
            &mut out,
            "Reaction times",
            &["path", "runs", "median ms", "p95 ms", "max ms"],
            rows,
        );
        out.push('\n');
    }
    if !report.sweeps.is_empty() {
        markdown(
            &mut out,
            "Sweep scale",
            &[
                "clusters",
                "nodes",
                "sweep",
                "wall s",
                "AWS calls",
                "Describe calls",
                "read calls",
            ],
            report
                .sweeps
                .iter()
                .map(|s| {
                    vec![
                        s.clusters.to_string(),
                        s.nodes.to_string(),
                        s.sweep.clone(),
                        format!("{:.2}", s.wall_seconds),
                        s.total_calls.to_string(),
                        s.describe_calls.to_string(),
                        s.read_calls.to_string(),
                    ]
                })
                .collect(),
        );
        for s in &report.sweeps {
            let _ = writeln!(
                out,
                "  {} clusters, {}: {}",
                s.clusters,
                s.sweep,
                call_list(&s.calls)
            );
        }
        if report.sweeps.iter().any(|s| s.clusters > 99) {
            let _ = writeln!(
                out,
                "  Note: more than 99 clusters on one load balancer is not a layout AWS accepts \
                 (100 target groups per ALB, not adjustable; the API refuses a create beyond \
                 MaxClusters). The fleet is seeded past the API to measure the sweep's reads, \
                 which grow the same way over several stacks."
            );
        }
        out.push('\n');
    }
    markdown(
        &mut out,
        "Targets",
        &["target", "measured", "limit", "verdict"],
        report
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    format!("{:.1}", t.value),
                    t.limit.clone(),
                    if t.met { "met" } else { "NOT MET" }.to_string(),
                ]
            })
            .collect(),
    );
    out
}

/// Initialisation and cold start per function, Rust beside Python/boto3 (log scale, so
/// both fit), as a small SVG.
pub fn chart(functions: &[FunctionStartup]) -> String {
    let row = 46.0;
    let left = 190.0;
    let width = 760.0;
    let plot = width - left - 90.0;
    let height = 70.0 + row * functions.len() as f64;
    let max = functions
        .iter()
        .map(|f| f.python.cold_start_ms.median.max(f.python.init_ms.median))
        .fold(10.0_f64, f64::max);
    // log10 scale from 1 ms to `max`.
    let x = |ms: f64| left + plot * (ms.max(1.0).log10() / max.log10());
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">Initialisation, median of the cold starts (ms, log scale)</text>
<rect x="{left}" y="30" width="12" height="12" fill="#d9534f"/><text x="{}" y="41">Rust (lambda_runtime + aws-sdk)</text>
<rect x="{}" y="30" width="12" height="12" fill="#5b7fbf"/><text x="{}" y="41">Python 3 + boto3 peer</text>
"##,
        left + 16.0,
        left + 250.0,
        left + 266.0
    );
    for (i, f) in functions.iter().enumerate() {
        let y = 56.0 + row * i as f64;
        let rust = f.rust.init_ms.median;
        let python = f.python.init_ms.median;
        let _ = write!(
            svg,
            r##"<text x="10" y="{}">{}</text>
<rect x="{left}" y="{y}" width="{:.1}" height="16" fill="#d9534f"/><text x="{:.1}" y="{}">{rust:.1} ms</text>
<rect x="{left}" y="{}" width="{:.1}" height="16" fill="#5b7fbf"/><text x="{:.1}" y="{}">{python:.0} ms ({:.0}x)</text>
"##,
            y + 20.0,
            f.function,
            (x(rust) - left).max(1.0),
            x(rust) + 4.0,
            y + 12.0,
            y + 18.0,
            (x(python) - left).max(1.0),
            x(python) + 4.0,
            y + 30.0,
            f.init_ratio,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::RuntimeFigures;
    use crate::stats::Summary;

    fn figures(init: f64, cold: f64, rss: f64) -> RuntimeFigures {
        RuntimeFigures {
            init_ms: Summary::of([init]),
            cold_start_ms: Summary::of([cold]),
            peak_rss_mb: Summary::of([rss]),
            warm_ms: Summary::of([1.0]),
            answered_with_error: false,
        }
    }

    fn function(name: &str, mb: f64, init: f64, cold: f64, rss: f64) -> FunctionStartup {
        FunctionStartup {
            function: name.into(),
            binary_bytes: (mb * MB) as u64,
            first_calls: vec!["dynamodb:GetItem".into()],
            same_calls: true,
            rust: figures(init, cold, rss),
            python: figures(init * 40.0, cold * 10.0, 80.0),
            init_ratio: 40.0,
            cold_start_ratio: 10.0,
        }
    }

    #[test]
    fn every_target_is_judged_against_its_limit() {
        let good = function("Good", 7.0, 5.0, 20.0, 12.0);
        let mut bad = function("Bad", 16.0, 5.0, 60.0, 45.0);
        bad.init_ratio = 12.0;
        let sweeps = vec![SweepFigures {
            clusters: 1000,
            nodes: 5000,
            sweep: "first".into(),
            wall_seconds: 31.0,
            total_calls: 1200,
            describe_calls: 6,
            read_calls: 1100,
            calls: Default::default(),
        }];
        let targets = targets(&[good, bad], &[], None, &sweeps);
        let verdict = |name: &str| {
            targets
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("no target {name}"))
                .met
        };
        assert!(verdict("Good cold start median (ms)"));
        assert!(verdict("Good peak RSS (MB)"));
        assert!(verdict("Good binary, stripped (MB)"));
        assert!(verdict("Good init vs Python/boto3 (x faster)"));
        assert!(!verdict("Bad cold start median (ms)"));
        assert!(!verdict("Bad peak RSS (MB)"));
        assert!(!verdict("Bad binary, stripped (MB)"));
        assert!(!verdict("Bad init vs Python/boto3 (x faster)"));
        assert!(!verdict("sweep of 1000 clusters (first), wall (s)"));
        assert!(verdict("sweep of 1000 clusters (first), Describe calls"));
        assert_eq!(
            targets.len(),
            10,
            "no operation or reaction targets without their figures"
        );
    }

    #[test]
    fn the_chart_has_a_bar_pair_per_function() {
        let svg = chart(&[
            function("A", 7.0, 5.0, 20.0, 12.0),
            function("B", 7.0, 8.0, 20.0, 12.0),
        ]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("fill=\"#d9534f\"").count(),
            3,
            "legend + 2 Rust bars"
        );
        assert!(svg.contains(">A</text>") && svg.contains(">B</text>"));
    }
}
