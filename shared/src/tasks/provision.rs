//! The instance tasks of `ClusterWorkflow` (the `provision` function).
//!
//! Every task is a reconciler: it reads what is recorded (DynamoDB) and what is there
//! (EC2, ELBv2), does only what is missing, and can run twice or crash half-way and run
//! again with the same result. Every mutating write to the cluster record is fenced by the
//! run's lease token, so a superseded run stops instead of overwriting a newer one.

use serde::{Deserialize, Serialize};

use crate::aws::fleet::{Fleet, LaunchRequest, Launched};
use crate::aws::store::{ClusterStore, Fence};
use crate::aws::targets::WebTargets;
use crate::domain::cluster::{
    Cluster, InstanceState, LastError, Node, NodeState, Phase, Slot, Tier, now_rfc3339,
};
use crate::domain::plan::{
    ObservedInstance, desired_slots, fresh_launch_token, launch_token, plan_launches,
};
use crate::domain::runs::{RunReason, WorkflowInput};
use crate::error::{Error, Result};

/// How long instances may take to reach `running`, and web targets to turn healthy.
pub const RUNNING_TIMEOUT_SECS: i64 = 15 * 60;
pub const HEALTHY_TIMEOUT_SECS: i64 = 10 * 60;
pub const TERMINATED_TIMEOUT_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Begin,
    Launch,
    CheckRunning,
    Register,
    CheckHealthy,
    Finish,
    Deregister,
    Terminate,
    CheckTerminated,
    Purge,
    RecordFailure,
}

impl Task {
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
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// What the state machine sends a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    pub task: Task,
    pub ctx: WorkflowInput,
    #[serde(default)]
    pub lease_token: Option<u64>,
    #[serde(default)]
    pub execution: Option<String>,
    /// Start of the wait the task checks (set by the task that began it).
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub error: Option<CaughtError>,
}

/// What a task answers; the state machine keeps only the fields it routes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Provisioner {
    pub store: ClusterStore,
    pub fleet: Fleet,
    pub targets: WebTargets,
    pub alarms: crate::aws::alarms::ScalingAlarms,
    pub secrets: crate::aws::secrets::ClusterSecrets,
    pub command_output: crate::aws::commands::CommandOutput,
}

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

fn node_state(state: InstanceState) -> NodeState {
    match state {
        InstanceState::Pending => NodeState::Pending,
        InstanceState::Running => NodeState::Running,
        InstanceState::Stopping | InstanceState::ShuttingDown => NodeState::Terminating,
        InstanceState::Stopped | InstanceState::Terminated => NodeState::Terminated,
    }
}

fn observed_node(
    slot: Slot,
    instance: &ObservedInstance,
    state: NodeState,
    previous: Option<&Node>,
) -> Node {
    Node {
        slot: slot.name(),
        tier: slot.tier,
        instance_id: Some(instance.instance_id.clone()),
        state,
        availability_zone: instance
            .availability_zone
            .clone()
            .or_else(|| previous.and_then(|n| n.availability_zone.clone())),
        subnet_id: instance
            .subnet_id
            .clone()
            .or_else(|| previous.and_then(|n| n.subnet_id.clone())),
        role: previous.and_then(|n| n.role.clone()),
        host: instance
            .private_dns_name
            .clone()
            .or_else(|| previous.and_then(|n| n.host.clone())),
        member_state: previous.and_then(|n| n.member_state.clone()),
        group_name: previous.and_then(|n| n.group_name.clone()),
        launch_token: previous.and_then(|n| n.launch_token.clone()),
        target_health: previous.and_then(|n| n.target_health.clone()),
        updated_at: now_rfc3339(),
    }
}

/// Whether a node record differs from what we would write (ignoring the timestamp), so
/// an unchanged cluster costs no writes.
fn changed(previous: Option<&Node>, next: &Node) -> bool {
    match previous {
        None => true,
        Some(prev) => {
            let mut prev = prev.clone();
            prev.updated_at.clone_from(&next.updated_at);
            &prev != next
        }
    }
}

impl Provisioner {
    /// Append to the cluster's action log (the audit trail of every mutating call).
    async fn record(&self, cluster: &Cluster, action: &str, detail: &str) -> Result<()> {
        self.store
            .append_action(&cluster.id, cluster.generation, action, detail)
            .await
    }

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

