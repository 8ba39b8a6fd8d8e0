//! Chaos: create, scale, heal and delete a cluster while the functions' AWS SDK sees
//! injected faults (`FaultInjection` -> `HA_FAULTS`, see `orchestrator::aws::faults`): throttling,
//! 5xx, timeouts and lost answers. After every step the invariants must hold:
//!
//! - the cluster converges to its spec (READY) or reports FAILED with a reason;
//! - when READY, the instances carrying its tag that are alive are exactly its nodes (no
//!   duplicate, no orphan), and its database nodes form one group with one PRIMARY;
//! - every instance ever launched with its tag is named in its action log (no mutating call
//!   the log cannot account for);
//! - after DELETE nothing is left: no instance, target group, alarm or secret.
//!
//! Faults include `crash`: a function process aborted right after one of its AWS calls
//! took effect (a kill at a random point), which the runtime reports as
//! `Runtime.ExitError` and the workflow retries.
//!
//! `make test` runs one seed against the fleet-facing services (EC2, ELBv2, Secrets Manager,
//! CloudWatch), whose callers the workflow retries. `make chaos` runs several seeds against
//! every service (`CHAOS_SEEDS`, `CHAOS_RATE`, `CHAOS_SERVICES`) and prints the table. The
//! test client retries the API's 5xx answers, as any AWS client would.
//!
//! Every seed must run every scenario step (create, scale, heal, delete) to its end (READY,
//! or DELETED for the delete): a step that ends FAILED or does not settle leaves the later
//! steps unrun (only the delete still runs, to check for leaks), and the test fails. The
//! table shows, per seed, each step's outcome and how long it took.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e_tests::{cluster_instances, deployed_with_agent_and, lose_instance, send_json_retrying};
use local_cloud::{LocalCloud, Stack};
use reqwest::Method;

const CREATE: &str = r#"{"name":"chaos","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;
const SETTLE: Duration = Duration::from_secs(900);
const ALIVE: [&str; 2] = ["pending", "running"];

struct Settings {
    seeds: Vec<u64>,
    rate: String,
    kinds: String,
    services: String,
}

fn settings() -> Settings {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    Settings {
        seeds: var("CHAOS_SEEDS", "7")
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("CHAOS_SEEDS: `{s}` is not a whole number"))
            })
            .collect(),
        rate: var("CHAOS_RATE", "0.2"),
        kinds: var("CHAOS_KINDS", "throttle,5xx,timeout,drop,crash"),
        services: var(
            "CHAOS_SERVICES",
            "ec2,elasticloadbalancing,secretsmanager,monitoring",
        ),
    }
}

/// The scenario every seed runs, in order.
const STEPS: [&str; 4] = ["create", "scale 2 -> 3", "heal a lost web node", "delete"];

/// One scenario step of one seed: how it ended and how long it took.
struct StepRun {
    seed: u64,
    step: &'static str,
    /// READY, DELETED, FAILED, or the phase it was stuck in.
    outcome: String,
    /// The end it aims at (READY; DELETED for the delete).
    reached: bool,
    seconds: u64,
    /// The cluster's `lastError` when it ended FAILED.
    reason: String,
}

#[derive(Default)]
struct Tally {
    steps: Vec<StepRun>,
    failed_with_reason: Vec<String>,
    violations: Vec<String>,
    leaks: Vec<String>,
    faults: BTreeMap<String, usize>,
    api_retries: usize,
    conflicts_resent: usize,
}

