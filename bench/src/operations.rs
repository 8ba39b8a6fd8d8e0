//! Per operation in the local cloud (create 2 web + 3 db, heal a web node, heal the
//! database PRIMARY, scale out by one, delete): the AWS calls the functions made by service
//! and operation, how many changed something, Step Functions state transitions, Lambda
//! invocations, summed handler time, DynamoDB units and the bill at list prices. Then the
//! reaction times: an EC2 "terminated" event published -> the replacement's RunInstances
//! sent, and an SSM status event published -> the workflow resumed (SendTaskSuccess or
//! SendTaskFailure answered).
//!
//! The bench waits by reading the table directly, not through the API, so its own polling
//! adds no API invocations or DynamoDB reads to what is counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use local_cloud::agent::SsmAgent;
use local_cloud::{LocalCloud, Stack};
use orchestrator::aws::store::ClusterStore;
use orchestrator::domain::cluster::{Cluster, Node, Phase, Tier};
use reqwest::Method;
use serde::Serialize;

use crate::logs::{Activity, LogCursor};
use crate::pricing::{Bill, DynamoUnits, bill, dynamodb_units};
use crate::stats::Summary;
use crate::{BenchError, Result};

pub const CREATE_BODY: &str = r#"{"name":"bench","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize)]
pub struct OperationStats {
    pub name: String,
    pub wall_seconds: f64,
    pub api_requests: u64,
    /// `service:Operation` -> calls, every attempt counted (what AWS bills and throttles).
    pub calls: BTreeMap<String, usize>,
    pub total_calls: usize,
    pub mutating_calls: usize,
    pub executions: usize,
    pub state_transitions: u64,
    pub lambda_invocations: BTreeMap<String, usize>,
    pub total_invocations: usize,
    pub handler_ms: f64,
    pub dynamodb: DynamoUnits,
    pub bill: Bill,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reactions {
    /// EC2 terminated event published -> replacement RunInstances sent (ms).
    pub ec2_terminated_to_run_instances_ms: Summary,
    /// Final SSM status event published -> SendTaskSuccess/Failure answered (ms).
    pub ssm_status_to_workflow_resumed_ms: Summary,
}

pub struct Scenario<'a> {
    pub cloud: &'a LocalCloud,
    pub stack: &'a Stack,
    pub agent: &'a SsmAgent,
    api: String,
    store: ClusterStore,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: String,
    /// Every replication call resuming a workflow, for the SSM reaction times.
    resumes: Vec<crate::logs::AwsCall>,
}

impl std::fmt::Debug for Scenario<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

