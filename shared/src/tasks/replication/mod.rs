//! The database tasks of `ClusterWorkflow` (the `replication` function): MySQL InnoDB
//! Cluster over SSM Run Command.
//!
//! Every task here is a `lambda:invoke.waitForTaskToken` state. The task sends one command
//! (or answers at once when there is nothing to do), records the command id with the task
//! token in DynamoDB and returns; no Lambda sleeps. The SSM "EC2 Command Invocation
//! Status-change Notification" events (rule in template.yaml) call [`Replicator::resolve`],
//! which answers the waiting token once every instance of the command has reported its
//! final status. The slow
//! poll is only the fallback: a waiting state that times out is retried, and the retried task
//! re-arms the token and checks the command itself.
//!
//! The loop the state machine runs: install on every database node -> inspect (every node
//! reports its view as one JSON line) -> converge (record roles, then create, join or reboot
//! one step through the split-brain guard) -> inspect again ... until converge finds one
//! group with every node ONLINE and one PRIMARY -> bootstrap MySQL Router on the web nodes.
//!
//! Where each part is:
//! - this file: what the state machine sends ([`TaskRequest`]) and is answered
//!   ([`CommandResult`]), the [`Replicator`], its dispatch ([`Replicator::run`]) and its
//!   answers to the waiting token;
//! - [`steps`](self::steps): which command a task sends next (converge's decision from the
//!   inspect reports) and how it is sent once per run and step;
//! - [`resolve`](self::resolve): a command's status events -> the answer to the workflow
//!   (outputs, or the failure with its stderr), and membership surveys handed to their judge;
//! - [`reboot`](self::reboot): whether a reboot from complete outage may pass `force`;
//! - `tests`: converge scenarios on mocked DynamoDB, SSM and EC2; `resolve_tests`: command
//!   resolution scenarios (success, failure, duplicate event, missing output object).

use serde::{Deserialize, Serialize};

use crate::aws::commands::Commands;
use crate::aws::fleet::Instances;
use crate::aws::store::{ClusterStore, Fence};
use crate::aws::task_tokens::TaskTokens;
use crate::domain::cluster::{Slot, Tier};
use crate::domain::commands::Document;
use crate::domain::runs::WorkflowInput;
use crate::error::{Error, Result};

mod reboot;
mod resolve;
#[cfg(test)]
mod resolve_tests;
mod steps;
#[cfg(test)]
mod tests;

pub use reboot::reboot_force;
use steps::{Step, host_of, live};

/// How often a step's command may fail in one run before the run fails with its stderr.
pub const MAX_COMMAND_FAILURES: u32 = 3;
/// How often one step may be sent in one run at all (a command that succeeds without
/// taking effect is sent again) before the run fails instead of looping.
pub const MAX_SENDS_PER_STEP: u32 = 6;
/// Inspections (read-only DbReport) allowed in one run: one per converge step and one per
/// wait for a member to recover, about 15 minutes of waiting at the workflow's pace.
pub const MAX_INSPECTIONS_PER_RUN: u32 = 60;
/// How much of each instance's stdout travels back to the workflow (the report is one line).
const STDOUT_TAIL_CHARS: usize = 4000;

/// Which database task a state of the workflow runs (its `task` field, kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Install and configure MySQL and MySQL Shell on every database node.
    DbInstall,
    /// Every database node reports its view of the group.
    DbInspect,
    /// Record the reports; create, join or reboot one step, or answer done.
    DbConverge,
    /// Bootstrap MySQL Router on every web node against the cluster.
    WebRouter,
}

/// What the state machine sends a database task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    /// Which task to run.
    pub task: Task,
    /// The run: cluster, generation and why it runs.
    pub ctx: WorkflowInput,
    /// The run's lease token: every write of the task is fenced by it.
    pub lease_token: Option<u64>,
    /// `$$.Task.Token`: what the command's outcome answers.
    pub task_token: String,
    /// The previous task's answer (`db-converge` reads the inspect reports from it).
    #[serde(default)]
    pub previous: Option<CommandResult>,
}

/// What a waiting task is answered with (`SendTaskSuccess` output, at `$.last`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// `db-converge` only: true once the group is complete and verified.
    pub done: bool,
    /// `db-converge` only: the reports cannot decide yet; pause, then inspect again.
    /// Always present, since the workflow's Choice reads it.
    #[serde(default)]
    pub wait: bool,
    /// The workflow step that answered (what the next task and the API show).
    pub step: String,
    /// What happened, for the execution history.
    pub detail: String,
    /// What every instance printed (`db-converge` reads the inspect reports from them).
    #[serde(default)]
    pub outputs: Vec<InstanceOutput>,
}

/// One instance's part of a command's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOutput {
    /// The instance the command ran on: converge matches reports to nodes by it.
    pub instance_id: String,
    /// The node's slot; on the wire its name (`db-0`), as before it was typed.
    pub slot: Slot,
    /// The tail of what it printed (a report is one JSON line).
    pub stdout: String,
}

