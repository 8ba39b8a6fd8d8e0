//! The instance tasks of `ClusterWorkflow` (the `provision` function).
//!
//! Every task is a reconciler: it reads what is recorded (DynamoDB) and what is there
//! (EC2, ELBv2), does only what is missing, and can run twice or crash half-way and run
//! again with the same result. Every mutating write to the cluster record is fenced by the
//! run's lease token, so a superseded run stops instead of overwriting a newer one.
//!
//! Where each task is:
//! - this file: what the state machine sends ([`TaskRequest`]) and gets back
//!   ([`TaskOutcome`]), the [`Provisioner`] and its dispatch ([`Provisioner::run`]), and the
//!   timed waits every `check-*` task shares;
//! - [`lifecycle`](self::lifecycle): `begin` (take the run's lease) and `record-failure`
//!   (end a failed run);
//! - [`converge`](self::converge): `launch`, `check-running`, `register`, `check-healthy`,
//!   `finish`: the cluster built or repaired to its spec;
//! - [`teardown`](self::teardown): `deregister`, `terminate`, `check-terminated`, `purge`:
//!   a deleted cluster taken down;
//! - `tests`: launch scenarios on mocked EC2, DynamoDB and Secrets Manager.

use serde::{Deserialize, Serialize};

use crate::aws::fleet::Fleet;
use crate::aws::store::{ClusterStore, Fence};
use crate::aws::targets::WebTargets;
use crate::domain::cluster::Cluster;
use crate::domain::runs::{WorkflowInput, run_phase};
use crate::error::{Error, Result};

mod converge;
mod lifecycle;
mod teardown;
#[cfg(test)]
mod tests;

/// How long instances may take to reach `running` before the run fails.
pub const RUNNING_TIMEOUT_SECS: i64 = 15 * 60;
/// How long web targets may take to turn healthy (and deregistered ones to drain).
pub const HEALTHY_TIMEOUT_SECS: i64 = 10 * 60;
/// How long a teardown's instances may take to terminate.
pub const TERMINATED_TIMEOUT_SECS: i64 = 15 * 60;

/// Which instance task a state of the workflow runs (its `task` field, kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Take the cluster's lease for the run; answers whether it converges or tears down.
    Begin,
    /// Fill every slot of the spec with an instance (and retire surplus ones).
    Launch,
    /// Wait for the launched instances to run.
    CheckRunning,
    /// Register the web instances with the cluster's target group.
    Register,
    /// Wait for the web targets to turn healthy and the deregistered ones to drain.
    CheckHealthy,
    /// Retire replaced instances and mark the cluster READY.
    Finish,
    /// Teardown: stop the web targets taking traffic.
    Deregister,
    /// Teardown: terminate every instance of the cluster.
    Terminate,
    /// Teardown: wait for EC2 to report every instance gone.
    CheckTerminated,
    /// Teardown: delete what is left and the cluster's records.
    Purge,
    /// A task failed for good: record the error and end the run FAILED.
    RecordFailure,
}

impl Task {
    /// The step name the cluster record shows while this task runs.
    fn step(self) -> &'static str {
        match self {
            Self::Begin => "begin",
            Self::Launch => "launch",
            Self::CheckRunning => "wait-running",
            Self::Register => "register-targets",
            Self::CheckHealthy => "wait-healthy",
            Self::Finish => "finish",
            Self::Deregister => "deregister-targets",
            Self::Terminate => "terminate",
            Self::CheckTerminated => "wait-terminated",
            Self::Purge => "purge",
            Self::RecordFailure => "record-failure",
        }
    }
}

/// The state machine's `Catch` output: `Cause` is the failed task's error JSON.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CaughtError {
    /// The failed task's error type (`Orchestrator.Terminal`, ...).
    #[serde(rename = "Error", default)]
    pub error: String,
    /// The failed task's `{"errorType","errorMessage"}` as a string.
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// What the state machine sends a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    /// Which task to run.
    pub task: Task,
    /// The run: cluster, generation and why it runs.
    pub ctx: WorkflowInput,
    /// The run's lease token from `begin` (absent only for `begin` itself).
    #[serde(default)]
    pub lease_token: Option<u64>,
    /// The execution's name, which `begin` records as the lease holder.
    #[serde(default)]
    pub execution: Option<String>,
    /// Start of the wait the task checks (set by the task that began it).
    #[serde(default)]
    pub since: Option<String>,
    /// `record-failure` only: what the failed task's `Catch` caught.
    #[serde(default)]
    pub error: Option<CaughtError>,
}

/// What a task answers; the state machine keeps only the fields it routes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutcome {
    /// `begin` only: the lease token every later task of the run writes under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
    /// `begin` only: `converge` or `teardown`, the branch the workflow takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// False while a `check-*` task still waits: the workflow pauses and checks again.
    pub ready: bool,
    /// When the wait a task began started, for the `check-*` task's timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// What the task did or waits for, for the logs and the execution history.
    pub detail: String,
}

/// The instance tasks' clients: one adapter per service they call.
#[derive(Debug, Clone)]
pub struct Provisioner {
    /// The cluster records, every write fenced by the run's lease.
    pub store: ClusterStore,
    /// The cluster's EC2 instances: launch, observe, terminate.
    pub fleet: Fleet,
    /// The web tier's target group and listener rule.
    pub targets: WebTargets,
    /// The scaling alarms `register` creates and `purge` deletes.
    pub alarms: crate::aws::alarms::ScalingAlarms,
    /// The admin and app secrets the database nodes read at install.
    pub secrets: crate::aws::secrets::ClusterSecrets,
    /// The command output `purge` deletes.
    pub command_output: crate::aws::commands::CommandOutput,
}