    async fn begin(&self, cluster: &Cluster, request: &TaskRequest) -> Result<TaskOutcome> {
        let holder = request
            .execution
            .clone()
            .unwrap_or_else(|| crate::domain::runs::execution_name(&request.ctx));
        let token = self
            .store
            .acquire_lease(&cluster.id, &holder, request.ctx.generation)
            .await?;
        // The run's reason, fixed at its start, says what it does; the phase is only what
        // others may read (and a racing run may have written it).
        let teardown = request.ctx.reason == RunReason::Delete;
        let phase = run_phase(request.ctx.reason);
        let fence = Fence {
            token,
            generation: request.ctx.generation,
        };
        self.store
            .record_step(&cluster.id, fence, phase, Task::Begin.step())
            .await?;
        self.record(
            cluster,
            "RunStarted",
            &format!("{:?} run {holder}, lease token {token}", request.ctx.reason),
        )
        .await?;
        Ok(TaskOutcome {
            lease_token: Some(token),
            mode: Some(if teardown { "teardown" } else { "converge" }),
            ready: true,
            detail: format!("lease token {token}"),
            ..TaskOutcome::default()
        })
    }

    async fn launch(&self, cluster: &Cluster, request: &TaskRequest) -> Result<TaskOutcome> {
        let fence = fence_of(request)?;
        let subnets = self.fleet.subnets(&cluster.spec.subnets).await?;
        // Instances being replaced do not fill their slots: a successor is launched, and
        // `finish` retires them once it serves.
        let observed: Vec<ObservedInstance> = self
            .fleet
            .observe(&cluster.id)
            .await?
            .into_iter()
            .filter(|i| !cluster.replacing.contains(&i.instance_id))
            .collect();
        let plan = plan_launches(&cluster.spec, &subnets, &observed);
        let recorded = |slot: Slot| cluster.nodes.iter().find(|n| n.slot == slot.name());

        for (slot, instance) in &plan.keep {
            let node = observed_node(*slot, instance, node_state(instance.state), recorded(*slot));
            if changed(recorded(*slot), &node) {
                self.store.put_node(&cluster.id, fence, &node).await?;
            }
        }
        // The database nodes read their admin password at install: it must exist first.
        if cluster.spec.db.count > 0 {
            for kind in crate::aws::secrets::SecretKind::ALL {
                if self.secrets.ensure_secret(&cluster.id, kind).await? {
                    self.record(
                        cluster,
                        "CreateSecret",
                        &crate::aws::secrets::secret_name(&cluster.id, kind),
                    )
                    .await?;
                }
            }
        }
        let image_id = if plan.launch.is_empty() {
            String::new()
        } else {
            self.fleet.image_id().await?
        };
        for (slot, subnet) in &plan.launch {
            // Reserve the slot first: the record shows the launch even if we crash now, and
            // keeps the launch's ClientToken, so a retry of this launch reuses it.
            let mut reserved = Node {
                slot: slot.name(),
                tier: slot.tier,
                instance_id: None,
                state: NodeState::Launching,
                availability_zone: Some(subnet.availability_zone.clone()),
                subnet_id: Some(subnet.id.clone()),
                role: None,
                host: None,
                member_state: None,
                group_name: None,
                launch_token: Some(launch_token(&cluster.id, *slot, recorded(*slot))),
                target_health: None,
                updated_at: now_rfc3339(),
            };
            self.store.put_node(&cluster.id, fence, &reserved).await?;
            let instance_type = match slot.tier {
                Tier::Web => &cluster.spec.web.instance_type,
                Tier::Db => &cluster.spec.db.instance_type,
            };
            let user_data = match slot.tier {
                Tier::Web => Some(crate::domain::userdata::encode(
                    &crate::domain::userdata::web(
                        self.targets.settings().web_port,
                        &self.targets.settings().health_check_path,
                    ),
                )),
                Tier::Db => None,
            };
            let mut instance_id = None;
            // Two tries at most: the reserved token, then (only if EC2 says that token
            // went with other parameters) one fresh token, recorded before it is used.
            for attempt in 0..2 {
                let token = reserved.launch_token.clone().unwrap_or_default();
                let launched = self
                    .fleet
                    .launch(
                        &LaunchRequest {
                            user_data: user_data.clone(),
                            cluster_id: &cluster.id,
                            cluster_name: &cluster.spec.name,
                            client_token: &token,
                            slot: *slot,
                            subnet,
                            instance_type,
                        },
                        &image_id,
                    )
                    .await?;
                match launched {
                    Launched::Instance(id) => {
                        instance_id = Some(id);
                        break;
                    }
                    Launched::TokenUsedWithOtherParameters if attempt == 0 => {
                        self.record(
                            cluster,
                            "LaunchTokenRenewed",
                            &format!(
                                "{slot}: EC2 answered IdempotentParameterMismatch for ClientToken \
                                 {token} (an earlier attempt used other parameters); launching \
                                 with a new token, an instance of the earlier attempt is \
                                 retired as a duplicate of the slot if it exists"
                            ),
                        )
                        .await?;
                        reserved.launch_token = Some(fresh_launch_token(&cluster.id, *slot));
                        self.store.put_node(&cluster.id, fence, &reserved).await?;
                    }
                    Launched::TokenUsedWithOtherParameters => {}
                }
            }
            let Some(instance_id) = instance_id else {
                return Err(Error::refused(format!(
                    "RunInstances for {slot} answered IdempotentParameterMismatch twice, \
                     with two different ClientTokens: a bug in how launch tokens are made"
                )));
            };
            self.store
                .put_node(
                    &cluster.id,
                    fence,
                    &Node {
                        instance_id: Some(instance_id.clone()),
                        state: NodeState::Pending,
                        updated_at: now_rfc3339(),
                        ..reserved
                    },
                )
                .await?;
            self.record(
                cluster,
                "RunInstances",
                &format!(
                    "{slot} -> {instance_id} ({instance_type}) in {}",
                    subnet.availability_zone
                ),
            )
            .await?;
        }
        // Surplus instances (a slot beyond the spec after a scale-in, or a duplicate from a
        // crashed launch) stop taking traffic now; `check-healthy` waits until their
        // connections have drained and `finish` terminates them.
        if !plan.surplus.is_empty() {
            let ids: Vec<String> = plan.surplus.iter().map(|i| i.instance_id.clone()).collect();
            if let Some(arn) = &cluster.target_group_arn {
                self.targets.deregister(arn, &ids).await?;
            }
            self.record(
                cluster,
                "DeregisterTargets",
                &format!(
                    "surplus instances (beyond the spec, or duplicates), to be retired: {}",
                    ids.join(", ")
                ),
            )
            .await?;
        }
        // Records of slots the spec no longer has.
        let wanted: Vec<String> = desired_slots(&cluster.spec)
            .iter()
            .map(|s| s.name())
            .collect();
        for node in cluster.nodes.iter().filter(|n| !wanted.contains(&n.slot)) {
            self.store
                .delete_node(&cluster.id, fence, &node.slot)
                .await?;
        }
        Ok(TaskOutcome {
            ready: true,
            since: Some(now_rfc3339()),
            detail: format!(
                "launched {}, kept {}, surplus {}",
                plan.launch.len(),
                plan.keep.len(),
                plan.surplus.len()
            ),
            ..TaskOutcome::default()
        })
    }