/// The database tasks' clients: one adapter per service they call.
#[derive(Debug, Clone)]
pub struct Replicator {
    /// The cluster records, the command records and the run's fence.
    pub store: ClusterStore,
    /// SSM Run Command: send a step's command, read its invocations and output.
    pub commands: Commands,
    /// Answers the workflow's waiting states (`SendTaskSuccess` / `SendTaskFailure`).
    pub task_tokens: TaskTokens,
    /// Confirms that a member the metadata still lists is gone for good before a reboot
    /// from complete outage may pass `force` ([`reboot_force`]).
    pub instances: Instances,
    /// Judges the sweep's membership surveys when their status events arrive.
    pub survey: crate::tasks::survey::MembershipSurvey,
    /// The stack's backup bucket (`BACKUP_BUCKET`): a restored cluster's seed reads its
    /// backup and archived binary logs there. Only a restore needs it.
    pub backup_bucket: Option<String>,
}

impl Replicator {
    /// Run one task of the workflow: send its command (or answer at once) and return; the
    /// command's status event answers the waiting state.
    #[tracing::instrument(skip_all, fields(task = ?request.task, cluster_id = %request.ctx.cluster_id, generation = request.ctx.generation))]
    pub async fn run(&self, request: TaskRequest) -> Result<()> {
        let cluster = self.store.cluster_of_run(&request.ctx).await?;
        let fence = Fence::of_task(request.lease_token, request.ctx.generation)?;
        let secret = crate::aws::secrets::admin_secret_name(&cluster.id);
        match request.task {
            Task::DbInstall => {
                let step = Step {
                    name: "db-install",
                    document: Document::DbInstall,
                    targets: live(&cluster, Tier::Db),
                    parameters: vec![("adminSecretId", secret)],
                    key: "install".into(),
                };
                self.send(&cluster, fence, &request, step).await
            }
            Task::DbInspect => {
                let step = Step {
                    name: "db-inspect",
                    document: Document::DbReport,
                    targets: live(&cluster, Tier::Db),
                    parameters: vec![("adminSecretId", secret)],
                    key: "inspect".into(),
                };
                self.send(&cluster, fence, &request, step).await
            }
            Task::DbConverge => self.converge(&cluster, fence, &request, secret).await,
            Task::WebRouter => {
                let db = live(&cluster, Tier::Db);
                let Some(primary) = db.iter().find(|n| n.role.as_deref() == Some("PRIMARY")) else {
                    return self
                        .answer_done(
                            &request,
                            "web-router",
                            "no database tier: no router to bootstrap",
                        )
                        .await;
                };
                let step = Step {
                    name: "web-router",
                    document: Document::WebRouter,
                    targets: live(&cluster, Tier::Web),
                    parameters: vec![
                        ("adminSecretId", secret),
                        ("clusterName", cluster.spec.name.clone()),
                        (
                            "appSecretId",
                            crate::aws::secrets::app_secret_name(&cluster.id),
                        ),
                        ("primaryHost", host_of(primary)?),
                    ],
                    key: "router".into(),
                };
                self.send(&cluster, fence, &request, step).await
            }
        }
    }

    /// Nothing (more) to do for this task: answer "done" at once, with no command sent.
    pub(super) async fn answer_done(
        &self,
        request: &TaskRequest,
        step: &str,
        detail: &str,
    ) -> Result<()> {
        let result = CommandResult {
            done: true,
            wait: false,
            step: step.to_string(),
            detail: detail.to_string(),
            outputs: Vec::new(),
        };
        self.answer(&request.task_token, Ok(result))
            .await
            .map(|_| ())
    }

    /// Converge cannot decide from these reports (one missing or unreadable, a member still
    /// RECOVERING, no single PRIMARY yet): answer "wait", and the workflow pauses, then
    /// inspects again. Retrying converge itself would only re-read the same reports.
    pub(super) async fn answer_wait(&self, request: &TaskRequest, why: &str) -> Result<()> {
        tracing::info!(%why, "waiting, then inspecting again");
        let result = CommandResult {
            done: false,
            wait: true,
            step: "db-inspect".to_string(),
            detail: why.to_string(),
            outputs: Vec::new(),
        };
        self.answer(&request.task_token, Ok(result))
            .await
            .map(|_| ())
    }

    /// `SendTaskSuccess` / `SendTaskFailure`. A token the workflow no longer waits on (the
    /// state timed out and was retried with a new one, or the run ended) is not an error:
    /// returns whether the workflow still waited.
    pub(super) async fn answer(
        &self,
        token: &str,
        outcome: std::result::Result<CommandResult, (&str, String)>,
    ) -> Result<bool> {
        match outcome {
            Ok(result) => {
                let output = serde_json::to_string(&result)
                    .map_err(|e| Error::encode("the answer to a waiting task", e))?;
                self.task_tokens.succeed(token, &output).await
            }
            Err((error_type, message)) => self.task_tokens.fail(token, error_type, &message).await,
        }
    }
}
