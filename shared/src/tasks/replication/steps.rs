//! Which command a database task sends next, and how it is sent: once per run and step
//! (a retried task waits on the command already sent), within the run's budget of
//! failures and sends. Converge reads the inspect reports, records every node's role and
//! takes the one step [`crate::domain::db_step::next_step`] chooses.

use super::{
    MAX_COMMAND_FAILURES, MAX_INSPECTIONS_PER_RUN, MAX_SENDS_PER_STEP, Replicator, TaskRequest,
    reboot_force,
};
use crate::aws::store::{CommandRecord, CommandTarget, Fence};
use crate::domain::cluster::{Cluster, Node, NodeState, Tier, now_rfc3339};
use crate::domain::commands::Document;
use crate::domain::db_step::{DbStep, ObservedNode, forced_reboot_refusal, next_step};
use crate::domain::report::NodeReport;
use crate::domain::runs::run_phase;
use crate::error::{Error, Result};

/// A command to send for a step.
pub(super) struct Step<'a> {
    /// The workflow step name (what `GET /clusters/{id}` shows, and a failure names).
    pub(super) name: &'static str,
    /// The SSM document it runs.
    pub(super) document: Document,
    /// The nodes it runs on.
    pub(super) targets: Vec<&'a Node>,
    /// The document's parameters.
    pub(super) parameters: Vec<(&'static str, String)>,
    /// A step is sent once per run and key while its command runs: a retried task waits on
    /// the command already sent instead of sending another; failures count per key.
    pub(super) key: String,
}

/// Live nodes of a tier with an instance to send commands to, in slot order.
pub(super) fn live(cluster: &Cluster, tier: Tier) -> Vec<&Node> {
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

pub(super) fn instance_of(node: &Node) -> String {
    node.instance_id.clone().unwrap_or_default()
}

pub(super) fn host_of(node: &Node) -> Result<String> {
    node.host.clone().ok_or_else(|| {
        Error::not_ready(format!(
            "{} ({}) has no private DNS name yet; waiting for EC2 to report it",
            node.slot,
            instance_of(node)
        ))
    })
}

impl Replicator {
    /// Record what every database node reported, then take the one next step.
    pub(super) async fn converge(
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

        let observed = reports
            .iter()
            .map(|(node, report)| {
                Ok(ObservedNode {
                    slot: node.slot.clone(),
                    instance: instance_of(node),
                    host: host_of(node)?,
                    report: report.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let node_at = |host: &str| -> Result<&Node> {
            reports
                .iter()
                .zip(&observed)
                .find(|(_, o)| o.host == host)
                .map(|((node, _), _)| *node)
                .ok_or_else(|| Error::not_ready(format!("no node is {host}")))
        };
        let name = cluster.spec.name.clone();
        let restore = cluster.spec.restore.as_ref();
        let step = match next_step(&observed, restore.map(|plan| plan.backup_id.as_str())) {
            DbStep::Refuse(why) => return Err(Error::refused(why)),
            DbStep::Wait(why) => return self.answer_wait(request, &why).await,
            DbStep::Restore { host } => {
                let plan = restore.ok_or_else(|| {
                    Error::not_ready("a restore step was chosen without a restore plan")
                })?;
                let bucket = self.backup_bucket.clone().ok_or(Error::MissingConfig {
                    name: "BACKUP_BUCKET",
                    hint: "template.yaml sets it to the stack's BackupBucket for every function",
                })?;
                Step {
                    name: "db-restore",
                    document: Document::DbRestore,
                    targets: vec![node_at(&host)?],
                    parameters: vec![
                        ("adminSecretId", secret),
                        ("bucket", bucket),
                        ("sourceClusterId", plan.source_cluster.clone()),
                        ("backupId", plan.backup_id.as_str().to_string()),
                        ("stopAt", plan.stop_at.clone().unwrap_or_default()),
                        (
                            "appSecretId",
                            crate::aws::secrets::app_secret_name(&cluster.id),
                        ),
                    ],
                    key: format!("restore-{}", plan.backup_id.as_str()),
                }
            }
            DbStep::Create { host } => Step {
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
            DbStep::Reboot { host } => {
                let live_hosts: Vec<&str> = observed.iter().map(|o| o.host.as_str()).collect();
                let seed_report = &observed
                    .iter()
                    .find(|o| o.host == host)
                    .ok_or_else(|| Error::not_ready(format!("no node is {host}")))?
                    .report;
                let force = reboot_force(&self.instances, seed_report, &live_hosts).await;
                if force && let Some(why) = forced_reboot_refusal(&observed, &host) {
                    return Err(Error::refused(why));
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
            DbStep::Remove { primary, stale } => Step {
                name: "db-remove",
                document: Document::DbRemoveInstance,
                targets: vec![node_at(&primary)?],
                parameters: vec![("adminSecretId", secret), ("node", stale.clone())],
                key: format!("remove-{stale}"),
            },
            DbStep::Join {
                primary,
                host,
                slot,
            } => Step {
                name: "db-join",
                document: Document::DbAddInstance,
                targets: vec![node_at(&primary)?],
                parameters: vec![("adminSecretId", secret), ("node", host)],
                key: format!("join-{slot}"),
            },
            DbStep::Verified { detail } => {
                self.store
                    .record_step(
                        &cluster.id,
                        fence,
                        run_phase(request.ctx.reason),
                        "db-verify",
                    )
                    .await?;
                self.store
                    .append_action(&cluster.id, cluster.generation, "DatabaseVerified", &detail)
                    .await?;
                return self.answer_done(request, "db-verify", &detail).await;
            }
        };
        self.send(cluster, fence, request, step).await
    }

    /// Send a step's command (or wait on the one already sent), then check it at once in
    /// case it finished before the token was recorded.
    pub(super) async fn send(
        &self,
        cluster: &Cluster,
        fence: Fence,
        request: &TaskRequest,
        step: Step<'_>,
    ) -> Result<()> {
        self.store
            .record_step(&cluster.id, fence, run_phase(request.ctx.reason), step.name)
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
}