/// Any API call, retrying 5xx (up to 8 attempts), and resending a 409 `Conflict` (a
/// concurrent change, "send the request again") up to 5 times as its message asks;
/// returns status and JSON.
async fn api_call(
    tally: &mut Tally,
    method: Method,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut resent = 0;
    loop {
        let (status, json, retried) =
            send_json_retrying(method.clone(), url, body, headers, 8).await;
        tally.api_retries += retried;
        if status == 409 && json["error"]["code"] == "Conflict" && resent < 5 {
            eprintln!(
                "[chaos] {method} {url}: 409 {}; sending it again",
                json["error"]["message"]
            );
            resent += 1;
            tally.conflicts_resent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        return (status, json);
    }
}

/// Wait until the cluster is READY at `generation` or later, FAILED, or DELETED; past
/// [`SETTLE`] the cluster as it is (the caller reports it as not settled).
async fn settle(tally: &mut Tally, api: &str, id: &str, generation: u64) -> serde_json::Value {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    loop {
        let (status, cluster) = api_call(
            tally,
            Method::GET,
            &format!("{api}/clusters/{id}"),
            None,
            &[],
        )
        .await;
        assert_eq!(status, 200, "{cluster}");
        let phase = cluster["phase"].as_str().unwrap_or_default().to_string();
        let at = cluster["generation"].as_u64().unwrap_or_default();
        let now = format!("{phase}/{} g{at}", cluster["step"].as_str().unwrap_or("-"));
        if now != last {
            eprintln!("[chaos] {id}: {now}");
            last = now;
        }
        if phase == "FAILED" || phase == "DELETED" || (phase == "READY" && at >= generation) {
            return cluster;
        }
        if Instant::now() >= deadline {
            eprintln!("[chaos] {id} did not settle in {SETTLE:?}: {cluster:#}");
            return cluster;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every action of the cluster, read from the table (the API shows the latest 50).
async fn all_actions(cloud: &LocalCloud, stack: &Stack, id: &str) -> Vec<String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&cloud.sdk_config().await);
    let mut lines = Vec::new();
    let mut pages = dynamodb
        .query()
        .table_name(&stack.outputs["TableName"])
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ACTIONS#{id}")),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for item in page.expect("Query").items() {
            if let Some(data) = item.get("data").and_then(|d| d.as_s().ok()) {
                lines.push(data.clone());
            }
        }
    }
    lines
}

/// The invariants of a settled cluster; violations are pushed with `context`.
async fn check(
    tally: &mut Tally,
    cloud: &LocalCloud,
    stack: &Stack,
    cluster: &serde_json::Value,
    context: &str,
) {
    let id = cluster["id"].as_str().unwrap_or_default();
    let mut found = Vec::new();
    check_into(&mut found, tally, cloud, stack, cluster, id, context).await;
    tally
        .violations
        .extend(found.into_iter().map(|what| format!("{context}: {what}")));
}

async fn check_into(
    found: &mut Vec<String>,
    tally: &mut Tally,
    cloud: &LocalCloud,
    stack: &Stack,
    cluster: &serde_json::Value,
    id: &str,
    context: &str,
) {
    let mut violation = |what: String| found.push(what);
    match cluster["phase"].as_str().unwrap_or_default() {
        "READY" => {}
        "FAILED" => {
            let reason = cluster["lastError"]["message"].as_str().unwrap_or_default();
            if reason.is_empty() {
                violation(format!("FAILED without a reason: {cluster}"));
            } else {
                tally
                    .failed_with_reason
                    .push(format!("{context}: {reason}"));
            }
            return;
        }
        other => {
            violation(format!("settled in {other}"));
            return;
        }
    }
    let ec2 = aws_sdk_ec2::Client::new(&cloud.sdk_config().await);
    let nodes: BTreeSet<String> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["instanceId"].as_str().map(str::to_string))
        .collect();
    let alive: BTreeSet<String> = cluster_instances(&ec2, id, &ALIVE)
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    if alive != nodes {
        violation(format!(
            "alive tagged instances {alive:?} are not the nodes {nodes:?}"
        ));
    }
    let wanted = cluster["spec"]["web"]["count"].as_u64().unwrap_or_default()
        + cluster["spec"]["db"]["count"].as_u64().unwrap_or_default();
    if nodes.len() as u64 != wanted {
        violation(format!("{} nodes for a spec of {wanted}", nodes.len()));
    }
    let db: Vec<&serde_json::Value> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == "db")
        .collect();
    let groups: BTreeSet<&str> = db.iter().filter_map(|n| n["groupName"].as_str()).collect();
    let primaries = db.iter().filter(|n| n["role"] == "PRIMARY").count();
    if groups.len() != 1 || primaries != 1 {
        violation(format!("{} groups and {primaries} primaries", groups.len()));
    }
    let actions = all_actions(cloud, stack, id).await.join("\n");
    let ever = cluster_instances(
        &ec2,
        id,
        &[
            "pending",
            "running",
            "stopping",
            "stopped",
            "shutting-down",
            "terminated",
        ],
    )
    .await;
    for instance in ever.iter().filter_map(|i| i.instance_id()) {
        if !actions.contains(instance) {
            violation(format!(
                "{instance} carries the cluster's tag but no action names it"
            ));
        }
    }
}

