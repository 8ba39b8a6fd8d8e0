//! What has happened: the cluster's audit log (`ACTIONS#`, a partition of its own so the
//! hot path does not grow with it) and the EventBridge events already handled (`EVENT#`,
//! because EventBridge delivers at least once).

use super::codec::{data_of, happened, n, s, to_json, unique_u32};
use super::{ClusterStore, EVENT_RECORD_SECONDS, RECENT_ACTIONS};
use crate::domain::cluster::{Action, epoch_seconds, now_rfc3339};
use crate::error::{Result, from_sdk};

impl ClusterStore {
    /// The newest actions (one page, newest first from DynamoDB), in time order. Kept out
    /// of `get_cluster`: every workflow task reads the cluster, only people read the log.
    pub async fn recent_actions(&self, id: &str) -> Result<Vec<Action>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(Self::actions_key(id)))
            .scan_index_forward(false)
            .limit(RECENT_ACTIONS as i32)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "Query", e))?;
        let mut actions = output
            .items()
            .iter()
            .map(data_of)
            .collect::<Result<Vec<Action>>>()?;
        actions.reverse();
        Ok(actions)
    }

    /// Append to the audit log. The sort key orders by time; the suffix keeps two actions
    /// of the same millisecond apart.
    pub async fn append_action(
        &self,
        id: &str,
        generation: u64,
        action: &str,
        detail: &str,
    ) -> Result<()> {
        let entry = Action {
            at: now_rfc3339(),
            action: action.to_string(),
            detail: detail.to_string(),
            generation,
        };
        let suffix = format!("{:08x}", unique_u32());
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::actions_key(id)))
            .item("sk", s(format!("ACTION#{}#{suffix}", entry.at)))
            .item("data", s(to_json("action", &entry)?))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "PutItem", e))?;
        tracing::info!(cluster_id = id, generation, action, detail, "action");
        Ok(())
    }

    /// Record that an event was handled; false when it already was (EventBridge delivers
    /// at least once). Kept a day.
    pub async fn claim_event(&self, event_id: &str) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("EVENT#{event_id}")))
            .item("sk", s("EVENT"))
            .item("expires_at", n(epoch_seconds() + EVENT_RECORD_SECONDS))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        happened(result, "PutItem")
    }

    /// Forget an event claim (its handling failed; EventBridge will deliver it again).
    pub async fn release_event(&self, event_id: &str) -> Result<()> {
        self.delete_key(format!("EVENT#{event_id}"), "EVENT".into())
            .await
    }
}