/// Seconds since an RFC 3339 time; 0 when it does not parse.
fn seconds_since(rfc3339: &str) -> i64 {
    let then = aws_smithy_types::DateTime::from_str(
        rfc3339,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .map(|t| t.secs())
    .unwrap_or(0);
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    if then == 0 { 0 } else { now - then }
}

/// The fence a task writes under: its run's lease token and generation.
fn fence_of(request: &TaskRequest) -> Result<Fence> {
    Fence::of_task(request.lease_token, request.ctx.generation)
}

impl Provisioner {
    /// Append to the cluster's action log (the audit trail of every mutating call).
    async fn record(&self, cluster: &Cluster, action: &str, detail: &str) -> Result<()> {
        self.store
            .append_action(&cluster.id, cluster.generation, action, detail)
            .await
    }

    /// Run one task of the workflow: the dispatch from the state machine's `task` field.
    #[tracing::instrument(skip_all, fields(task = ?request.task, cluster_id = %request.ctx.cluster_id, generation = request.ctx.generation))]
    pub async fn run(&self, request: TaskRequest) -> Result<TaskOutcome> {
        let id = request.ctx.cluster_id.as_str();
        // Recording a failure must work for whichever run failed; everything else only for
        // the current generation.
        let cluster = if request.task == Task::RecordFailure {
            self.store.require_cluster(id).await?
        } else {
            self.store.cluster_of_run(&request.ctx).await?
        };
        match request.task {
            Task::Begin => self.begin(&cluster, &request).await,
            Task::RecordFailure => self.record_failure(&cluster, &request).await,
            task => {
                let fence = fence_of(&request)?;
                let phase = run_phase(request.ctx.reason);
                self.store
                    .record_step(id, fence, phase, task.step())
                    .await?;
                match task {
                    Task::Launch => self.launch(&cluster, &request).await,
                    Task::CheckRunning => self.check_running(&cluster, &request).await,
                    Task::Register => self.register(&cluster, fence).await,
                    Task::CheckHealthy => self.check_healthy(&cluster, &request).await,
                    Task::Finish => self.finish(&cluster, fence).await,
                    Task::Deregister => self.deregister(&cluster).await,
                    Task::Terminate => self.terminate(&cluster, fence).await,
                    Task::CheckTerminated => self.check_terminated(&cluster, &request).await,
                    Task::Purge => self.purge(&cluster, fence).await,
                    Task::Begin | Task::RecordFailure => unreachable!("handled above"),
                }
            }
        }
    }
}

/// Ready when nothing is waiting; a terminal error once the wait began more than `timeout`
/// seconds ago (`since` is set by the task that started the wait).
fn wait_outcome(
    waiting: Vec<String>,
    request: &TaskRequest,
    timeout: i64,
    what: &str,
) -> Result<TaskOutcome> {
    if waiting.is_empty() {
        return Ok(TaskOutcome {
            ready: true,
            detail: format!("all {what}"),
            ..TaskOutcome::default()
        });
    }
    let waited = request.since.as_deref().map(seconds_since).unwrap_or(0);
    if waited > timeout {
        return Err(Error::validation(
            "instances",
            format!(
                "{} still waiting {what} after {waited} s: {}",
                waiting.len(),
                waiting.join(", ")
            ),
            "check the instances' status checks and the target group's health check path",
        ));
    }
    Ok(TaskOutcome {
        ready: false,
        detail: format!("waiting for {} {what}", waiting.join(", ")),
        ..TaskOutcome::default()
    })
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::domain::cluster::now_rfc3339;
    use crate::domain::runs::RunReason;

    #[test]
    fn task_requests_parse_from_the_state_machine_payload() {
        let request: TaskRequest = serde_json::from_value(serde_json::json!({
            "task": "check-running",
            "ctx": {"clusterId": "c-1", "generation": 1, "reason": "create"},
            "leaseToken": 4,
            "since": "2026-11-23T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(request.task, Task::CheckRunning);
        assert_eq!(request.lease_token, Some(4));
        let failure: TaskRequest = serde_json::from_value(serde_json::json!({
            "task": "record-failure",
            "ctx": {"clusterId": "c-1", "generation": 1, "reason": "create"},
            "leaseToken": 4,
            "error": {"Error": "Orchestrator.Terminal", "Cause": "{\"errorType\":\"Orchestrator.Terminal\",\"errorMessage\":\"boom\"}"}
        }))
        .unwrap();
        assert_eq!(failure.error.unwrap().error, "Orchestrator.Terminal");
    }

    #[test]
    fn waits_time_out_into_a_terminal_error() {
        let request = TaskRequest {
            task: Task::CheckRunning,
            ctx: WorkflowInput {
                cluster_id: "c-1".into(),
                generation: 1,
                reason: RunReason::Create,
            },
            lease_token: Some(1),
            execution: None,
            since: Some("2020-01-01T00:00:00Z".into()),
            error: None,
        };
        let late = wait_outcome(
            vec!["i-1".into()],
            &request,
            RUNNING_TIMEOUT_SECS,
            "to reach running",
        )
        .unwrap_err();
        assert_eq!(late.error_type(), crate::error::ERROR_TYPE_TERMINAL);
        assert!(late.to_string().contains("i-1"), "{late}");
        let fresh = TaskRequest {
            since: Some(now_rfc3339()),
            ..request.clone()
        };
        let waiting = wait_outcome(
            vec!["i-1".into()],
            &fresh,
            RUNNING_TIMEOUT_SECS,
            "to reach running",
        )
        .unwrap();
        assert!(!waiting.ready);
        let done =
            wait_outcome(vec![], &request, RUNNING_TIMEOUT_SECS, "to reach running").unwrap();
        assert!(done.ready);
        assert_eq!(seconds_since("not a time"), 0);
    }
}
