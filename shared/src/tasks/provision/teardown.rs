//! A deleted cluster taken down: `deregister` its web targets, `terminate` its instances,
//! `check-terminated` until EC2 says they are gone, `purge` what is left (target group,
//! alarms, secrets, command output, the cluster's records).

use super::{Provisioner, TERMINATED_TIMEOUT_SECS, TaskOutcome, TaskRequest, wait_outcome};
use crate::aws::store::Fence;
use crate::domain::cluster::{Cluster, Node, NodeState, Tier, now_rfc3339};
use crate::error::Result;

impl Provisioner {
    pub(super) async fn deregister(&self, cluster: &Cluster) -> Result<TaskOutcome> {
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

    pub(super) async fn terminate(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
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

    pub(super) async fn check_terminated(
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

    pub(super) async fn purge(&self, cluster: &Cluster, fence: Fence) -> Result<TaskOutcome> {
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
}