fn output<'s>(stack: &'s Stack, name: &str) -> Result<&'s String> {
    stack
        .outputs
        .get(name)
        .ok_or_else(|| BenchError::Setup(format!("the stack has no {name} output")))
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl<'a> Scenario<'a> {
    pub async fn new(cloud: &'a LocalCloud, stack: &'a Stack, agent: &'a SsmAgent) -> Result<Self> {
        let sdk = cloud.sdk_config().await;
        Ok(Self {
            cloud,
            stack,
            agent,
            api: stack
                .api_url
                .clone()
                .ok_or_else(|| BenchError::Setup("the stack has no HTTP API".into()))?,
            store: ClusterStore::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                output(stack, "TableName")?.clone(),
            ),
            sfn: aws_sdk_sfn::Client::new(&sdk),
            state_machine_arn: output(stack, "StateMachineArn")?.clone(),
            resumes: Vec::new(),
        })
    }

    /// The five operations, in order, on one cluster, with the reaction runs before the
    /// delete.
    pub async fn run(&mut self, reaction_runs: usize) -> Result<(Vec<OperationStats>, Reactions)> {
        let mut operations = Vec::new();

        let mark = self.mark("create 2 web + 3 db");
        let id = e2e_tests::create_cluster(&self.api, CREATE_BODY, "bench-create").await;
        self.wait_ready(&id, 1).await?;
        operations.push(self.finish(mark, 1).await?);

        let mark = self.mark("heal one web node");
        self.heal(&id, |c| node_of(c, Tier::Web, None)).await?;
        operations.push(self.finish(mark, 0).await?);

        let mark = self.mark("heal the DB primary");
        self.heal(&id, |c| node_of(c, Tier::Db, Some("PRIMARY")))
            .await?;
        operations.push(self.finish(mark, 0).await?);

        let mark = self.mark("scale out by 1");
        let cluster = self.cluster(&id).await?;
        let body = format!(r#"{{"web":{{"count":{}}}}}"#, cluster.spec.web.count + 1);
        let url = format!("{}/clusters/{id}", self.api);
        let (status, answer) = e2e_tests::send_json(Method::PATCH, &url, Some(&body), &[]).await;
        if status != 202 {
            return Err(BenchError::Run(format!(
                "PATCH answered {status}: {answer}"
            )));
        }
        self.wait_ready(&id, cluster.generation + 1).await?;
        operations.push(self.finish(mark, 1).await?);

        let ec2_reactions = self.ec2_reactions(&id, reaction_runs).await?;
        self.ssm_top_up(&id, reaction_runs).await?;

        let mark = self.mark("delete");
        let (status, answer) = e2e_tests::send_json(Method::DELETE, &url, None, &[]).await;
        if status != 202 {
            return Err(BenchError::Run(format!(
                "DELETE answered {status}: {answer}"
            )));
        }
        self.wait_phase(&id, Phase::Deleted).await?;
        operations.push(self.finish(mark, 1).await?);

        let reactions = Reactions {
            ec2_terminated_to_run_instances_ms: Summary::of(ec2_reactions),
            ssm_status_to_workflow_resumed_ms: Summary::of(self.ssm_reactions()),
        };
        Ok((operations, reactions))
    }

    fn mark(&self, name: &str) -> Mark {
        eprintln!("[bench] operation: {name}");
        Mark {
            name: name.to_string(),
            cursor: LogCursor::now(self.cloud),
            since: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// Everything done since `mark`, once its executions have ended.
    async fn finish(&mut self, mark: Mark, api_requests: u64) -> Result<OperationStats> {
        let wall_seconds = mark.started.elapsed().as_secs_f64();
        let (executions, state_transitions) = self.transitions_since(mark.since).await?;
        // Let the last invocations write their REPORT lines.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let activity = mark.cursor.activity_since(self.cloud, self.stack);
        self.note_resumes(&activity);
        Ok(summarize(
            &mark.name,
            wall_seconds,
            api_requests,
            &activity,
            executions,
            state_transitions,
        ))
    }

    fn note_resumes(&mut self, activity: &Activity) {
        self.resumes.extend(
            activity
                .calls
                .iter()
                .filter(|c| {
                    c.function == "ReplicationFunction"
                        && matches!(c.operation.as_str(), "SendTaskSuccess" | "SendTaskFailure")
                })
                .cloned(),
        );
    }

    /// SSM reactions: each resume of a workflow, from the latest final status event the
    /// agent published before it. One cluster runs one command at a time, so the latest
    /// event before a resume is the one that completed the command.
    fn ssm_reactions(&self) -> Vec<f64> {
        let reported = self.agent.reported();
        self.resumes
            .iter()
            .filter_map(|resume| {
                let resumed = resume.at_ms as f64 + resume.elapsed_ms;
                reported
                    .iter()
                    .map(|r| epoch_ms(r.at) as f64)
                    .filter(|at| *at <= resume.at_ms as f64)
                    .reduce(f64::max)
                    .map(|published| resumed - published)
            })
            .collect()
    }

    /// Lose a node: for a database node the group first sees its member go (the agent
    /// plays Group Replication), then the instance is terminated and the event EC2
    /// publishes is published; returns when it was (where a reaction time starts).
    async fn lose(&self, cluster_id: &str, node: &Node) -> Result<SystemTime> {
        let instance_id = node
            .instance_id
            .as_deref()
            .ok_or_else(|| BenchError::Run(format!("{} has no instance", node.slot)))?;
        if node.tier == Tier::Db {
            let host = node.host.as_deref().ok_or_else(|| {
                BenchError::Run(format!("{} has no host name recorded", node.slot))
            })?;
            self.agent
                .lose_member(cluster_id, host)
                .map_err(|e| BenchError::Run(format!("lose member {host}: {e}")))?;
        }
        Ok(e2e_tests::lose_instance(self.cloud, instance_id).await)
    }

    /// Lose the node `choose` picks, and wait until the healing run it starts has ended
    /// READY; returns the node and when its loss was published.
    async fn heal(
        &self,
        id: &str,
        choose: impl FnOnce(&Cluster) -> Result<Node>,
    ) -> Result<(Node, SystemTime)> {
        let cluster = self.cluster(id).await?;
        let node = choose(&cluster)?;
        let published = self.lose(id, &node).await?;
        self.wait_ready(id, cluster.generation + 1).await?;
        Ok((node, published))
    }

    /// What the functions did since `cursor` (after a moment for the last log lines),
    /// noting the workflow resumes in it.
    async fn observed(&mut self, cursor: &LogCursor) -> Activity {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let activity = cursor.activity_since(self.cloud, self.stack);
        self.note_resumes(&activity);
        activity
    }

    /// `runs` web-node losses, one after the other: event published -> RunInstances sent.
    async fn ec2_reactions(&mut self, id: &str, runs: usize) -> Result<Vec<f64>> {
        let mut samples = Vec::with_capacity(runs);
        for run in 0..runs {
            let cursor = LogCursor::now(self.cloud);
            let (victim, published) = self
                .heal(id, |cluster| {
                    let web: Vec<&Node> = cluster
                        .nodes
                        .iter()
                        .filter(|n| n.tier == Tier::Web && n.instance_id.is_some())
                        .collect();
                    web.get(run % web.len().max(1))
                        .map(|n| (*n).clone())
                        .ok_or_else(|| BenchError::Run(format!("{id} has no web node")))
                })
                .await?;
            let published = epoch_ms(published);
            let victim = victim.instance_id.unwrap_or_default();
            let activity = self.observed(&cursor).await;
            let launched = activity
                .calls
                .iter()
                .find(|c| c.operation == "RunInstances" && c.at_ms >= published)
                .ok_or_else(|| BenchError::Run(format!("no RunInstances after losing {victim}")))?;
            let reaction = (launched.at_ms - published) as f64;
            eprintln!(
                "[bench] reaction run {}/{runs}: {victim} lost -> RunInstances in {reaction} ms",
                run + 1
            );
            samples.push(reaction);
        }
        Ok(samples)
    }

    /// Heal database SECONDARY nodes until there are `wanted` SSM reaction samples (each
    /// heal runs several commands), at most `wanted` heals.
    async fn ssm_top_up(&mut self, id: &str, wanted: usize) -> Result<()> {
        for _ in 0..wanted {
            if self.ssm_reactions().len() >= wanted {
                break;
            }
            let cursor = LogCursor::now(self.cloud);
            self.heal(id, |c| node_of(c, Tier::Db, Some("SECONDARY")))
                .await?;
            self.observed(&cursor).await;
            eprintln!(
                "[bench] SSM reaction samples: {}",
                self.ssm_reactions().len()
            );
        }
        Ok(())
    }

    async fn cluster(&self, id: &str) -> Result<Cluster> {
        self.store
            .get_cluster(id)
            .await
            .map_err(|e| BenchError::Run(format!("read {id}: {e}")))?
            .ok_or_else(|| BenchError::Run(format!("cluster {id} is not in the table")))
    }

    async fn wait_ready(&self, id: &str, generation: u64) -> Result<Cluster> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let cluster = self.cluster(id).await?;
            match cluster.phase {
                Phase::Ready if cluster.generation >= generation => return Ok(cluster),
                Phase::Failed => {
                    return Err(BenchError::Run(format!(
                        "{id} FAILED at generation {}: {:?}",
                        cluster.generation, cluster.last_error
                    )));
                }
                _ if Instant::now() > deadline => {
                    return Err(BenchError::Run(format!(
                        "{id} not READY at generation {generation} within {RUN_TIMEOUT:?}: {:?}/{:?}",
                        cluster.phase, cluster.step
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn wait_phase(&self, id: &str, phase: Phase) -> Result<Cluster> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let cluster = self.cluster(id).await?;
            if cluster.phase == phase {
                return Ok(cluster);
            }
            if cluster.phase == Phase::Failed || Instant::now() > deadline {
                return Err(BenchError::Run(format!(
                    "{id} did not reach {phase:?}: {:?} {:?}",
                    cluster.phase, cluster.last_error
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Executions started since `since` (waiting for them to end) and their state
    /// transitions: every state entered, plus every retried task attempt.
    async fn transitions_since(&self, since: SystemTime) -> Result<(usize, u64)> {
        let since_secs = since
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
            - 1.0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let executions = loop {
            let listed = self
                .sfn
                .list_executions()
                .state_machine_arn(&self.state_machine_arn)
                .max_results(1000)
                .send()
                .await
                .map_err(|e| BenchError::Run(format!("ListExecutions: {e:?}")))?;
            let recent: Vec<_> = listed
                .executions()
                .iter()
                .filter(|e| e.start_date().as_secs_f64() >= since_secs)
                .cloned()
                .collect();
            let running = recent
                .iter()
                .any(|e| e.status() == &aws_sdk_sfn::types::ExecutionStatus::Running);
            if !running || Instant::now() > deadline {
                break recent;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let mut transitions = 0u64;
        for execution in &executions {
            let mut entered = 0u64;
            let mut task_entered = 0u64;
            let mut scheduled = 0u64;
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .sfn
                    .get_execution_history()
                    .execution_arn(execution.execution_arn())
                    .max_results(1000)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| BenchError::Run(format!("GetExecutionHistory: {e:?}")))?;
                for event in page.events() {
                    let kind = event.r#type().as_str();
                    if kind.ends_with("StateEntered") {
                        entered += 1;
                    }
                    if kind == "TaskStateEntered" {
                        task_entered += 1;
                    }
                    if kind == "TaskScheduled" {
                        scheduled += 1;
                    }
                }
                match page.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_string()),
                    _ => break,
                }
            }
            transitions += entered + scheduled.saturating_sub(task_entered);
        }
        Ok((executions.len(), transitions))
    }
}

struct Mark {
    name: String,
    cursor: LogCursor,
    since: SystemTime,
    started: Instant,
}

/// The first node of `tier` with an instance (with `role`, for database nodes).
fn node_of(cluster: &Cluster, tier: Tier, role: Option<&str>) -> Result<Node> {
    cluster
        .nodes
        .iter()
        .find(|n| {
            n.tier == tier
                && n.instance_id.is_some()
                && (role.is_none() || n.role.as_deref() == role)
        })
        .cloned()
        .ok_or_else(|| {
            BenchError::Run(format!(
                "{} has no {tier:?} node with role {role:?}",
                cluster.id
            ))
        })
}

fn summarize(
    name: &str,
    wall_seconds: f64,
    api_requests: u64,
    activity: &Activity,
    executions: usize,
    state_transitions: u64,
) -> OperationStats {
    let mut lambda_invocations = BTreeMap::new();
    for invocation in &activity.invocations {
        *lambda_invocations
            .entry(invocation.function.clone())
            .or_insert(0) += 1;
    }
    OperationStats {
        name: name.to_string(),
        wall_seconds,
        api_requests,
        total_calls: activity.calls.len(),
        mutating_calls: activity.calls.iter().filter(|c| !c.is_read()).count(),
        calls: crate::logs::count_by_operation(&activity.calls),
        executions,
        state_transitions,
        total_invocations: activity.invocations.len(),
        lambda_invocations,
        handler_ms: activity.invocations.iter().map(|i| i.duration_ms).sum(),
        dynamodb: dynamodb_units(activity),
        bill: bill(activity, state_transitions, api_requests),
    }
}