    async fn check_running(&self, cluster: &Cluster, request: &TaskRequest) -> Result<TaskOutcome> {
        let fence = fence_of(request)?;
        let observed = self.fleet.observe(&cluster.id).await?;
        let mut waiting = Vec::new();
        for slot in desired_slots(&cluster.spec) {
            let recorded = cluster.nodes.iter().find(|n| n.slot == slot.name());
            let instance = recorded
                .and_then(|n| n.instance_id.as_deref())
                .and_then(|id| observed.iter().find(|i| i.instance_id == id));
            let Some(instance) = instance.filter(|i| i.state.is_alive()) else {
                return Err(Error::validation(
                    "instances",
                    format!("the instance of slot {slot} is gone while starting"),
                    "look at the action log and the instance's console output; deleting and recreating the cluster starts over",
                ));
            };
            let state = node_state(instance.state);
            let node = observed_node(slot, instance, state, recorded);
            if changed(recorded, &node) {
                self.store.put_node(&cluster.id, fence, &node).await?;
            }
            if instance.state != InstanceState::Running {
                waiting.push(instance.instance_id.clone());
            }
        }
        wait_outcome(waiting, request, RUNNING_TIMEOUT_SECS, "to reach running")
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

impl Provisioner {
    async fn register(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
        let arn = self.targets.ensure_target_group(&cluster.id).await?;
        if cluster.target_group_arn.as_deref() != Some(arn.as_str()) {
            self.store
                .record_target_group(&cluster.id, fence, &arn)
                .await?;
        }
        self.targets
            .ensure_listener_rule(&arn, &cluster.spec.name)
            .await?;
        self.alarms.ensure(&cluster.id, &arn).await?;
        let web: Vec<&Node> = cluster
            .nodes
            .iter()
            .filter(|n| n.tier == Tier::Web)
            .collect();
        let ids: Vec<String> = web.iter().filter_map(|n| n.instance_id.clone()).collect();
        self.targets.register(&arn, &ids).await?;
        // Targets of instances that are no node's any more (lost and replaced, or scaled
        // in): deregister them; the target group drains their connections.
        let stale: Vec<String> = self
            .targets
            .health(&arn)
            .await?
            .into_iter()
            .map(|t| t.instance_id)
            .filter(|id| !ids.contains(id))
            .collect();
        if !stale.is_empty() {
            self.targets.deregister(&arn, &stale).await?;
            self.record(cluster, "DeregisterTargets", &stale.join(", "))
                .await?;
        }
        for node in web {
            if node.state == NodeState::Running {
                let next = Node {
                    state: NodeState::Registered,
                    updated_at: now_rfc3339(),
                    ..node.clone()
                };
                self.store.put_node(&cluster.id, fence, &next).await?;
            }
        }
        self.record(
            cluster,
            "RegisterTargets",
            &format!(
                "{} on {}",
                ids.join(", "),
                crate::aws::targets::target_group_name(&cluster.id)
            ),
        )
        .await?;
        Ok(TaskOutcome {
            ready: true,
            since: Some(now_rfc3339()),
            detail: format!("registered {}", ids.len()),
            ..TaskOutcome::default()
        })
    }

    async fn check_healthy(&self, cluster: &Cluster, request: &TaskRequest) -> Result<TaskOutcome> {
        let fence = fence_of(request)?;
        let Some(arn) = &cluster.target_group_arn else {
            return Err(Error::CorruptRecord {
                key: format!("CLUSTER#{}", cluster.id),
                problem: "no target group recorded after registration".into(),
            });
        };
        let health = self.targets.health(arn).await?;
        let mut waiting = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.tier == Tier::Web) {
            let Some(instance_id) = &node.instance_id else {
                continue;
            };
            let state = health
                .iter()
                .find(|h| &h.instance_id == instance_id)
                .map(|h| h.state.clone())
                .unwrap_or_else(|| "unregistered".into());
            let next = Node {
                target_health: Some(state.clone()),
                state: match state.as_str() {
                    "healthy" => NodeState::Healthy,
                    "unhealthy" => NodeState::Unhealthy,
                    _ => node.state,
                },
                ..node.clone()
            };
            if changed(Some(node), &next) {
                self.store
                    .put_node(
                        &cluster.id,
                        fence,
                        &Node {
                            updated_at: now_rfc3339(),
                            ..next
                        },
                    )
                    .await?;
            }
            if state != "healthy" {
                waiting.push(format!("{instance_id} ({state})"));
            }
        }
        // Deregistered targets (scale-in, replaced nodes) finish draining before `finish`
        // terminates their instances.
        for target in health.iter().filter(|h| h.state == "draining") {
            waiting.push(format!("{} (draining)", target.instance_id));
        }
        wait_outcome(
            waiting,
            request,
            HEALTHY_TIMEOUT_SECS,
            "to pass the target group's health check (and deregistered ones to drain)",
        )
    }

    async fn finish(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
        // Instances of the cluster that are no node's (replaced ones, now that their
        // successors serve and a replaced member has left the group): retire them.
        let recorded: Vec<&str> = cluster
            .nodes
            .iter()
            .filter_map(|n| n.instance_id.as_deref())
            .collect();
        let retired: Vec<String> = self
            .fleet
            .observe(&cluster.id)
            .await?
            .into_iter()
            .filter(|i| i.state.is_alive() && !recorded.contains(&i.instance_id.as_str()))
            .map(|i| i.instance_id)
            .collect();
        if !retired.is_empty() {
            self.fleet.terminate(&retired).await?;
            self.record(cluster, "TerminateRetired", &retired.join(", "))
                .await?;
        }
        self.store
            .finish_run(&cluster.id, fence, Phase::Ready, None)
            .await?;
        let web = cluster.nodes.iter().filter(|n| n.tier == Tier::Web).count();
        let db = cluster.nodes.iter().filter(|n| n.tier == Tier::Db).count();
        self.record(
            cluster,
            "Ready",
            &format!("{web} web healthy, {db} db running"),
        )
        .await?;
        Ok(TaskOutcome {
            ready: true,
            detail: "READY".into(),
            ..TaskOutcome::default()
        })
    }

    async fn deregister(&self, cluster: &Cluster) -> Result<TaskOutcome> {
        let ids: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.tier == Tier::Web)
            .filter_map(|n| n.instance_id.clone())
            .collect();
        if let Some(arn) = &cluster.target_group_arn
            && !ids.is_empty()
        {
            self.targets.deregister(arn, &ids).await?;
            self.record(cluster, "DeregisterTargets", &ids.join(", "))
                .await?;
        }
        Ok(TaskOutcome {
            ready: true,
            detail: format!("deregistered {}", ids.len()),
            ..TaskOutcome::default()
        })
    }

