//! The sweep's memory between two of its runs, in the cluster's partition: since when a
//! target is unhealthy (`WATCH#`), a slot's last replacement for health (`REPLACED#`,
//! anti-flapping) and the last membership survey (`SURVEY`). Read back with the cluster
//! by `get_watched_cluster`.

use std::collections::HashMap;

use super::codec::{happened, n, number_attr, s};
use super::{ClusterStore, EVENT_RECORD_SECONDS};
use crate::domain::cluster::epoch_seconds;
use crate::error::{Result, from_sdk};

/// What the sweep remembers about a cluster's health between two runs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthWatch {
    /// Instance id -> epoch second its target was first seen unhealthy.
    pub unhealthy_since: HashMap<String, i64>,
    /// Slot -> epoch second of its last replacement for health.
    pub replaced_at: HashMap<String, i64>,
    /// Epoch second of the last membership survey (the `SURVEY` claim item), so the sweep
    /// skips clusters not due without a conditional write that would fail.
    pub surveyed_at: Option<i64>,
}

impl ClusterStore {
    /// The time the sweep first saw `instance_id`'s target unhealthy (now, when it had not
    /// yet). Kept a day, and cleared when the target is seen healthy again.
    pub async fn watch_unhealthy(&self, id: &str, instance_id: &str) -> Result<i64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("WATCH#{instance_id}")))
            .update_expression("SET since = if_not_exists(since, :now), expires_at = :ttl")
            .expression_attribute_values(":now", n(epoch_seconds()))
            .expression_attribute_values(":ttl", n(epoch_seconds() + EVENT_RECORD_SECONDS))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "UpdateItem", e))?;
        Ok(output
            .attributes()
            .and_then(|item| number_attr(item, "since"))
            .map(|since| since as i64)
            .unwrap_or_else(epoch_seconds))
    }

    /// Forget that a target was unhealthy (it recovered, or its node is gone).
    pub async fn clear_watch(&self, id: &str, instance_id: &str) -> Result<()> {
        self.delete_key(Self::cluster_key(id), format!("WATCH#{instance_id}"))
            .await
    }

    /// Anti-flapping: claim the one health replacement `slot` may have per `window_seconds`.
    /// False when the slot was replaced for its health within the window.
    pub async fn claim_replacement(
        &self,
        id: &str,
        slot: &str,
        instance_id: &str,
        window_seconds: i64,
    ) -> Result<bool> {
        let now = epoch_seconds();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::cluster_key(id)))
            .item("sk", s(format!("REPLACED#{slot}")))
            .item("replaced_at", n(now))
            .item("instance_id", s(instance_id))
            .item("expires_at", n(now + window_seconds.max(0)))
            .condition_expression("attribute_not_exists(pk) OR replaced_at <= :cutoff")
            .expression_attribute_values(":cutoff", n(now - window_seconds))
            .send()
            .await;
        happened(result, "PutItem")
    }

    /// Give back a claim whose replacement could not be started.
    pub async fn release_replacement(&self, id: &str, slot: &str) -> Result<()> {
        self.delete_key(Self::cluster_key(id), format!("REPLACED#{slot}"))
            .await
    }

    /// Note, once per instance and window, that a replacement of `slot` was held back; true
    /// the first time (so the action log says it once, not on every sweep).
    pub async fn note_replacement_held(
        &self,
        id: &str,
        slot: &str,
        instance_id: &str,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("REPLACED#{slot}")))
            .update_expression("SET held_instance = :instance")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(held_instance) \
                 OR held_instance <> :instance)",
            )
            .expression_attribute_values(":instance", s(instance_id))
            .send()
            .await;
        happened(result, "UpdateItem")
    }

    /// Claim a membership survey of cluster `id`: true at most once per `interval_seconds`.
    pub async fn claim_survey(&self, id: &str, interval_seconds: i64) -> Result<bool> {
        let now = epoch_seconds();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::cluster_key(id)))
            .item("sk", s("SURVEY"))
            .item("surveyed_at", n(now))
            .condition_expression("attribute_not_exists(pk) OR surveyed_at <= :cutoff")
            .expression_attribute_values(":cutoff", n(now - interval_seconds))
            .send()
            .await;
        happened(result, "PutItem")
    }
}
