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

use crate::aws::commands::{Commands, STDERR_EXCERPT_CHARS, tail};
use serde::{Deserialize, Serialize};

use crate::aws::store::{ClusterStore, CommandRecord, CommandTarget, Fence};
use crate::domain::cluster::{Cluster, Node, NodeState, Tier, now_rfc3339};
use crate::domain::commands::CommandStatus;
use crate::domain::commands::Document;
use crate::domain::report::{GroupDecision, NodeReport, decide};
use crate::domain::runs::WorkflowInput;
use crate::error::{
    ERROR_TYPE_COMMAND_FAILED, ERROR_TYPE_TERMINAL, Error, Result, from_sdk, sdk_error_code,
};

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
    pub task: Task,
    pub ctx: WorkflowInput,
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
    pub step: String,
    pub detail: String,
    #[serde(default)]
    pub outputs: Vec<InstanceOutput>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOutput {
    pub instance_id: String,
    pub slot: String,
    pub stdout: String,
}

#[derive(Debug, Clone)]
pub struct Replicator {
    pub store: ClusterStore,
    pub commands: Commands,
    pub sfn: aws_sdk_sfn::Client,
    /// Confirms that a member the metadata still lists is gone for good before a reboot
    /// from complete outage may pass `force` ([`reboot_force`]).
    pub ec2: aws_sdk_ec2::Client,
    /// Judges the sweep's membership surveys when their status events arrive.
    pub survey: crate::tasks::survey::MembershipSurvey,
}

/// A command to send for a step.
struct Step<'a> {
    /// The workflow step name (what `GET /clusters/{id}` shows, and a failure names).
    name: &'static str,
    document: Document,
    targets: Vec<&'a Node>,
    parameters: Vec<(&'static str, String)>,
    /// A step is sent once per run and key while its command runs: a retried task waits on
    /// the command already sent instead of sending another; failures count per key.
    key: String,
}

/// Live nodes of a tier with an instance to send commands to, in slot order.
fn live(cluster: &Cluster, tier: Tier) -> Vec<&Node> {
    let mut nodes: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| n.tier == tier && n.instance_id.is_some())
        .filter(|n| {
            !matches!(
                n.state,
                NodeState::Launching | NodeState::Terminating | NodeState::Terminated
            )
        })
        .collect();
    nodes.sort_by_key(|n| crate::domain::cluster::Slot::parse(&n.slot).map(|s| s.index));
    nodes
}

fn instance_of(node: &Node) -> String {
    node.instance_id.clone().unwrap_or_default()
}

fn host_of(node: &Node) -> Result<String> {
    node.host.clone().ok_or_else(|| {
        Error::not_ready(format!(
            "{} ({}) has no private DNS name yet; waiting for EC2 to report it",
            node.slot,
            instance_of(node)
        ))
    })
}

/// Why a command failed, as the workflow and the API show it.
fn failure_message(
    document: Document,
    instance: &str,
    slot: &str,
    status: CommandStatus,
    code: i32,
    stderr: &str,
    details: &str,
) -> String {
    let excerpt = tail(stderr, STDERR_EXCERPT_CHARS);
    let excerpt = if excerpt.is_empty() {
        "(no stderr)".to_string()
    } else {
        excerpt
    };
    format!(
        "{} {status:?} on {instance} ({slot}), exit code {code}{}: {excerpt}",
        document.suffix(),
        if details.is_empty() || details == format!("{status:?}") {
            String::new()
        } else {
            format!(" ({details})")
        }
    )
}

/// Exit code 3 is the scripts' deliberate refusal (split-brain guard): retrying cannot help.
/// A cancelled command was cancelled by a person. Anything else may be transient.
fn failure_type(status: CommandStatus, code: i32) -> &'static str {
    if code == 3 || status == CommandStatus::Cancelled {
        ERROR_TYPE_TERMINAL
    } else {
        ERROR_TYPE_COMMAND_FAILED
    }
}

impl Replicator {
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

