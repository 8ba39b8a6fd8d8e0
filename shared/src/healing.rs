//! Reacting to EC2 "Instance State-change Notification" events: a cluster node that stops
//! or terminates starts a healing run of `ClusterWorkflow`, which launches a replacement in
//! the same slot (and zone), registers it or adds it to the group, and removes the lost
//! member. The reaction itself changes no node: only the run's lease holder does.
//!
//! Duplicates and stale events change nothing: an event id is handled once (a record with
//! a day's TTL), a loss already being healed does not start a second run (the cluster
//! remembers its lost instances until a run finishes READY), and an instance that is no
//! longer any node's (already replaced, or never ours) is ignored.

use crate::error::Result;
use crate::events::{InstanceStateChangeEvent, RunReason, WorkflowInput};
use crate::store::ClusterStore;
use crate::workflow::Workflow;

/// What an event led to (logged, and returned for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// `pending`/`running`: nothing lost.
    NotALoss,
    /// This event id was handled before.
    Duplicate,
    /// No node has this instance: another application's, or already replaced.
    UnknownInstance,
    /// The loss is already being healed, or the cluster is being deleted.
    AlreadyHandled {
        cluster_id: String,
    },
    Started {
        cluster_id: String,
        generation: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Healer {
    pub store: ClusterStore,
    pub workflow: Workflow,
    pub ec2: aws_sdk_ec2::Client,
}

/// What one sweep saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub clusters_checked: usize,
    pub describe_calls: usize,
    pub heals_started: Vec<(String, String)>,
}

impl Healer {
    /// Start one healing run for a lost instance; `None` when its loss is already being
    /// healed or the cluster is being deleted.
    async fn start_heal(
        &self,
        cluster_id: &str,
        instance_id: &str,
        slot: &str,
        why: &str,
    ) -> Result<Option<u64>> {
        let Some(generation) = self
            .store
            .request_heal(cluster_id, instance_id, false)
            .await?
        else {
            return Ok(None);
        };
        self.workflow
            .start_explained(
                &self.store,
                WorkflowInput {
                    cluster_id: cluster_id.to_string(),
                    generation,
                    reason: RunReason::Heal,
                },
                "InstanceLost",
                &format!("{instance_id} ({slot}) is {why}"),
            )
            .await?;
        Ok(Some(generation))
    }

    /// The scheduled sweep: every READY cluster's nodes against one fleet-wide view of EC2
    /// (a page per 1,000 instances, not a call per cluster). A node whose instance is lost
    /// without its event having arrived (EventBridge delivery is not guaranteed) starts a
    /// healing run, exactly as the event would have.
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> Result<SweepReport> {
        let (states, describe_calls) = crate::fleet::observe_all(&self.ec2).await?;
        let mut report = SweepReport {
            describe_calls,
            ..SweepReport::default()
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_clusters(crate::store::MAX_PAGE_SIZE, after.as_deref())
                .await?;
            for summary in page
                .items
                .iter()
                .filter(|c| c.phase == crate::model::Phase::Ready)
            {
                let Some(cluster) = self.store.get_cluster(&summary.id).await? else {
                    continue;
                };
                report.clusters_checked += 1;
                for node in &cluster.nodes {
                    let Some(instance_id) = &node.instance_id else {
                        continue;
                    };
                    let state = states.get(instance_id).copied();
                    if state.is_some_and(crate::model::InstanceState::is_alive) {
                        continue;
                    }
                    let why = match state {
                        Some(state) => format!("{} (found by the sweep)", state.as_str()),
                        None => "gone (found by the sweep)".into(),
                    };
                    if self
                        .start_heal(&cluster.id, instance_id, &node.slot, &why)
                        .await?
                        .is_some()
                    {
                        report
                            .heals_started
                            .push((cluster.id.clone(), instance_id.clone()));
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(report)
    }

    #[tracing::instrument(skip_all, fields(event_id = %event.id.as_deref().unwrap_or_default(), instance_id = %event.detail.instance_id, state = ?event.detail.state))]
    pub async fn on_state_change(&self, event: &InstanceStateChangeEvent) -> Result<Reaction> {
        let detail = &event.detail;
        if !detail.state.is_lost() {
            return Ok(Reaction::NotALoss);
        }
        let event_id = event.id.clone().unwrap_or_default();
        if !event_id.is_empty() && !self.store.claim_event(&event_id).await? {
            return Ok(Reaction::Duplicate);
        }
        match self.react(event).await {
            Ok(reaction) => Ok(reaction),
            Err(error) => {
                // Let EventBridge's retry handle the event again.
                if !event_id.is_empty() {
                    self.store.release_event(&event_id).await?;
                }
                Err(error)
            }
        }
    }

    async fn react(&self, event: &InstanceStateChangeEvent) -> Result<Reaction> {
        let detail = &event.detail;
        let Some((cluster_id, node)) = self.store.node_of_instance(&detail.instance_id).await?
        else {
            return Ok(Reaction::UnknownInstance);
        };
        let Some(generation) = self
            .start_heal(
                &cluster_id,
                &detail.instance_id,
                &node.slot,
                detail.state.as_str(),
            )
            .await?
        else {
            return Ok(Reaction::AlreadyHandled { cluster_id });
        };
        Ok(Reaction::Started {
            cluster_id,
            generation,
        })
    }
}
