//! What a workflow run does to its cluster under the lease: take it (bumping the fencing
//! token), record progress, write and delete nodes, end the run, purge a deleted cluster.
//! Every write is conditional on the run's [`Fence`], so a superseded run changes nothing.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::{Item, is_condition_failure, n, number_attr, s, sk_of, to_json};
use super::{ClusterStore, LEASE_SECONDS, TOMBSTONE_SECONDS};
use crate::domain::cluster::{Cluster, LastError, Node, Phase, epoch_seconds, now_rfc3339};
use crate::error::{Error, Result, from_sdk};

/// What a run must still hold to write: the lease token it was given and the generation
/// it works for. A run whose token was superseded, or whose generation a newer request
/// replaced before any new run took the lease, is refused (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The lease token `acquire_lease` gave the run; a newer lease bumps it.
    pub token: u64,
    /// The generation the run works for; a newer request bumps it.
    pub generation: u64,
}

impl Fence {
    /// The fence of a workflow task: the lease token `begin` returned (the state machine
    /// passes it to every later task) and the run's generation.
    pub fn of_task(lease_token: Option<u64>, generation: u64) -> Result<Self> {
        let token = lease_token.ok_or_else(|| {
            Error::validation(
                "leaseToken",
                "is missing",
                "the state machine passes $.lease.token to every task after begin",
            )
        })?;
        Ok(Self { token, generation })
    }
}

impl ClusterStore {
    /// The cluster a workflow run works on, refused (`Superseded`) when a newer generation
    /// was requested since the run began.
    pub async fn cluster_of_run(
        &self,
        ctx: &crate::domain::runs::WorkflowInput,
    ) -> Result<Cluster> {
        let cluster = self.require_cluster(&ctx.cluster_id).await?;
        if cluster.generation != ctx.generation {
            return Err(Error::Superseded(format!(
                "cluster {} is at generation {}, this run is for {}",
                cluster.id, cluster.generation, ctx.generation
            )));
        }
        Ok(cluster)
    }