    /// Record what every database node reported, then take the one next step.
    async fn converge(
        &self,
        cluster: &Cluster,
        fence: Fence,
        request: &TaskRequest,
        secret: String,
    ) -> Result<()> {
        let db = live(cluster, Tier::Db);
        if db.is_empty() {
            return self
                .answer_done(request, "db-verify", "no database nodes")
                .await;
        }
        let outputs = request
            .previous
            .as_ref()
            .map(|p| p.outputs.as_slice())
            .unwrap_or_default();
        let mut reports: Vec<(&Node, NodeReport)> = Vec::new();
        for node in &db {
            // Reports are read once per inspection: when one is missing or unreadable, only
            // a new inspection can help, not a retry of this task with the same input.
            let Some(output) = outputs
                .iter()
                .find(|o| Some(&o.instance_id) == node.instance_id.as_ref())
            else {
                let why = format!("{} ({}) sent no report", node.slot, instance_of(node));
                return self.answer_wait(request, &why).await;
            };
            let report = match NodeReport::from_output(&output.stdout) {
                Ok(report) => report,
                Err(e) => {
                    let why = format!("{} ({}): {e}", node.slot, instance_of(node));
                    return self.answer_wait(request, &why).await;
                }
            };
            let mut next = (*node).clone();
            next.member_state = Some(report.member_state.clone());
            next.group_name = Some(report.group_name.clone()).filter(|g| !g.is_empty());
            next.role = Some(report.role.clone())
                .filter(|r| !r.is_empty() && report.member_state == "ONLINE");
            if next.member_state != node.member_state
                || next.group_name != node.group_name
                || next.role != node.role
            {
                next.updated_at = now_rfc3339();
                self.store.put_node(&cluster.id, fence, &next).await?;
            }
            reports.push((node, report));
        }

        let by_host = reports
            .iter()
            .map(|(node, report)| Ok((host_of(node)?, report.clone())))
            .collect::<Result<Vec<_>>>()?;
        let node_at = |host: &str| -> Result<&Node> {
            reports
                .iter()
                .zip(&by_host)
                .find(|(_, (h, _))| h == host)
                .map(|((node, _), _)| *node)
                .ok_or_else(|| Error::not_ready(format!("no node is {host}")))
        };
        let seed = by_host[0].0.clone();
        let name = cluster.spec.name.clone();
        let step = match decide(&by_host, &seed) {
            GroupDecision::Conflict(why) => return Err(Error::refused(why)),
            GroupDecision::CreateOn(host) => Step {
                name: "db-create",
                document: Document::DbCreateCluster,
                targets: vec![node_at(&host)?],
                parameters: vec![
                    ("adminSecretId", secret),
                    ("clusterName", name),
                    (
                        "appSecretId",
                        crate::aws::secrets::app_secret_name(&cluster.id),
                    ),
                ],
                key: "create".into(),
            },
            GroupDecision::RebootFrom(host) => {
                let live_hosts: Vec<&str> = by_host.iter().map(|(h, _)| h.as_str()).collect();
                let seed_report = by_host
                    .iter()
                    .find(|(h, _)| *h == host)
                    .map(|(_, r)| r)
                    .ok_or_else(|| Error::not_ready(format!("no node is {host}")))?;
                let force = reboot_force(&self.ec2, seed_report, &live_hosts).await;
                // `force` also skips the Shell's check that every reachable member's GTID set
                // fits the seed's (mysql-shell reboot_cluster_from_complete_outage.cc: the
                // replica GTID check runs only without force): a member with transactions
                // the seed lacks would lose them. A person decides that, not the workflow.
                if force
                    && let Some((other, report)) = by_host.iter().find(|(_, r)| {
                        !crate::domain::report::gtid_subset(
                            &r.gtid_executed,
                            &seed_report.gtid_executed,
                        )
                    })
                {
                    return Err(Error::refused(format!(
                        "{other} has transactions the reboot seed {host} lacks (its GTID set \
                             {} is not contained in {}); a forced reboot from complete outage \
                             would discard them: compare the two nodes and reboot by hand",
                        report.gtid_executed, seed_report.gtid_executed
                    )));
                }
                Step {
                    name: "db-reboot",
                    document: Document::DbRebootCluster,
                    targets: vec![node_at(&host)?],
                    parameters: vec![
                        ("adminSecretId", secret),
                        ("clusterName", name),
                        ("force", force.to_string()),
                    ],
                    // A forced reboot is another command than the refused one before it:
                    // its own sends and failures.
                    key: if force { "reboot-force" } else { "reboot" }.into(),
                }
            }
            GroupDecision::JoinThrough(primary) => {
                if let Some((node, report)) = reports
                    .iter()
                    .find(|(_, r)| r.in_group() && r.member_state != "ONLINE")
                {
                    let why = format!(
                        "{} ({}) is {} in the group; waiting for it to come ONLINE",
                        node.slot,
                        instance_of(node),
                        report.member_state
                    );
                    return self.answer_wait(request, &why).await;
                }
                // A member the cluster still counts that is no live node (its instance was
                // lost and replaced): remove it through the primary before adding others.
                // The primary's metadata decides, not its group view: Group Replication
                // expels an unreachable member within ~10 s, the metadata keeps it.
                let live_hosts: Vec<&str> = by_host.iter().map(|(h, _)| h.as_str()).collect();
                let stale = reports
                    .iter()
                    .find(|(_, r)| r.is_primary())
                    .and_then(|(_, r)| r.absent_members(&live_hosts).into_iter().next());
                if let Some(stale) = stale {
                    let step = Step {
                        name: "db-remove",
                        document: Document::DbRemoveInstance,
                        targets: vec![node_at(&primary)?],
                        parameters: vec![("adminSecretId", secret), ("node", stale.clone())],
                        key: format!("remove-{stale}"),
                    };
                    return self.send(cluster, fence, request, step).await;
                }
                match reports.iter().find(|(_, r)| !r.in_group()) {
                    Some((node, _)) => Step {
                        name: "db-join",
                        document: Document::DbAddInstance,
                        targets: vec![node_at(&primary)?],
                        parameters: vec![("adminSecretId", secret), ("node", host_of(node)?)],
                        key: format!("join-{}", node.slot),
                    },
                    None => {
                        let primaries: Vec<&str> = reports
                            .iter()
                            .filter(|(_, r)| r.is_primary())
                            .map(|(n, _)| n.slot.as_str())
                            .collect();
                        if primaries.len() != 1 {
                            let why = format!(
                                "the group reports {} primaries ({}); waiting for one",
                                primaries.len(),
                                primaries.join(", ")
                            );
                            return self.answer_wait(request, &why).await;
                        }
                        let group = &reports[0].1.group_name;
                        let detail = format!(
                            "group {group}: PRIMARY {}, {} ONLINE",
                            primaries[0],
                            reports.len()
                        );
                        self.store
                            .record_step(
                                &cluster.id,
                                fence,
                                crate::tasks::provision::run_phase(request.ctx.reason),
                                "db-verify",
                            )
                            .await?;
                        self.store
                            .append_action(
                                &cluster.id,
                                cluster.generation,
                                "DatabaseVerified",
                                &detail,
                            )
                            .await?;
                        return self.answer_done(request, "db-verify", &detail).await;
                    }
                }
            }
        };
        self.send(cluster, fence, request, step).await
    }