    async fn terminate(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
        let observed = self.fleet.observe(&cluster.id).await?;
        let ids: Vec<String> = observed
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.instance_id.clone())
            .collect();
        self.fleet.terminate(&ids).await?;
        for node in &cluster.nodes {
            if node.state != NodeState::Terminating {
                let next = Node {
                    state: NodeState::Terminating,
                    updated_at: now_rfc3339(),
                    ..node.clone()
                };
                self.store.put_node(&cluster.id, fence, &next).await?;
            }
        }
        if !ids.is_empty() {
            self.record(cluster, "TerminateInstances", &ids.join(", "))
                .await?;
        }
        Ok(TaskOutcome {
            ready: true,
            since: Some(now_rfc3339()),
            detail: format!("terminating {}", ids.len()),
            ..TaskOutcome::default()
        })
    }

    async fn check_terminated(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
        let observed = self.fleet.observe(&cluster.id).await?;
        let waiting: Vec<String> = observed
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.instance_id.clone())
            .collect();
        // An instance still alive may have been launched after `terminate` looked (by a run
        // this teardown superseded): terminating again is harmless and stops the leak.
        let alive: Vec<String> = observed
            .iter()
            .filter(|i| i.state.is_alive())
            .map(|i| i.instance_id.clone())
            .collect();
        self.fleet.terminate(&alive).await?;
        wait_outcome(waiting, request, TERMINATED_TIMEOUT_SECS, "to terminate")
    }

    async fn purge(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
        self.targets.delete(&cluster.id).await?;
        self.alarms.delete(&cluster.id).await?;
        for kind in crate::aws::secrets::SecretKind::ALL {
            self.secrets.delete_secret(&cluster.id, kind).await?;
        }
        let objects = self
            .command_output
            .delete_cluster_output(&cluster.id)
            .await?;
        tracing::info!(objects, "command output deleted");
        self.store.purge(&cluster.id, fence).await?;
        Ok(TaskOutcome {
            ready: true,
            detail: "DELETED".into(),
            ..TaskOutcome::default()
        })
    }

    async fn record_failure(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
        let caught = request.error.clone().unwrap_or_default();
        // Cause is the failed Lambda's {"errorType","errorMessage"} as a string.
        let message = serde_json::from_str::<serde_json::Value>(&caught.cause)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("{}: {}", caught.error, caught.cause));
        let error = LastError {
            phase: cluster.step.clone().unwrap_or_else(|| "unknown".into()),
            message: message.chars().take(2000).collect(),
            at: now_rfc3339(),
        };
        let fence = fence_of(request)?;
        self.store
            .finish_run(&cluster.id, fence, Phase::Failed, Some(&error))
            .await?;
        self.record(
            cluster,
            "Failed",
            &format!("in {}: {}", error.phase, error.message),
        )
        .await?;
        Ok(TaskOutcome {
            ready: true,
            detail: "FAILED".into(),
            ..TaskOutcome::default()
        })
    }
}

