//! Sweep scale: clusters of 2 web + 3 db nodes seeded into the local cloud (table records
//! written through the orchestrator's own store, instances in EC2, a target group with its
//! web targets and a listener rule each, and the ALB health metrics CloudWatch would hold),
//! then the deployed sweep invoked and its AWS calls counted. Measured at growing fleet
//! sizes, so the growth of the calls is visible: it must follow clusters / 100, not nodes.
//!
//! Not a layout AWS accepts beyond 99 clusters: one load balancer holds at most 100 target
//! groups (not adjustable) and its listeners 100 rules by default, and the API refuses a
//! create beyond `MaxClusters` (at most 99). The seeding writes past the API on purpose, so
//! the local cloud holds 1,000 clusters on one load balancer: what is measured is the
//! sweep's reads, which grow the same way across several stacks of 99 each. The report
//! says so next to the figures.
//!
//! Each size is swept twice in a row. Clusters never surveyed are due a membership survey
//! (one SSM command each); a sweep sends at most `MAX_SURVEYS_PER_SWEEP` (200), so at 100
//! clusters the second sweep sends none, and at 1,000 both send 200.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use local_cloud::{LocalCloud, Stack};
use orchestrator::aws::health_metrics::{HEALTHY, NAMESPACE, UNHEALTHY, load_balancer_dimension};
use orchestrator::aws::store::{ClusterStore, Fence};
use orchestrator::aws::targets::{TargetSettings, WebTargets};
use orchestrator::domain::cluster::{Node, NodeState, Phase, Tier};
use orchestrator::domain::spec::ClusterSpec;
use serde::Serialize;

use crate::logs::LogCursor;
use crate::{BenchError, Result};

const WEB: usize = 2;
const DB: usize = 3;
/// Seeding runs this many clusters at once.
const SEED_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct SweepFigures {
    pub clusters: usize,
    pub nodes: usize,
    /// `first` or `second` sweep of this fleet size.
    pub sweep: String,
    pub wall_seconds: f64,
    pub total_calls: usize,
    /// EC2 and ELBv2 Describe calls.
    pub describe_calls: usize,
    /// Every call that only reads (Describe, GetMetricData, DynamoDB Query/GetItem, ...).
    pub read_calls: usize,
    pub calls: BTreeMap<String, usize>,
}

#[derive(Clone)]
struct Seeder {
    store: ClusterStore,
    targets: WebTargets,
    ec2: aws_sdk_ec2::Client,
}

pub async fn measure(
    cloud: &LocalCloud,
    stack: &Stack,
    sizes: &[usize],
) -> Result<Vec<SweepFigures>> {
    let sdk = cloud.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let env: HashMap<String, String> =
        crate::startup::function_env(cloud, stack, &lambda, "InstanceEventsFunction")
            .await?
            .into_iter()
            .collect();
    let settings = TargetSettings::from_lookup(|k| env.get(k).cloned())
        .map_err(|e| BenchError::Setup(format!("instance-events settings: {e}")))?;
    let load_balancer = load_balancer_dimension(&settings.listener_arn).ok_or_else(|| {
        BenchError::Setup(format!("no load balancer in {}", settings.listener_arn))
    })?;
    let table = env
        .get("TABLE_NAME")
        .cloned()
        .ok_or_else(|| BenchError::Setup("instance-events has no TABLE_NAME".into()))?;
    let seeder = Seeder {
        store: ClusterStore::new(aws_sdk_dynamodb::Client::new(&sdk), table),
        targets: WebTargets::new(aws_sdk_elasticloadbalancingv2::Client::new(&sdk), settings),
        ec2: aws_sdk_ec2::Client::new(&sdk),
    };
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let mut groups: Vec<String> = Vec::new();
    let mut figures = Vec::new();
    for &size in sizes {
        let started = Instant::now();
        let new = seed(&seeder, groups.len(), size.saturating_sub(groups.len())).await?;
        groups.extend(new);
        put_health_metrics(&cloudwatch, &groups, &load_balancer).await?;
        eprintln!(
            "[bench] seeded {} clusters ({} nodes) in {:.1} s",
            groups.len(),
            groups.len() * (WEB + DB),
            started.elapsed().as_secs_f64()
        );
        for sweep in ["first", "second"] {
            figures.push(sweep_once(cloud, stack, groups.len(), sweep).await?);
        }
    }
    Ok(figures)
}