    /// Send a step's command (or wait on the one already sent), then check it at once in
    /// case it finished before the token was recorded.
    async fn send(
        &self,
        cluster: &Cluster,
        fence: Fence,
        request: &TaskRequest,
        step: Step<'_>,
    ) -> Result<()> {
        self.store
            .record_step(
                &cluster.id,
                fence,
                crate::tasks::provision::run_phase(request.ctx.reason),
                step.name,
            )
            .await?;
        if step.targets.is_empty() {
            return self
                .answer_done(request, step.name, "no instances to run on")
                .await;
        }
        let key = format!("g{}#{}", cluster.generation, step.key);
        let mut sends = 1;
        if let Some(previous) = self.store.step_record(&cluster.id, &key).await? {
            let command_id = previous.command_id.as_str();
            let invocations = self.commands.invocations(command_id).await?;
            if invocations.iter().any(|i| !i.status.is_terminal()) {
                tracing::info!(%command_id, step = step.name, "waiting on the command already sent");
                self.store
                    .arm_command(command_id, &request.task_token)
                    .await?;
                self.resolve(command_id, None).await?;
                return Ok(());
            }
            if previous.failures >= MAX_COMMAND_FAILURES {
                return Err(Error::refused(format!(
                    "{} failed {} times in this run; the last failure: {}",
                    step.document.suffix(),
                    previous.failures,
                    previous.last_failure.as_deref().unwrap_or("(not recorded)")
                )));
            }
            let limit = if step.document == Document::DbReport {
                MAX_INSPECTIONS_PER_RUN
            } else {
                MAX_SENDS_PER_STEP
            };
            if previous.sends >= limit {
                return Err(Error::refused(format!(
                    "{} was sent {} times in this run without taking effect; see the last command {command_id}",
                    step.document.suffix(),
                    previous.sends
                )));
            }
            sends = previous.sends + 1;
        }
        let instance_ids: Vec<String> = step.targets.iter().map(|n| instance_of(n)).collect();
        let parameters: Vec<(&str, &str)> = step
            .parameters
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let command_id = self
            .commands
            .send(&cluster.id, step.document, &instance_ids, &parameters)
            .await?;
        let record = CommandRecord {
            command_id: command_id.clone(),
            cluster_id: cluster.id.clone(),
            generation: cluster.generation,
            step: step.name.to_string(),
            document: step.document,
            targets: step
                .targets
                .iter()
                .map(|n| CommandTarget {
                    instance_id: instance_of(n),
                    slot: n.slot.clone(),
                })
                .collect(),
            step_key: key.clone(),
            sent_at: now_rfc3339(),
        };
        self.store
            .record_command(fence, &record, sends, &request.task_token)
            .await?;
        let targets: Vec<String> = record
            .targets
            .iter()
            .map(|t| format!("{} ({})", t.instance_id, t.slot))
            .collect();
        self.store
            .append_action(
                &cluster.id,
                cluster.generation,
                "SendCommand",
                &format!(
                    "{} {command_id} to {}",
                    step.document.suffix(),
                    targets.join(", ")
                ),
            )
            .await?;
        tracing::info!(%command_id, step = step.name, document = step.document.suffix(), instances = instance_ids.len(), "command sent");
        self.resolve(&command_id, None).await?;
        Ok(())
    }