    /// An UpdateItem on the cluster's META item, to be completed by the caller.
    pub(super) fn update_meta(
        &self,
        id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s("META"))
    }

    /// Start a run: take the cluster's lease for `holder` (free, expired, already ours, or
    /// held by a run of an older generation) and bump the fencing token. Refuses a run whose generation is no longer current.
    pub async fn acquire_lease(&self, id: &str, holder: &str, generation: u64) -> Result<u64> {
        let now = epoch_seconds();
        let result = self
            .update_meta(id)
            .update_expression(
                "SET lease_holder = :h, lease_expires = :exp, lease_generation = :g, \
                 lease_token = if_not_exists(lease_token, :zero) + :one, version = version + :one",
            )
            // A run of a newer generation takes over from an older one (a DELETE during a
            // create): the old holder's token is then stale and its writes are refused.
            .condition_expression(
                "attribute_exists(pk) AND generation = :g AND (attribute_not_exists(lease_holder) \
                 OR lease_expires < :now OR lease_holder = :h OR lease_generation < :g)",
            )
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":exp", n(now + LEASE_SECONDS))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":g", n(generation))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => number_attr(
                output.attributes().unwrap_or(&HashMap::new()),
                "lease_token",
            )
            .ok_or_else(|| Error::CorruptRecord {
                key: Self::cluster_key(id),
                problem: "lease_token missing after update".into(),
            }),
            Err(e) if is_condition_failure(&e) => {
                let meta = self.get_cluster(id).await?;
                match meta {
                    None => Err(Error::NotFound {
                        kind: "cluster",
                        id: id.to_string(),
                    }),
                    Some(c) if c.generation != generation => Err(Error::Superseded(format!(
                        "cluster {id} is at generation {}, this run is for {generation}",
                        c.generation
                    ))),
                    Some(_) => Err(Error::Conflict(format!(
                        "cluster {id} is held by another run; retrying until its lease ends"
                    ))),
                }
            }
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Record progress under the lease: renews it, sets phase and step, bumps `version`.
    /// A stale holder (its token was superseded) is refused: fencing.
    pub async fn record_step(
        &self,
        id: &str,
        fence: Fence,
        phase: Phase,
        step: &str,
    ) -> Result<()> {
        let now = epoch_seconds();
        self.fenced_update(
            id,
            fence,
            "SET phase = :phase, step = :step, updated_at = :at, lease_expires = :exp, \
             version = version + :one",
            vec![
                (":phase", s(phase.as_str())),
                (":step", s(step)),
                (":at", s(now_rfc3339())),
                (":exp", n(now + LEASE_SECONDS)),
                (":one", n(1)),
            ],
        )
        .await
    }

    /// Remember the cluster's target group (created by the workflow).
    pub async fn record_target_group(&self, id: &str, fence: Fence, arn: &str) -> Result<()> {
        self.fenced_update(
            id,
            fence,
            "SET target_group_arn = :arn, version = version + :one",
            vec![(":arn", s(arn)), (":one", n(1))],
        )
        .await
    }

    /// End a run as READY or FAILED and free the lease.
    pub async fn finish_run(
        &self,
        id: &str,
        fence: Fence,
        phase: Phase,
        error: Option<&LastError>,
    ) -> Result<()> {
        let mut values = vec![
            (":phase", s(phase.as_str())),
            (":at", s(now_rfc3339())),
            (":one", n(1)),
        ];
        let expression = match error {
            Some(error) => {
                let json = to_json("last error", error)?;
                values.push((":err", s(json)));
                "SET phase = :phase, updated_at = :at, last_error = :err, version = version + :one \
                 REMOVE lease_holder, lease_expires"
            }
            None => {
                "SET phase = :phase, updated_at = :at, version = version + :one \
                     REMOVE lease_holder, lease_expires, last_error, lost_instances, replace_instances"
            }
        };
        self.fenced_update(id, fence, expression, values).await
    }

    async fn fenced_update(
        &self,
        id: &str,
        fence: Fence,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<()> {
        let mut update = self
            .update_meta(id)
            .update_expression(expression)
            .condition_expression("lease_token = :token AND generation = :fence_generation")
            .expression_attribute_values(":token", n(fence.token))
            .expression_attribute_values(":fence_generation", n(fence.generation));
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(Error::Superseded(format!(
                "cluster {id}: lease token {} of generation {} is no longer current",
                fence.token, fence.generation
            ))),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// One write, made only while `fence` still holds the cluster: a transaction of a
    /// ConditionCheck on META (token and generation) and the write itself.
    pub(super) async fn fenced_transact(
        &self,
        id: &str,
        fence: Fence,
        writes: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<()> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s("META"))
            .condition_expression("lease_token = :token AND generation = :fence_generation")
            .expression_attribute_values(":token", n(fence.token))
            .expression_attribute_values(":fence_generation", n(fence.generation))
            .build()
            .map_err(|e| Error::CorruptRecord {
                key: Self::cluster_key(id),
                problem: e.to_string(),
            })?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(
                std::iter::once(TransactWriteItem::builder().condition_check(check).build())
                    .chain(writes)
                    .collect(),
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let fenced_out = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(e))
                        if e.cancellation_reasons().first().and_then(|r| r.code())
                            == Some("ConditionalCheckFailed")
                );
                if fenced_out {
                    Err(Error::Superseded(format!(
                        "cluster {id}: lease token {} of generation {} is no longer current",
                        fence.token, fence.generation
                    )))
                } else {
                    Err(from_sdk("dynamodb", "TransactWriteItems", err))
                }
            }
        }
    }

    /// Write (or overwrite) a node record under the run's fence; the instance id feeds the
    /// `by-instance` index.
    pub async fn put_node(&self, id: &str, fence: Fence, node: &Node) -> Result<()> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let mut item = HashMap::from([
            ("pk".to_string(), s(Self::cluster_key(id))),
            ("sk".to_string(), s(format!("NODE#{}", node.slot))),
            ("cluster_id".to_string(), s(id)),
            ("data".to_string(), s(to_json("node", node)?)),
        ]);
        if let Some(instance_id) = &node.instance_id {
            item.insert("instance_id".to_string(), s(instance_id));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| Error::CorruptRecord {
                key: Self::cluster_key(id),
                problem: e.to_string(),
            })?;
        self.fenced_transact(
            id,
            fence,
            vec![TransactWriteItem::builder().put(put).build()],
        )
        .await
    }

    /// Delete a node record under the run's fence: its slot is no longer in the spec.
    pub async fn delete_node(&self, id: &str, fence: Fence, slot: &str) -> Result<()> {
        use aws_sdk_dynamodb::types::{Delete, TransactWriteItem};
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("NODE#{slot}")))
            .build()
            .map_err(|e| Error::CorruptRecord {
                key: Self::cluster_key(id),
                problem: e.to_string(),
            })?;
        self.fenced_transact(
            id,
            fence,
            vec![TransactWriteItem::builder().delete(delete).build()],
        )
        .await
    }

    /// After teardown: delete every item of the cluster (nodes, actions) but its META, which
    /// becomes a tombstone (phase DELETED, out of the listing, removed by TTL after 30 days).
    pub async fn purge(&self, id: &str, fence: Fence) -> Result<()> {
        let mut keys: Vec<Item> = self
            .partition_items(Self::cluster_key(id), Some("pk, sk"))
            .await?
            .into_iter()
            .filter(|i| sk_of(i) != "META")
            .collect();
        keys.extend(
            self.partition_items(Self::actions_key(id), Some("pk, sk"))
                .await?,
        );
        for chunk in keys.chunks(25) {
            let requests = chunk
                .iter()
                .map(|key| {
                    aws_sdk_dynamodb::types::DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map(|delete| {
                            aws_sdk_dynamodb::types::WriteRequest::builder()
                                .delete_request(delete)
                                .build()
                        })
                        .map_err(|e| Error::CorruptRecord {
                            key: Self::cluster_key(id),
                            problem: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut pending = HashMap::from([(self.table.clone(), requests)]);
            // BatchWriteItem may leave items unprocessed under load: resend them.
            for _ in 0..8 {
                let output = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| from_sdk("dynamodb", "BatchWriteItem", e))?;
                pending = output.unprocessed_items().cloned().unwrap_or_default();
                if pending.values().all(Vec::is_empty) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if !pending.values().all(Vec::is_empty) {
                return Err(Error::Aws {
                    service: "dynamodb",
                    operation: "BatchWriteItem",
                    code: "UnprocessedItems".into(),
                    message: "items left after retries".into(),
                    retryable: true,
                });
            }
        }
        // Free the name once the cluster is gone, so it can be used again.
        if let Some(cluster) = self.get_cluster(id).await? {
            let released = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(Self::name_key(&cluster.spec.name)))
                .key("sk", s("NAME"))
                .condition_expression("cluster_id = :id")
                .expression_attribute_values(":id", s(id))
                .send()
                .await;
            match released {
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(from_sdk("dynamodb", "DeleteItem", e)),
            }
        }
        self.fenced_update(
            id,
            fence,
            "SET phase = :deleted, updated_at = :at, expires_at = :ttl, version = version + :one \
             REMOVE list_pk, list_sk, lease_holder, lease_expires, target_group_arn",
            vec![
                (":deleted", s(Phase::Deleted.as_str())),
                (":at", s(now_rfc3339())),
                (":ttl", n(epoch_seconds() + TOMBSTONE_SECONDS)),
                (":one", n(1)),
            ],
        )
        .await
    }
}