async fn sweep_once(
    cloud: &LocalCloud,
    stack: &Stack,
    clusters: usize,
    sweep: &str,
) -> Result<SweepFigures> {
    let cursor = LogCursor::now(cloud);
    let started = Instant::now();
    let answer = cloud
        .invoke(
            stack,
            "InstanceEventsFunction",
            &e2e_tests::sample_event("schedule-sweep.json"),
        )
        .await
        .map_err(|e| BenchError::Run(e.to_string()))?;
    let wall_seconds = started.elapsed().as_secs_f64();
    if let Some(error) = answer.function_error {
        return Err(BenchError::Run(format!(
            "the sweep of {clusters} clusters failed ({error}): {}",
            answer.payload
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let activity = cursor.activity_since(cloud, stack);
    let calls: Vec<_> = activity
        .calls
        .iter()
        .filter(|c| c.function == "InstanceEventsFunction")
        .collect();
    let figures = SweepFigures {
        clusters,
        nodes: clusters * (WEB + DB),
        sweep: sweep.to_string(),
        wall_seconds,
        total_calls: calls.len(),
        describe_calls: calls
            .iter()
            .filter(|c| c.operation.starts_with("Describe"))
            .count(),
        read_calls: calls.iter().filter(|c| c.is_read()).count(),
        calls: crate::logs::count_by_operation(calls.iter().copied()),
    };
    eprintln!(
        "[bench] {sweep} sweep of {clusters} clusters: {wall_seconds:.2} s, {} calls, {} Describe: {:?}",
        figures.total_calls, figures.describe_calls, figures.calls
    );
    Ok(figures)
}

/// Seed `count` READY clusters numbered from `first`; returns their target group ARNs.
async fn seed(seeder: &Seeder, first: usize, count: usize) -> Result<Vec<String>> {
    let numbers: Vec<usize> = (first..first + count).collect();
    orchestrator::concurrency::bounded(numbers, SEED_CONCURRENCY, |n| {
        let seeder = seeder.clone();
        async move { seed_one(&seeder, n).await }
    })
    .await
}

/// One cluster, written as a finished create run writes it.
async fn seed_one(seeder: &Seeder, n: usize) -> Result<String> {
    let id = format!("c-{:012x}", 0xbe00_0000_0000_usize + n);
    let name = format!("bench{n}");
    let fail =
        |what: &str, e: &dyn std::fmt::Display| BenchError::Run(format!("seed {id}: {what}: {e}"));
    let body = format!(
        r#"{{"name":"{name}","web":{{"count":{WEB},"instanceType":"t3.small"}},"db":{{"count":{DB},"instanceType":"r6i.large"}}}}"#
    );
    let spec = ClusterSpec::from_request_body(body.as_bytes()).map_err(|e| fail("spec", &e))?;
    seeder
        .store
        .create_cluster(&id, &spec)
        .await
        .map_err(|e| fail("create", &e))?;
    let token = seeder
        .store
        .acquire_lease(&id, "bench-seed", 1)
        .await
        .map_err(|e| fail("lease", &e))?;
    let fence = Fence {
        token,
        generation: 1,
    };
    let launched = seeder
        .ec2
        .run_instances()
        .image_id("ami-0bench0000000000")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
        .min_count((WEB + DB) as i32)
        .max_count((WEB + DB) as i32)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(orchestrator::aws::fleet::TAG_CLUSTER)
                        .value(&id)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| fail("RunInstances", &format!("{e:?}")))?;
    let instances: Vec<String> = launched
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    if instances.len() != WEB + DB {
        return Err(fail(
            "RunInstances",
            &format!("{} instances", instances.len()),
        ));
    }
    let group = seeder
        .targets
        .ensure_target_group(&id)
        .await
        .map_err(|e| fail("target group", &e))?;
    seeder
        .targets
        .register(&group, &instances[..WEB])
        .await
        .map_err(|e| fail("register", &e))?;
    seeder
        .targets
        .create_listener_rule(&group, &name, 1000 + n as i32)
        .await
        .map_err(|e| fail("listener rule", &e))?;
    seeder
        .store
        .record_target_group(&id, fence, &group)
        .await
        .map_err(|e| fail("record target group", &e))?;
    for (index, instance_id) in instances.iter().enumerate() {
        let (tier, slot, role) = if index < WEB {
            (Tier::Web, format!("web-{index}"), None)
        } else {
            let role = if index == WEB { "PRIMARY" } else { "SECONDARY" };
            (
                Tier::Db,
                format!("db-{}", index - WEB),
                Some(role.to_string()),
            )
        };
        let node = Node {
            slot,
            tier,
            instance_id: Some(instance_id.clone()),
            state: NodeState::Healthy,
            availability_zone: None,
            subnet_id: None,
            target_health: (tier == Tier::Web).then(|| "healthy".to_string()),
            member_state: role.as_ref().map(|_| "ONLINE".to_string()),
            role,
            host: None,
            group_name: None,
            launch_token: None,
            updated_at: "2026-11-24T00:00:00Z".into(),
        };
        seeder
            .store
            .put_node(&id, fence, &node)
            .await
            .map_err(|e| fail("node", &e))?;
    }
    seeder
        .store
        .finish_run(&id, fence, Phase::Ready, None)
        .await
        .map_err(|e| fail("finish", &e))?;
    Ok(group)
}

/// What the ALB publishes every minute: every web target healthy, none unhealthy.
async fn put_health_metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    groups: &[String],
    load_balancer: &str,
) -> Result<()> {
    let now = orchestrator::domain::cluster::epoch_seconds();
    let mut data = Vec::new();
    for group in groups {
        let Some(target_group) = orchestrator::aws::alarms::target_group_dimension(group) else {
            continue;
        };
        for (metric, value) in [(HEALTHY, WEB as f64), (UNHEALTHY, 0.0)] {
            for minutes_ago in [2, 1] {
                data.push(
                    MetricDatum::builder()
                        .metric_name(metric)
                        .dimensions(
                            Dimension::builder()
                                .name("TargetGroup")
                                .value(target_group)
                                .build(),
                        )
                        .dimensions(
                            Dimension::builder()
                                .name("LoadBalancer")
                                .value(load_balancer)
                                .build(),
                        )
                        .timestamp(aws_smithy_types::DateTime::from_secs(
                            now - 60 * minutes_ago,
                        ))
                        .value(value)
                        .unit(StandardUnit::Count)
                        .build(),
                );
            }
        }
    }
    for chunk in data.chunks(1000) {
        cloudwatch
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| BenchError::Run(format!("PutMetricData: {e:?}")))?;
    }
    Ok(())
}