/// After DELETE: nothing of the cluster may be left.
async fn leaks(cloud: &LocalCloud, id: &str) -> Vec<String> {
    let sdk = cloud.sdk_config().await;
    let mut left = Vec::new();
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    for instance in cluster_instances(&ec2, id, &e2e_tests::NOT_TERMINATED).await {
        left.push(format!(
            "instance {}",
            instance.instance_id().unwrap_or_default()
        ));
    }
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    if elbv2
        .describe_target_groups()
        .names(format!("ha-{id}"))
        .send()
        .await
        .is_ok_and(|o| !o.target_groups().is_empty())
    {
        left.push(format!("target group ha-{id}"));
    }
    let alarms = aws_sdk_cloudwatch::Client::new(&sdk)
        .describe_alarms()
        .alarm_name_prefix(format!("ha-{id}-"))
        .send()
        .await
        .expect("DescribeAlarms");
    for alarm in alarms.metric_alarms() {
        left.push(format!("alarm {}", alarm.alarm_name().unwrap_or_default()));
    }
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk)
        .list_secrets()
        .send()
        .await
        .expect("ListSecrets");
    for secret in secrets.secret_list() {
        let name = secret.name().unwrap_or_default();
        if name.contains(id) && secret.deleted_date().is_none() {
            left.push(format!("secret {name}"));
        }
    }
    left
}