    async fn answer_done(&self, request: &TaskRequest, step: &str, detail: &str) -> Result<()> {
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
    async fn answer_wait(&self, request: &TaskRequest, why: &str) -> Result<()> {
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

    /// Answer the task waiting on `command_id` once every instance has finished; a no-op
    /// for commands this orchestrator did not send, still running, or already answered.
    /// `finished` is the instance whose final status event arrived: completion is counted
    /// from the events (one per target), then the API gives statuses and output. Without
    /// it (the task's own check, the fallback poll) the API alone decides.
    /// Returns whether this call answered.
    #[tracing::instrument(skip(self))]
    pub async fn resolve(&self, command_id: &str, finished: Option<&str>) -> Result<bool> {
        let Some((record, token)) = self.store.command(command_id).await? else {
            tracing::info!("not a command of this orchestrator; ignored");
            return Ok(false);
        };
        if let Some(instance) = finished {
            let reported = self.store.note_finished(command_id, instance).await?;
            let waiting: Vec<&str> = record
                .targets
                .iter()
                .map(|t| t.instance_id.as_str())
                .filter(|i| !reported.iter().any(|r| r == i))
                .collect();
            if !waiting.is_empty() {
                tracing::info!(?waiting, "waiting for the other instances");
                return Ok(false);
            }
        }
        let invocations = self.commands.invocations(command_id).await?;
        if invocations.is_empty() || invocations.iter().any(|i| !i.status.is_terminal()) {
            return Ok(false);
        }
        if record.step == crate::tasks::survey::SURVEY_STEP {
            return self.judge_survey(&record, &invocations).await;
        }
        if token.is_empty() || !self.store.claim_resolution(command_id, &token).await? {
            tracing::info!(%command_id, "already answered");
            return Ok(false);
        }
        let slot_of = |instance: &str| {
            record
                .targets
                .iter()
                .find(|t| t.instance_id == instance)
                .map(|t| t.slot.clone())
                .unwrap_or_default()
        };
        let mut outputs = Vec::new();
        let mut failure = None;
        for invocation in &invocations {
            let (output, code) = self
                .commands
                .output(&record.cluster_id, command_id, &invocation.instance_id)
                .await?;
            let slot = slot_of(&invocation.instance_id);
            if invocation.status != CommandStatus::Success && failure.is_none() {
                failure = Some((
                    failure_type(invocation.status, code),
                    failure_message(
                        record.document,
                        &invocation.instance_id,
                        &slot,
                        invocation.status,
                        code,
                        &output.stderr,
                        &invocation.status_details,
                    ),
                ));
            }
            outputs.push(InstanceOutput {
                instance_id: invocation.instance_id.clone(),
                slot,
                stdout: tail(&output.stdout, STDOUT_TAIL_CHARS),
            });
        }
        let outcome = match failure {
            Some((error_type, message)) => {
                tracing::warn!(step = %record.step, %message, "command failed");
                self.store
                    .record_step_failure(&record.cluster_id, &record.step_key, &message)
                    .await?;
                Err((error_type, message))
            }
            None => Ok(CommandResult {
                done: false,
                wait: false,
                step: record.step.clone(),
                detail: format!(
                    "{} succeeded on {} instance(s)",
                    record.document.suffix(),
                    outputs.len()
                ),
                outputs,
            }),
        };
        self.answer(&token, outcome).await
    }

    /// A finished membership survey: hand every node's report to the survey's judge, once.
    async fn judge_survey(
        &self,
        record: &CommandRecord,
        invocations: &[crate::aws::commands::Invocation],
    ) -> Result<bool> {
        if !self.store.claim_survey_result(&record.command_id).await? {
            return Ok(false);
        }
        let mut answers = Vec::new();
        for target in &record.targets {
            let answer = match invocations
                .iter()
                .find(|i| i.instance_id == target.instance_id)
            {
                None => Err("no invocation".to_string()),
                Some(invocation) if invocation.status != CommandStatus::Success => {
                    Err(format!("{:?}", invocation.status))
                }
                Some(invocation) => self
                    .commands
                    .output(
                        &record.cluster_id,
                        &record.command_id,
                        &invocation.instance_id,
                    )
                    .await
                    .map(|(output, _)| output.stdout)
                    .map_err(|e| e.to_string()),
            };
            answers.push((target.slot.clone(), answer));
        }
        let verdict = self.survey.judge(record, answers).await?;
        tracing::info!(cluster_id = %record.cluster_id, ?verdict, "membership survey judged");
        Ok(true)
    }

    /// `SendTaskSuccess` / `SendTaskFailure`. A token the workflow no longer waits on (the
    /// state timed out and was retried with a new one, or the run ended) is not an error.
    async fn answer(
        &self,
        token: &str,
        outcome: std::result::Result<CommandResult, (&str, String)>,
    ) -> Result<bool> {
        let sent = match outcome {
            Ok(result) => self
                .sfn
                .send_task_success()
                .task_token(token)
                .output(serde_json::to_string(&result).unwrap_or_default())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let code = sdk_error_code(&e).map(str::to_string);
                    (code, from_sdk("states", "SendTaskSuccess", e))
                }),
            Err((error_type, message)) => self
                .sfn
                .send_task_failure()
                .task_token(token)
                .error(error_type)
                // The same shape as a failed Lambda's Cause, which RecordFailure reads.
                .cause(
                    serde_json::json!({"errorType": error_type, "errorMessage": message})
                        .to_string(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let code = sdk_error_code(&e).map(str::to_string);
                    (code, from_sdk("states", "SendTaskFailure", e))
                }),
        };
        match sent {
            Ok(()) => Ok(true),
            Err((Some(code), _))
                if matches!(
                    code.as_str(),
                    "TaskTimedOut" | "InvalidToken" | "TaskDoesNotExist"
                ) =>
            {
                tracing::info!(%code, "the workflow no longer waits on this token");
                Ok(false)
            }
            Err((_, e)) => Err(e),
        }
    }
}

