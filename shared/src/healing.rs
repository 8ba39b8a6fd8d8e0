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
}

impl Healer {
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
            .store
            .request_heal(&cluster_id, &detail.instance_id, false)
            .await?
        else {
            return Ok(Reaction::AlreadyHandled { cluster_id });
        };
        self.store
            .append_action(
                &cluster_id,
                generation,
                "InstanceLost",
                &format!(
                    "{} ({}) is {}; healing run, generation {generation}",
                    detail.instance_id,
                    node.slot,
                    serde_json::to_value(detail.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            )
            .await?;
        self.workflow
            .start(&WorkflowInput {
                cluster_id: cluster_id.clone(),
                generation,
                reason: RunReason::Heal,
            })
            .await?;
        Ok(Reaction::Started {
            cluster_id,
            generation,
        })
    }
}
