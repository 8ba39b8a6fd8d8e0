//! The cluster built or repaired to its spec: `launch` (fill every slot, retire what is
//! surplus), `check-running`, `register` (web targets, listener rule, scaling alarms),
//! `check-healthy` (and drained), `finish` (retire replaced instances, READY).

use super::{
    HEALTHY_TIMEOUT_SECS, Provisioner, RUNNING_TIMEOUT_SECS, TaskOutcome, TaskRequest, fence_of,
    wait_outcome,
};
use crate::aws::fleet::{LaunchRequest, Launched};
use crate::aws::store::Fence;
use crate::domain::cluster::{
    Cluster, InstanceState, Node, NodeState, Phase, Slot, Tier, now_rfc3339,
};
use crate::domain::plan::{
    ObservedInstance, desired_slots, fresh_launch_token, launch_token, plan_launches,
};
use crate::error::{Error, Result};

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
    pub(super) async fn launch(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
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

    pub(super) async fn check_running(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
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

    pub(super) async fn register(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
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

    pub(super) async fn check_healthy(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
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

    pub(super) async fn finish(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