/// Whether the reboot from complete outage seeded on the node that reported `seed` may
/// pass `force`: only when the seed's metadata lists members that are no live node and
/// EC2 confirms every one of them gone for good ([`crate::aws::fleet::host_instance`]).
///
/// What `force` does there (mysql-shell 9.x, modules/adminapi/dba/
/// reboot_cluster_from_complete_outage.cc, `Reboot_cluster_from_complete_outage::do_run`):
/// every instance of the metadata the Shell cannot connect to is "unreachable", and with
/// any, it warns that they "cannot be rejoined nor ensured to be OFFLINE" and, without
/// `force`, throws "Could not determine if Cluster is completely OFFLINE". A member whose
/// instance was replaced stays in the metadata, so without `force` such a cluster never
/// reboots. `force` also skips the GTID compatibility check of the reachable members
/// against the seed (same function, "If you wish to proceed, the 'force' option must be
/// explicitly set"), ignores a metadata instance that answers as a standalone server
/// (`retrieve_instances`), and lets `primary` pick a seed with fewer transactions
/// (`pick_best_instance_gtid`; not used here: the seed is the most complete node).
///
/// The risk `force` accepts is that an unreachable member still runs and writes: a
/// second group. So anything short of EC2's confirmation (an instance still listed in
/// another state than terminated or shutting-down, or an EC2 error) means no `force`: the
/// Shell then refuses while that member is unreachable, and the workflow waits and tries
/// again. Every live node has reported itself out of any group before a reboot is decided
/// (`decide`), and only members that are no live node are checked here.
pub async fn reboot_force(
    ec2: &aws_sdk_ec2::Client,
    seed: &NodeReport,
    live_hosts: &[&str],
) -> bool {
    let absent = seed.absent_members(live_hosts);
    if absent.is_empty() {
        return false;
    }
    for host in &absent {
        match crate::aws::fleet::Instances::new(ec2.clone())
            .host_instance(host)
            .await
        {
            Ok(crate::aws::fleet::HostInstance::Gone) => {}
            Ok(crate::aws::fleet::HostInstance::Present { instance_id, state }) => {
                tracing::info!(%host, %instance_id, %state, "a member of the metadata still has an instance; rebooting without force");
                return false;
            }
            Err(error) => {
                tracing::warn!(%host, %error, "EC2 could not confirm a member of the metadata gone; rebooting without force");
                return false;
            }
        }
    }
    tracing::info!(
        ?absent,
        "EC2 confirms every absent member of the metadata gone; rebooting with force"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::{Rule, RuleMode, mock};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const ID: &str = "c-0123456789ab";
    /// The hosts of the three live database nodes (resource names) and of the lost one
    /// their slot replaced.
    const HOSTS: [&str; 3] = [
        "i-00000000000000000.ec2.internal",
        "i-00000000000000001.ec2.internal",
        "i-00000000000000002.ec2.internal",
    ];
    const LOST: &str = "i-0000000000000dead.ec2.internal";
    const LOST_ID: &str = "i-0000000000000dead";

    fn node_report(state: &str, role: &str, group: &str, gtid: &str) -> NodeReport {
        NodeReport {
            member_state: state.into(),
            role: role.into(),
            group_name: group.into(),
            cluster_name: "shop".into(),
            gtid_executed: gtid.into(),
            members: Vec::new(),
            metadata_members: Vec::new(),
        }
    }

    /// The cluster's partition as the store queries it: META and three running database
    /// nodes, `db-i` on `HOSTS[i]`.
    fn cluster_partition() -> Rule {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let spec = serde_json::json!({
            "name": "shop",
            "web": {"count": 0, "instanceType": "t3.small"},
            "db": {"count": 3, "instanceType": "r6i.large"},
        });
        let mut items = vec![HashMap::from([
            ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
            ("sk".to_string(), s("META")),
            ("id".to_string(), s(ID)),
            ("name".to_string(), s("shop")),
            ("phase".to_string(), s("HEALING")),
            ("spec".to_string(), s(&spec.to_string())),
            ("generation".to_string(), n(1)),
            ("version".to_string(), n(7)),
            ("lease_token".to_string(), n(3)),
            ("created_at".to_string(), s("2026-11-23T12:00:00Z")),
            ("updated_at".to_string(), s("2026-11-23T12:00:00Z")),
        ])];
        for (i, host) in HOSTS.iter().enumerate() {
            let node = Node {
                slot: format!("db-{i}"),
                tier: Tier::Db,
                instance_id: Some(format!("i-{i:017x}")),
                state: NodeState::Running,
                availability_zone: None,
                subnet_id: None,
                role: None,
                target_health: None,
                host: Some((*host).to_string()),
                member_state: None,
                group_name: None,
                launch_token: None,
                updated_at: "2026-11-23T12:01:00Z".into(),
            };
            items.push(HashMap::from([
                ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
                ("sk".to_string(), s(&format!("NODE#db-{i}"))),
                (
                    "data".to_string(),
                    s(&serde_json::to_string(&node).unwrap()),
                ),
            ]));
        }
        mock!(aws_sdk_dynamodb::Client::query).then_output(move || {
            aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                .set_items(Some(items.clone()))
                .build()
        })
    }

    /// One converge step from `reports` (db-i's, in slot order), EC2 answering with
    /// `ec2`'s rules: the documents and parameters of every command it sent.
    async fn converge_sends(
        reports: Vec<NodeReport>,
        ec2: aws_sdk_ec2::Client,
    ) -> Vec<(String, HashMap<String, Vec<String>>)> {
        let (outcome, sent) = converge_outcome(reports, ec2).await;
        outcome.unwrap();
        sent
    }

    /// What a converge step answered, and the commands it sent.
    async fn converge_outcome(
        reports: Vec<NodeReport>,
        ec2: aws_sdk_ec2::Client,
    ) -> (Result<()>, Vec<(String, HashMap<String, Vec<String>>)>) {
        let query = cluster_partition();
        let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
        });
        // No step sent before in this run, and the command is not (yet) recorded when the
        // send checks on it at once.
        let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
            aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build()
        });
        let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(|| {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
                .build()
        });
        let put = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
        });
        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(move |r| {
                seen.lock().unwrap().push((
                    r.document_name().unwrap_or_default().to_string(),
                    r.parameters().cloned().unwrap_or_default(),
                ));
                true
            })
            .then_output(|| {
                aws_sdk_ssm::operation::send_command::SendCommandOutput::builder()
                    .command(
                        aws_sdk_ssm::types::Command::builder()
                            .command_id("cmd-1")
                            .build(),
                    )
                    .build()
            });
        let store = ClusterStore::new(
            mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&query, &update, &get, &transact, &put]
            ),
            "table",
        );
        let commands = Commands::new(
            mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]),
            mocked_client!(aws_sdk_s3, []),
            crate::aws::commands::CommandSettings {
                document_prefix: "stack".into(),
                output_bucket: "bucket".into(),
            },
        );
        let sfn = mocked_client!(aws_sdk_sfn, []);
        let replicator = Replicator {
            survey: crate::tasks::survey::MembershipSurvey {
                store: store.clone(),
                commands: commands.clone(),
                workflow: crate::aws::workflow::Workflow::new(sfn.clone(), "arn:sm"),
            },
            store,
            commands,
            sfn,
            ec2,
        };
        let outputs: Vec<serde_json::Value> = reports
            .iter()
            .enumerate()
            .map(|(i, report)| {
                serde_json::json!({
                    "instanceId": format!("i-{i:017x}"),
                    "slot": format!("db-{i}"),
                    "stdout": format!("{}\n", serde_json::to_string(report).unwrap()),
                })
            })
            .collect();
        let request: TaskRequest = serde_json::from_value(serde_json::json!({
            "task": "db-converge",
            "ctx": {"clusterId": ID, "generation": 1, "reason": "heal"},
            "leaseToken": 3,
            "taskToken": "token-1",
            "previous": {"done": false, "wait": false, "step": "db-inspect", "detail": "", "outputs": outputs},
        }))
        .unwrap();
        let outcome = replicator.run(request).await.map(drop);
        let sent = sent.lock().unwrap().clone();
        (outcome, sent)
    }

    fn parameter(sent: &HashMap<String, Vec<String>>, name: &str) -> String {
        sent.get(name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    }

    /// Every DescribeInstances filter a test's EC2 received: (name, values).
    type Filters = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    /// EC2 answering DescribeInstances with `instances`, or with an error when `None`;
    /// every request's filters are kept in `filters`.
    fn ec2_answering(
        instances: Option<Vec<(&'static str, aws_sdk_ec2::types::InstanceStateName)>>,
        filters: Filters,
    ) -> (aws_sdk_ec2::Client, Rule) {
        let rule = mock!(aws_sdk_ec2::Client::describe_instances).match_requests(move |r| {
            for filter in r.filters() {
                filters.lock().unwrap().push((
                    filter.name().unwrap_or_default().to_string(),
                    filter.values().to_vec(),
                ));
            }
            true
        });
        let rule = match instances {
            Some(instances) => rule.then_output(move || {
                let instances = instances
                    .iter()
                    .map(|(id, state)| {
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id(*id)
                            .state(
                                aws_sdk_ec2::types::InstanceState::builder()
                                    .name(state.clone())
                                    .build(),
                            )
                            .build()
                    })
                    .collect();
                aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
                    .reservations(
                        aws_sdk_ec2::types::Reservation::builder()
                            .set_instances(Some(instances))
                            .build(),
                    )
                    .build()
            }),
            None => rule.then_error(|| {
                aws_sdk_ec2::operation::describe_instances::DescribeInstancesError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("UnauthorizedOperation")
                        .message("not authorized to perform: ec2:DescribeInstances")
                        .build(),
                )
            }),
        };
        (
            mocked_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]),
            rule,
        )
    }

    /// A complete outage after db-lost's instance was replaced by db-2's: every live node
    /// OFFLINE with the metadata, db-1 the most complete; the metadata still lists LOST.
    fn complete_outage() -> Vec<NodeReport> {
        let metadata: Vec<String> = [HOSTS[0], HOSTS[1], LOST]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let mut reports = vec![
            node_report("OFFLINE", "", "", "u:1-9"),
            node_report("OFFLINE", "", "", "u:1-12"),
            node_report("OFFLINE", "", "", ""),
        ];
        reports[2].cluster_name.clear();
        for report in &mut reports[..2] {
            report.metadata_members = metadata.clone();
        }
        reports
    }

    #[tokio::test]
    async fn a_lost_member_the_group_expelled_is_removed_from_the_metadata() {
        // LOST was the primary's peer; Group Replication expelled it within seconds, so the
        // group lists only the three live nodes, but the metadata still lists it.
        let group: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
        let mut metadata = group.clone();
        metadata.insert(1, LOST.to_string());
        let mut reports = vec![
            node_report("ONLINE", "PRIMARY", "g", "u:1-9"),
            node_report("ONLINE", "SECONDARY", "g", "u:1-9"),
            node_report("ONLINE", "SECONDARY", "g", "u:1-9"),
        ];
        for report in &mut reports {
            report.members = group.clone();
            report.metadata_members = metadata.clone();
        }
        let filters = Arc::new(Mutex::new(Vec::new()));
        let (ec2, describe) = ec2_answering(Some(vec![]), filters);
        let sent = converge_sends(reports, ec2).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "stack-DbRemoveInstance");
        assert_eq!(parameter(&sent[0].1, "node"), LOST);
        assert_eq!(describe.num_calls(), 0, "a removal asks EC2 nothing");
    }

    #[tokio::test]
    async fn a_reboot_forces_only_once_ec2_confirms_the_absent_member_gone() {
        use aws_sdk_ec2::types::InstanceStateName;
        // EC2 lists no instance behind LOST any more, or lists it terminated or
        // shutting down: force.
        for answer in [
            vec![],
            vec![(LOST_ID, InstanceStateName::Terminated)],
            vec![(LOST_ID, InstanceStateName::ShuttingDown)],
        ] {
            let filters = Arc::new(Mutex::new(Vec::new()));
            let (ec2, describe) = ec2_answering(Some(answer.clone()), filters.clone());
            let sent = converge_sends(complete_outage(), ec2).await;
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert_eq!(sent[0].0, "stack-DbRebootCluster");
            assert_eq!(parameter(&sent[0].1, "clusterName"), "shop");
            assert_eq!(parameter(&sent[0].1, "force"), "true", "{answer:?}");
            assert_eq!(describe.num_calls(), 1);
            // Looked up by the instance id its resource name carries.
            assert_eq!(
                filters.lock().unwrap().clone(),
                vec![("instance-id".to_string(), vec![LOST_ID.to_string()])]
            );
        }
    }

    #[tokio::test]
    async fn a_forced_reboot_is_refused_when_a_live_member_has_transactions_the_seed_lacks() {
        // db-1 is the most complete by count, but db-0 holds a transaction it never saw
        // (an errant one): force would skip the Shell's GTID check and lose it.
        let mut reports = complete_outage();
        reports[0].gtid_executed = "u:1-9,e:1".into();
        let filters = Arc::new(Mutex::new(Vec::new()));
        let (ec2, _describe) = ec2_answering(Some(vec![]), filters);
        let (outcome, sent) = converge_outcome(reports, ec2).await;
        assert!(sent.is_empty(), "{sent:?}");
        let error = outcome.expect_err("refused").to_string();
        assert!(
            error.contains("has transactions the reboot seed") && error.contains("e:1"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_reboot_does_not_force_while_the_member_may_still_run_or_ec2_cannot_say() {
        use aws_sdk_ec2::types::InstanceStateName;
        for answer in [
            Some(vec![(LOST_ID, InstanceStateName::Running)]),
            Some(vec![(LOST_ID, InstanceStateName::Stopped)]),
            // One terminated, one still pending under the same name: not gone.
            Some(vec![
                (LOST_ID, InstanceStateName::Terminated),
                (LOST_ID, InstanceStateName::Pending),
            ]),
            None,
        ] {
            let (ec2, describe) = ec2_answering(answer.clone(), Arc::default());
            let sent = converge_sends(complete_outage(), ec2).await;
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert_eq!(sent[0].0, "stack-DbRebootCluster");
            assert_eq!(parameter(&sent[0].1, "force"), "false", "{answer:?}");
            assert_eq!(describe.num_calls(), 1);
        }
    }

    #[tokio::test]
    async fn a_reboot_with_every_member_live_neither_forces_nor_asks_ec2() {
        let mut reports = complete_outage();
        let metadata: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
        for report in &mut reports {
            report.metadata_members = metadata.clone();
        }
        let (ec2, describe) = ec2_answering(Some(vec![]), Arc::default());
        let sent = converge_sends(reports, ec2).await;
        assert_eq!(sent[0].0, "stack-DbRebootCluster");
        assert_eq!(parameter(&sent[0].1, "force"), "false");
        assert_eq!(describe.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_name_that_is_no_resource_name_is_looked_up_by_private_dns_name() {
        let filters = Arc::new(Mutex::new(Vec::new()));
        let (ec2, _) = ec2_answering(Some(vec![]), filters.clone());
        let gone = crate::aws::fleet::Instances::new(ec2.clone())
            .host_instance("ip-10-0-1-5.ec2.internal")
            .await
            .unwrap();
        assert_eq!(gone, crate::aws::fleet::HostInstance::Gone);
        assert_eq!(
            filters.lock().unwrap().clone(),
            vec![(
                "private-dns-name".to_string(),
                vec!["ip-10-0-1-5.ec2.internal".to_string()]
            )]
        );
    }

    #[test]
    fn refusals_and_cancellations_are_terminal_the_rest_retryable() {
        assert_eq!(failure_type(CommandStatus::Failed, 3), ERROR_TYPE_TERMINAL);
        assert_eq!(
            failure_type(CommandStatus::Cancelled, -1),
            ERROR_TYPE_TERMINAL
        );
        assert_eq!(
            failure_type(CommandStatus::Failed, 1),
            ERROR_TYPE_COMMAND_FAILED
        );
        assert_eq!(
            failure_type(CommandStatus::TimedOut, -1),
            ERROR_TYPE_COMMAND_FAILED
        );
    }

    #[test]
    fn failure_messages_name_document_instance_slot_and_stderr() {
        let message = failure_message(
            Document::DbCreateCluster,
            "i-0abc",
            "db-0",
            CommandStatus::Failed,
            1,
            "noise\nDba.createCluster: access denied\n",
            "Failed",
        );
        assert_eq!(
            message,
            "DbCreateCluster Failed on i-0abc (db-0), exit code 1: noise\nDba.createCluster: access denied"
        );
        let quiet = failure_message(
            Document::DbInstall,
            "i-1",
            "db-1",
            CommandStatus::TimedOut,
            -1,
            "",
            "Delivery Timed Out",
        );
        assert!(
            quiet.ends_with("(Delivery Timed Out): (no stderr)"),
            "{quiet}"
        );
    }
}