/// The phase a run shows while it works.
pub(crate) fn run_phase(reason: RunReason) -> Phase {
    match reason {
        RunReason::Create => Phase::Provisioning,
        RunReason::Heal | RunReason::Sweep => Phase::Healing,
        RunReason::Scale => Phase::Scaling,
        RunReason::Delete => Phase::Deleting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fleet::{FleetSettings, TAG_CLUSTER, TAG_SLOT};
    use crate::aws::targets::TargetSettings;
    use crate::domain::spec::{ClusterSpec, TierSpec};
    use crate::mocked_client;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::{RuleMode, mock};

    const ID: &str = "c-0123456789ab";

    fn spec() -> ClusterSpec {
        ClusterSpec {
            name: "shop".into(),
            web: TierSpec {
                count: 2,
                instance_type: "t3.small".into(),
            },
            db: TierSpec {
                count: 3,
                instance_type: "r6i.large".into(),
            },
            subnets: vec![],
            scaling: None,
        }
    }

    fn zone(i: usize) -> String {
        format!("us-east-1{}", ["a", "b", "c"][i % 3])
    }

    /// The cluster as recorded and as EC2 reports it, fully converged: every slot has a
    /// running instance and its record says so.
    fn converged() -> (
        Vec<std::collections::HashMap<String, AttributeValue>>,
        Vec<aws_sdk_ec2::types::Instance>,
    ) {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let meta = std::collections::HashMap::from([
            ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
            ("sk".to_string(), s("META")),
            ("id".to_string(), s(ID)),
            ("name".to_string(), s("shop")),
            ("phase".to_string(), s("PROVISIONING")),
            (
                "spec".to_string(),
                s(&serde_json::to_string(&spec()).unwrap()),
            ),
            ("generation".to_string(), n(1)),
            ("version".to_string(), n(7)),
            ("lease_token".to_string(), n(3)),
            ("created_at".to_string(), s("2026-11-23T12:00:00Z")),
            ("updated_at".to_string(), s("2026-11-23T12:00:00Z")),
        ]);
        let mut items = vec![meta];
        let mut instances = Vec::new();
        for (i, slot) in crate::domain::plan::desired_slots(&spec())
            .into_iter()
            .enumerate()
        {
            let instance_id = format!("i-{i:017x}");
            let node = Node {
                slot: slot.name(),
                tier: slot.tier,
                instance_id: Some(instance_id.clone()),
                state: NodeState::Running,
                availability_zone: Some(zone(i)),
                subnet_id: Some(format!("subnet-0000000{i}")),
                role: None,
                host: None,
                member_state: None,
                group_name: None,
                launch_token: None,
                target_health: None,
                updated_at: "2026-11-23T12:01:00Z".into(),
            };
            items.push(std::collections::HashMap::from([
                ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
                ("sk".to_string(), s(&format!("NODE#{}", slot.name()))),
                (
                    "data".to_string(),
                    s(&serde_json::to_string(&node).unwrap()),
                ),
            ]));
            let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
            instances.push(
                aws_sdk_ec2::types::Instance::builder()
                    .instance_id(instance_id)
                    .state(
                        aws_sdk_ec2::types::InstanceState::builder()
                            .name(aws_sdk_ec2::types::InstanceStateName::Running)
                            .build(),
                    )
                    .subnet_id(format!("subnet-0000000{i}"))
                    .placement(
                        aws_sdk_ec2::types::Placement::builder()
                            .availability_zone(zone(i))
                            .build(),
                    )
                    .tags(tag(TAG_CLUSTER, ID))
                    .tags(tag(TAG_SLOT, &slot.name()))
                    .build(),
            );
        }
        (items, instances)
    }

    /// The cluster's partition, as the store queries it.
    fn cluster_partition(
        items: Vec<std::collections::HashMap<String, AttributeValue>>,
    ) -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|r| {
                r.expression_attribute_values()
                    .and_then(|v| v.get(":pk"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.starts_with("CLUSTER#"))
            })
            .then_output(move || {
                aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                    .set_items(Some(items.clone()))
                    .build()
            })
    }

    /// The stack's three subnets, one per zone.
    fn three_subnets() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
            let subnet = |i: usize| {
                aws_sdk_ec2::types::Subnet::builder()
                    .subnet_id(format!("subnet-0000000{i}"))
                    .availability_zone(zone(i))
                    .build()
            };
            aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput::builder()
                .subnets(subnet(0))
                .subnets(subnet(1))
                .subnets(subnet(2))
                .build()
        })
    }

    /// DescribeInstances answering `instances` in one reservation.
    fn instances_described(instances: Vec<aws_sdk_ec2::types::Instance>) -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
            aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
                .reservations(
                    aws_sdk_ec2::types::Reservation::builder()
                        .set_instances(Some(instances.clone()))
                        .build(),
                )
                .build()
        })
    }

    /// A provisioner on mocked clients; the services a launch does not use answer nothing.
    fn provisioner(
        dynamodb: aws_sdk_dynamodb::Client,
        ec2: aws_sdk_ec2::Client,
        secretsmanager: aws_sdk_secretsmanager::Client,
    ) -> Provisioner {
        Provisioner {
            store: ClusterStore::new(dynamodb, "table"),
            fleet: Fleet::new(
                ec2,
                mocked_client!(
                    aws_sdk_ssm,
                    [&mock!(aws_sdk_ssm::Client::get_parameter).then_output(|| {
                        aws_sdk_ssm::operation::get_parameter::GetParameterOutput::builder()
                            .parameter(
                                aws_sdk_ssm::types::Parameter::builder()
                                    .value("ami-1")
                                    .build(),
                            )
                            .build()
                    })]
                ),
                FleetSettings {
                    web_launch_template: "lt-web".into(),
                    db_launch_template: "lt-db".into(),
                    ami_parameter: "/ami".into(),
                    default_subnets: (0..3).map(|i| format!("subnet-0000000{i}")).collect(),
                },
            ),
            secrets: crate::aws::secrets::ClusterSecrets::new(secretsmanager),
            targets: WebTargets::new(
                mocked_client!(aws_sdk_elasticloadbalancingv2, []),
                TargetSettings {
                    vpc_id: "vpc-1".into(),
                    listener_arn: "arn:listener".into(),
                    status_target_group_arn: "arn:status".into(),
                    web_port: 80,
                    health_check_path: "/healthz".into(),
                },
            ),
            alarms: crate::aws::alarms::ScalingAlarms::new(
                mocked_client!(aws_sdk_cloudwatch, []),
                crate::aws::alarms::AlarmSettings {
                    scale_out_requests_per_target: 1000.0,
                    scale_in_requests_per_target: 100.0,
                },
            ),
            command_output: crate::aws::commands::CommandOutput::new(
                mocked_client!(aws_sdk_s3, []),
                "bucket",
            ),
        }
    }

    #[tokio::test]
    async fn a_converged_cluster_launch_makes_no_mutating_call() {
        let (items, instances) = converged();
        let query = cluster_partition(items);
        let actions = mock!(aws_sdk_dynamodb::Client::query)
            .then_output(|| aws_sdk_dynamodb::operation::query::QueryOutput::builder().build());
        // Renewing the lease and recording the step is the only write allowed.
        let renew = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.condition_expression()
                    == Some("lease_token = :token AND generation = :fence_generation")
            })
            .then_output(|| {
                aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
            });
        let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(|| {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
                .build()
        });
        let put = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
        });
        let subnets = three_subnets();
        let describe = instances_described(instances);
        let run = mock!(aws_sdk_ec2::Client::run_instances).then_output(|| {
            aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder().build()
        });
        let terminate = mock!(aws_sdk_ec2::Client::terminate_instances).then_output(|| {
            aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput::builder().build()
        });
        let existing_secret =
            mock!(aws_sdk_secretsmanager::Client::describe_secret).then_output(|| {
                aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput::builder()
                    .build()
            });
        let create_secret =
            mock!(aws_sdk_secretsmanager::Client::create_secret).then_output(|| {
                aws_sdk_secretsmanager::operation::create_secret::CreateSecretOutput::builder()
                    .build()
            });
        let provisioner = provisioner(
            mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&query, &actions, &renew, &put, &transact]
            ),
            mocked_client!(
                aws_sdk_ec2,
                RuleMode::MatchAny,
                [&subnets, &describe, &run, &terminate]
            ),
            mocked_client!(
                aws_sdk_secretsmanager,
                RuleMode::MatchAny,
                [&existing_secret, &create_secret]
            ),
        );
        let request: TaskRequest = serde_json::from_value(serde_json::json!({
            "task": "launch",
            "ctx": {"clusterId": ID, "generation": 1, "reason": "create"},
            "leaseToken": 3
        }))
        .unwrap();
        let outcome = provisioner.run(request).await.unwrap();
        assert_eq!(outcome.detail, "launched 0, kept 5, surplus 0");
        assert_eq!(run.num_calls(), 0, "RunInstances on a converged cluster");
        assert_eq!(
            terminate.num_calls(),
            0,
            "TerminateInstances on a converged cluster"
        );
        assert_eq!(put.num_calls(), 0, "action writes on a converged cluster");
        assert_eq!(
            transact.num_calls(),
            0,
            "node writes on a converged cluster"
        );
        assert_eq!(renew.num_calls(), 1);
        assert_eq!(actions.num_calls(), 0, "a task read the action log");
        assert_eq!(
            create_secret.num_calls(),
            0,
            "CreateSecret on a converged cluster"
        );
    }

    #[tokio::test]
    async fn a_token_ec2_refuses_as_mismatched_is_renewed_once_and_recorded_first() {
        // db-2's instance is gone from EC2 (lost); its record still names it.
        let (items, mut instances) = converged();
        instances.pop();
        let query = cluster_partition(items);
        let renew = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
        });
        // Node records go through a fenced transaction: keep every node written, in order.
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Node>::new()));
        let seen = written.clone();
        let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(move |r| {
                for item in r.transact_items() {
                    if let Some(data) = item
                        .put()
                        .and_then(|p| p.item().get("data"))
                        .and_then(|d| d.as_s().ok())
                        && let Ok(node) = serde_json::from_str::<Node>(data)
                    {
                        seen.lock().unwrap().push(node);
                    }
                }
                true
            })
            .then_output(|| {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
                    .build()
            });
        let put = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
        });
        let subnets = three_subnets();
        let describe = instances_described(instances);
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sent = tokens.clone();
        let run = mock!(aws_sdk_ec2::Client::run_instances)
            .match_requests(move |r| {
                sent.lock()
                    .unwrap()
                    .push(r.client_token().unwrap_or_default().to_string());
                true
            })
            .sequence()
            .error(|| {
                aws_sdk_ec2::operation::run_instances::RunInstancesError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("IdempotentParameterMismatch")
                        .message("client token used with different parameters")
                        .build(),
                )
            })
            .output(|| {
                aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder()
                    .instances(
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id("i-0000000000000new")
                            .build(),
                    )
                    .build()
            })
            .build();
        let existing_secret =
            mock!(aws_sdk_secretsmanager::Client::describe_secret).then_output(|| {
                aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput::builder()
                    .build()
            });
        let provisioner = provisioner(
            mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&query, &renew, &put, &transact]
            ),
            mocked_client!(aws_sdk_ec2, RuleMode::MatchAny, [&subnets, &describe, &run]),
            mocked_client!(
                aws_sdk_secretsmanager,
                RuleMode::MatchAny,
                [&existing_secret]
            ),
        );
        let request: TaskRequest = serde_json::from_value(serde_json::json!({
            "task": "launch",
            "ctx": {"clusterId": ID, "generation": 1, "reason": "heal"},
            "leaseToken": 3
        }))
        .unwrap();
        let outcome = provisioner.run(request).await.unwrap();
        assert_eq!(outcome.detail, "launched 1, kept 4, surplus 0");
        let tokens = tokens.lock().unwrap().clone();
        assert_eq!(tokens.len(), 2, "{tokens:?}");
        assert_ne!(tokens[0], tokens[1], "the refused token was sent again");
        let prefix = format!("{ID}-db-2-");
        assert!(tokens.iter().all(|t| t.starts_with(&prefix)), "{tokens:?}");
        // Each token was in the slot's record before RunInstances carried it, and the
        // record of the launched instance keeps the token that launched it.
        let written = written.lock().unwrap().clone();
        let db2: Vec<&Node> = written.iter().filter(|n| n.slot == "db-2").collect();
        let token_at = |i: usize| db2[i].launch_token.clone().unwrap_or_default();
        assert_eq!(db2.len(), 3, "reserve, renew, launched: {db2:?}");
        assert_eq!(token_at(0), tokens[0]);
        assert_eq!(token_at(1), tokens[1]);
        assert_eq!(db2[2].instance_id.as_deref(), Some("i-0000000000000new"));
        assert_eq!(token_at(2), tokens[1]);
    }

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

    #[test]
    fn unchanged_nodes_are_not_rewritten() {
        let node = Node {
            slot: "web-0".into(),
            tier: Tier::Web,
            instance_id: Some("i-1".into()),
            state: NodeState::Running,
            availability_zone: Some("us-east-1a".into()),
            subnet_id: Some("subnet-1".into()),
            role: None,
            host: None,
            member_state: None,
            group_name: None,
            launch_token: None,
            target_health: None,
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let same_later = Node {
            updated_at: "2026-01-02T00:00:00Z".into(),
            ..node.clone()
        };
        assert!(!changed(Some(&node), &same_later));
        let moved_on = Node {
            state: NodeState::Registered,
            ..same_later
        };
        assert!(changed(Some(&node), &moved_on));
        assert!(changed(None, &node));
    }
}