/// Record how scenario step `step` (an entry of [`STEPS`]) of `seed` ended: it reached
/// its end when the cluster is READY at `generation` or later (DELETED for the delete).
fn record(
    tally: &mut Tally,
    seed: u64,
    step: &'static str,
    started: Instant,
    cluster: &serde_json::Value,
    generation: Option<u64>,
) {
    let phase = cluster["phase"].as_str().unwrap_or("?");
    let at = cluster["generation"].as_u64().unwrap_or_default();
    let reached = match generation {
        Some(wanted) => phase == "READY" && at >= wanted,
        None => phase == "DELETED",
    };
    let outcome = if reached || phase == "FAILED" {
        phase.to_string()
    } else {
        format!(
            "stuck {phase}/{} g{at}",
            cluster["step"].as_str().unwrap_or("-")
        )
    };
    tally.steps.push(StepRun {
        seed,
        step,
        reached,
        outcome,
        seconds: started.elapsed().as_secs(),
        reason: cluster["lastError"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    });
}

async fn run_seed(settings: &Settings, seed: u64, tally: &mut Tally) {
    let faults = format!(
        "rate={};seed={seed};kinds={};services={}",
        settings.rate, settings.kinds, settings.services
    );
    let (cloud, stack, _agent) = deployed_with_agent_and(
        &format!("chaos-{seed}"),
        &[
            ("FaultInjection", faults.as_str()),
            ("MembershipSurveySeconds", "86400"),
        ],
    )
    .await;
    let api = stack.api_url.clone().expect("ApiId output");
    let mut context = format!("seed {seed} {}", STEPS[0]);

    let started = Instant::now();
    let (status, created) = api_call(
        tally,
        Method::POST,
        &format!("{api}/clusters"),
        Some(CREATE),
        &[("idempotency-key", &format!("chaos-{seed}"))],
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let mut cluster = settle(tally, &api, &id, 1).await;
    record(tally, seed, STEPS[0], started, &cluster, Some(1));
    check(tally, &cloud, &stack, &cluster, &context).await;

    if tally.steps.last().is_some_and(|r| r.reached) {
        context = format!("seed {seed} {}", STEPS[1]);
        let started = Instant::now();
        let (status, answer) = api_call(
            tally,
            Method::PATCH,
            &format!("{api}/clusters/{id}"),
            Some(r#"{"web":{"count":3}}"#),
            &[],
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let generation = answer["generation"].as_u64().expect("generation");
        cluster = settle(tally, &api, &id, generation).await;
        record(tally, seed, STEPS[1], started, &cluster, Some(generation));
        check(tally, &cloud, &stack, &cluster, &context).await;
    }

    if tally.steps.last().is_some_and(|r| r.reached) {
        context = format!("seed {seed} {}", STEPS[2]);
        let started = Instant::now();
        let before = cluster["generation"].as_u64().unwrap_or_default();
        let victim = cluster["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["slot"] == "web-0")
            .and_then(|n| n["instanceId"].as_str())
            .expect("web-0")
            .to_string();
        lose_instance(&cloud, &victim).await;
        // The event's handler may itself have failed under faults (EventBridge does not
        // retry in the local cloud): the sweep is what catches that, as on AWS.
        let deadline = Instant::now() + Duration::from_secs(60);
        let give_up = Instant::now() + SETTLE;
        loop {
            let (_, now) = api_call(
                tally,
                Method::GET,
                &format!("{api}/clusters/{id}"),
                None,
                &[],
            )
            .await;
            if now["generation"].as_u64().unwrap_or_default() > before || Instant::now() > give_up {
                break;
            }
            if Instant::now() > deadline {
                let tick = e2e_tests::invoke_sweep(&cloud, &stack).await;
                eprintln!("[chaos] sweep: {:?}", tick.function_error);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        cluster = settle(tally, &api, &id, before + 1).await;
        record(tally, seed, STEPS[2], started, &cluster, Some(before + 1));
        check(tally, &cloud, &stack, &cluster, &context).await;
    }

    context = format!("seed {seed} {}", STEPS[3]);
    let started = Instant::now();
    let (status, answer) = api_call(
        tally,
        Method::DELETE,
        &format!("{api}/clusters/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let gone = settle(tally, &api, &id, u64::MAX).await;
    record(tally, seed, STEPS[3], started, &gone, None);
    if gone["phase"] != "DELETED" {
        tally.violations.push(format!(
            "{context}: ended {} instead of DELETED: {gone}",
            gone["phase"]
        ));
    }
    for leak in leaks(&cloud, &id).await {
        tally.leaks.push(format!("{context}: {leak}"));
    }

    // The seed's row now: dropping `cloud` below runs the IAM coverage check, which may
    // panic before the whole table is printed.
    let row: Vec<String> = tally
        .steps
        .iter()
        .filter(|r| r.seed == seed)
        .map(|r| format!("{} {} in {} s", r.step, r.outcome, r.seconds))
        .collect();
    eprintln!("[chaos] seed {seed}: {}", row.join("; "));

    let logs = cloud.function_logs();
    for line in logs.lines().filter(|l| l.contains("fault injected")) {
        let field = |name: &str| {
            line.split(&format!("\"{name}\":\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("?")
                .to_string()
        };
        *tally
            .faults
            .entry(format!("{} {}", field("service"), field("kind")))
            .or_default() += 1;
    }
}

#[tokio::test]
async fn the_fleet_stays_consistent_under_injected_faults() {
    let settings = settings();
    let mut tally = Tally::default();
    for seed in &settings.seeds {
        run_seed(&settings, *seed, &mut tally).await;
    }
    let injected: usize = tally.faults.values().sum();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, count) in &tally.faults {
        *by_kind
            .entry(key.rsplit(' ').next().unwrap_or("?"))
            .or_default() += count;
    }
    // Every seed's every step: how it ended, or that it never ran.
    let mut per_seed = Vec::new();
    let mut unfinished = Vec::new();
    for seed in &settings.seeds {
        let mut cells = Vec::new();
        for step in STEPS {
            let run = tally
                .steps
                .iter()
                .find(|r| r.seed == *seed && r.step == step);
            match run {
                Some(run) => {
                    cells.push(format!("{} in {} s", run.outcome, run.seconds));
                    if !run.reached {
                        unfinished.push(format!(
                            "seed {seed} {step}: {} {}",
                            run.outcome, run.reason
                        ));
                    }
                }
                None => {
                    cells.push("not run".to_string());
                    unfinished.push(format!("seed {seed} {step}: not run"));
                }
            }
        }
        per_seed.push((*seed, cells));
    }
    let table = serde_json::json!({
        "seeds": settings.seeds,
        "rate": settings.rate,
        "kinds": settings.kinds,
        "services": settings.services,
        "scenarioSteps": tally.steps.len(),
        "scenarioStepsPlanned": settings.seeds.len() * STEPS.len(),
        "steps": tally.steps.iter().map(|r| serde_json::json!({
            "seed": r.seed,
            "step": r.step,
            "outcome": r.outcome,
            "reachedItsEnd": r.reached,
            "seconds": r.seconds,
            "reason": r.reason,
        })).collect::<Vec<_>>(),
        "stepsNotRunToTheirEnd": unfinished,
        "faultsInjected": injected,
        "faultsByKind": by_kind,
        "faultsByServiceAndKind": tally.faults,
        "apiRetries": tally.api_retries,
        "apiConflictsResent": tally.conflicts_resent,
        "failedWithReason": tally.failed_with_reason,
        "invariantViolations": tally.violations,
        "resourcesLeaked": tally.leaks,
    });
    println!(
        "\nchaos: seeds {:?}, rate {}, kinds {}, services {}",
        settings.seeds, settings.rate, settings.kinds, settings.services
    );
    println!("\n| seed | {} |", STEPS.join(" | "));
    println!("|---:|{}", "---|".repeat(STEPS.len()));
    for (seed, cells) in &per_seed {
        println!("| {seed} | {} |", cells.join(" | "));
    }
    println!();
    println!(
        "{:<34} {:>8}",
        "scenario steps run",
        format!(
            "{} of {}",
            tally.steps.len(),
            settings.seeds.len() * STEPS.len()
        )
    );
    for (kind, count) in &by_kind {
        println!("{:<34} {:>8}", format!("faults injected: {kind}"), count);
    }
    println!("{:<34} {:>8}", "faults injected (all)", injected);
    println!(
        "{:<34} {:>8}",
        "API 5xx retried by the client", tally.api_retries
    );
    println!(
        "{:<34} {:>8}",
        "API 409 Conflict resent", tally.conflicts_resent
    );
    println!(
        "{:<34} {:>8}",
        "steps ended FAILED with a reason",
        tally.failed_with_reason.len()
    );
    println!(
        "{:<34} {:>8}",
        "invariant violations",
        tally.violations.len()
    );
    println!("{:<34} {:>8}", "resources leaked", tally.leaks.len());
    let out = local_cloud::project_root().join("target/chaos");
    std::fs::create_dir_all(&out).expect("target/chaos");
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&table).expect("json"),
    )
    .expect("write the report");
    println!("report: {}", out.join("report.json").display());
    assert!(
        injected > 0,
        "no fault was injected: the run proves nothing"
    );
    assert!(tally.violations.is_empty(), "{:#?}", tally.violations);
    assert!(tally.leaks.is_empty(), "{:#?}", tally.leaks);
    assert!(
        unfinished.is_empty(),
        "not every seed ran every scenario step to its end: {unfinished:#?}"
    );
}
