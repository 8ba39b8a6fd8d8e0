//! Cluster records as read and created: the META item with its nodes (and, for the sweep,
//! its health items, all one partition read), the list index, the `NAME#` claim taken at
//! creation, and the `by-instance` lookup from an instance to its node.

use std::collections::HashMap;

use super::codec::{
    Item, cluster_from_meta, data_of, n, number_attr, s, sk_of, start_key_from_cursor,
    summary_from_item, to_json,
};
use super::{
    CLUSTER_LIST_PARTITION, CLUSTERS_INDEX, ClusterStore, HealthWatch, INSTANCE_INDEX,
    MAX_PAGE_SIZE,
};
use crate::domain::cluster::{Cluster, ClusterSummary, Node, Page, Phase, now_rfc3339};
use crate::domain::spec::ClusterSpec;
use crate::error::{Error, Result, from_sdk};

/// What `create_cluster` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The cluster and its name claim were written: a workflow is to be started.
    New,
    /// A cluster with this id already exists; its spec is returned to compare.
    Existing(ClusterSpec),
    /// Another live cluster (this id) has the name.
    NameTaken(String),
}

impl ClusterStore {
    /// One page of clusters, newest first. `after` is the cursor a previous page returned.
    pub async fn list_clusters(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<ClusterSummary>> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(CLUSTERS_INDEX)
            .key_condition_expression("list_pk = :p")
            .expression_attribute_values(":p", s(CLUSTER_LIST_PARTITION))
            .scan_index_forward(false)
            .limit(limit.clamp(1, MAX_PAGE_SIZE) as i32);
        if let Some(cursor) = after {
            query = query.set_exclusive_start_key(Some(start_key_from_cursor(cursor)?));
        }
        let output = query
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "Query", e))?;
        let items = output
            .items()
            .iter()
            .map(summary_from_item)
            .collect::<Result<Vec<_>>>()?;
        let next = output
            .last_evaluated_key()
            .and_then(|key| key.get("list_sk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(Page { items, next })
    }

    /// How many clusters hold a place on the stack's load balancer: every cluster from its
    /// create until its purge is on the sparse list index, and each owns one target group
    /// and one listener rule there. A COUNT query reads no item bodies; it pages (1 MB of
    /// index per page) until done.
    pub async fn count_live_clusters(&self) -> Result<u32> {
        let mut count = 0u32;
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CLUSTERS_INDEX)
                .key_condition_expression("list_pk = :p")
                .expression_attribute_values(":p", s(CLUSTER_LIST_PARTITION))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| from_sdk("dynamodb", "Query", e))?;
            count += u32::try_from(output.count()).unwrap_or_default();
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(count),
            }
        }
    }

    /// Record a new cluster (phase PENDING, generation 1) and claim its name, both or
    /// neither: a transaction with a condition on each item.
    pub async fn create_cluster(&self, id: &str, spec: &ClusterSpec) -> Result<Created> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let now = now_rfc3339();
        let spec_json = to_json("cluster spec", spec)?;
        let meta = HashMap::from([
            ("pk".to_string(), s(Self::cluster_key(id))),
            ("sk".to_string(), s("META")),
            ("id".to_string(), s(id)),
            ("name".to_string(), s(&spec.name)),
            ("phase".to_string(), s(Phase::Pending.as_str())),
            ("spec".to_string(), s(spec_json)),
            ("generation".to_string(), n(1)),
            ("version".to_string(), n(1)),
            ("web_count".to_string(), n(spec.web.count)),
            ("db_count".to_string(), n(spec.db.count)),
            ("created_at".to_string(), s(&now)),
            ("updated_at".to_string(), s(&now)),
            ("list_pk".to_string(), s(CLUSTER_LIST_PARTITION)),
            ("list_sk".to_string(), s(format!("{now}#{id}"))),
        ]);
        let claim = HashMap::from([
            ("pk".to_string(), s(Self::name_key(&spec.name))),
            ("sk".to_string(), s("NAME")),
            ("cluster_id".to_string(), s(id)),
        ]);
        let build = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| Error::CorruptRecord {
                    key: Self::cluster_key(id),
                    problem: e.to_string(),
                })
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(build(meta)?)
            .transact_items(build(claim)?)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Created::New),
            Err(err) => err,
        };
        let reasons: Vec<String> = match err.as_service_error() {
            Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e)) => e
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_string())
                .collect(),
            _ => return Err(from_sdk("dynamodb", "TransactWriteItems", err)),
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .map(|c| c == "ConditionalCheckFailed")
                .unwrap_or(false)
        };
        if failed(0) {
            let existing = self.get_cluster(id).await?.ok_or_else(|| {
                Error::Conflict(format!("cluster {id} was being created concurrently"))
            })?;
            Ok(Created::Existing(existing.spec))
        } else if failed(1) {
            let owner = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(Self::name_key(&spec.name)))
                .key("sk", s("NAME"))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| from_sdk("dynamodb", "GetItem", e))?
                .item()
                .and_then(|i| i.get("cluster_id"))
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            Ok(Created::NameTaken(owner))
        } else {
            Err(from_sdk("dynamodb", "TransactWriteItems", err))
        }
    }

    /// Every item of a partition (all pages, strongly consistent), optionally only some
    /// attributes. A cluster has two: `CLUSTER#<id>` (META and nodes, read by every task)
    /// and `ACTIONS#<id>` (the audit log, which grows with the cluster's life and so is
    /// kept out of the hot path).
    pub(super) async fn partition_items(
        &self,
        pk: String,
        projection: Option<&str>,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .set_projection_expression(projection.map(str::to_string))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("dynamodb", "Query", e))?;
            items.extend(page.items().iter().cloned());
        }
        Ok(items)
    }

    /// The cluster's record and nodes, or `None`; `actions` is left empty (see
    /// `recent_actions`).
    pub async fn get_cluster(&self, id: &str) -> Result<Option<Cluster>> {
        Ok(self
            .get_watched_cluster(id)
            .await?
            .map(|(cluster, _)| cluster))
    }

    /// [`Self::get_cluster`] plus the sweep's health watch of it, from the one read.
    pub async fn get_watched_cluster(&self, id: &str) -> Result<Option<(Cluster, HealthWatch)>> {
        let items = self.partition_items(Self::cluster_key(id), None).await?;
        let Some(meta) = items.iter().find(|i| sk_of(i) == "META") else {
            return Ok(None);
        };
        let mut cluster = cluster_from_meta(meta)?;
        let mut watch = HealthWatch::default();
        for item in &items {
            let sk = sk_of(item);
            if sk.starts_with("NODE#") {
                cluster.nodes.push(data_of(item)?);
            } else if let Some(instance_id) = sk.strip_prefix("WATCH#") {
                if let Some(since) = number_attr(item, "since") {
                    watch
                        .unhealthy_since
                        .insert(instance_id.to_string(), since as i64);
                }
            } else if sk == "SURVEY" {
                watch.surveyed_at = number_attr(item, "surveyed_at").map(|at| at as i64);
            } else if let Some(slot) = sk.strip_prefix("REPLACED#")
                && let Some(at) = number_attr(item, "replaced_at")
            {
                watch.replaced_at.insert(slot.to_string(), at as i64);
            }
        }
        Ok(Some((cluster, watch)))
    }

    /// [`Self::get_cluster`], with a missing cluster as `NotFound`.
    pub async fn require_cluster(&self, id: &str) -> Result<Cluster> {
        self.get_cluster(id).await?.ok_or_else(|| Error::NotFound {
            kind: "cluster",
            id: id.to_string(),
        })
    }

    /// The live cluster that holds `name`, if any (the name claim).
    pub async fn cluster_id_by_name(&self, name: &str) -> Result<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::name_key(name)))
            .key("sk", s("NAME"))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        Ok(output
            .item()
            .and_then(|i| i.get("cluster_id"))
            .and_then(|v| v.as_s().ok())
            .cloned())
    }

    /// The cluster and node an instance belongs to (the `by-instance` index), if any.
    pub async fn node_of_instance(&self, instance_id: &str) -> Result<Option<(String, Node)>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INSTANCE_INDEX)
            .key_condition_expression("instance_id = :instance")
            .expression_attribute_values(":instance", s(instance_id))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "Query", e))?;
        let Some(item) = output
            .items()
            .iter()
            .find(|i| sk_of(i).starts_with("NODE#"))
        else {
            return Ok(None);
        };
        let cluster_id = item
            .get("cluster_id")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        Ok(Some((cluster_id, data_of(item)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::store::testing::cluster_item;
    use crate::mocked_client as mock_client;
    use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
    use aws_smithy_mocks::{RuleMode, mock};

    #[tokio::test]
    async fn the_sweep_reads_watches_replacements_and_the_last_survey_with_the_cluster() {
        let spec = r#"{"name":"shop","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#;
        let mut meta = cluster_item("c-1", "READY");
        meta.insert("spec".into(), s(spec));
        meta.insert("generation".into(), n(3));
        meta.insert("version".into(), n(9));
        meta.insert("updated_at".into(), s("2026-11-23T10:00:00Z"));
        let item = |sk: &str, attribute: &str, value: i64| {
            HashMap::from([
                ("pk".to_string(), s("CLUSTER#c-1")),
                ("sk".to_string(), s(sk)),
                (attribute.to_string(), n(value)),
            ])
        };
        let items = vec![
            meta,
            item("WATCH#i-1", "since", 100),
            item("REPLACED#web-0", "replaced_at", 200),
            item("SURVEY", "surveyed_at", 300),
        ];
        let query = mock!(aws_sdk_dynamodb::Client::query).then_output(move || {
            QueryOutput::builder()
                .set_items(Some(items.clone()))
                .build()
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&query]);
        let (cluster, watch) = ClusterStore::new(client, "t")
            .get_watched_cluster("c-1")
            .await
            .unwrap()
            .expect("the cluster");
        assert_eq!((cluster.id.as_str(), cluster.generation), ("c-1", 3));
        assert_eq!(watch.unhealthy_since.get("i-1"), Some(&100));
        assert_eq!(watch.replaced_at.get("web-0"), Some(&200));
        assert_eq!(watch.surveyed_at, Some(300));
    }

    #[tokio::test]
    async fn lists_clusters_from_the_sparse_index_newest_first() {
        let query = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|req| {
                req.index_name() == Some(CLUSTERS_INDEX)
                    && req.scan_index_forward() == Some(false)
                    && req.limit() == Some(2)
                    && req.exclusive_start_key().is_none()
            })
            .then_output(|| {
                QueryOutput::builder()
                    .items(cluster_item("c-1", "READY"))
                    .last_evaluated_key("list_sk", s("2026-11-23T10:00:00Z#c-1"))
                    .build()
            });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&query]);
        let page = ClusterStore::new(client, "t")
            .list_clusters(2, None)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].phase, Phase::Ready);
        assert_eq!(page.next.as_deref(), Some("2026-11-23T10:00:00Z#c-1"));
        assert_eq!(query.num_calls(), 1);
    }

    #[tokio::test]
    async fn cursor_becomes_the_exclusive_start_key() {
        let query = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|req| {
                let key = req.exclusive_start_key().expect("start key");
                key.get("pk") == Some(&s("CLUSTER#c-9")) && key.get("sk") == Some(&s("META"))
            })
            .then_output(|| QueryOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, [&query]);
        let page = ClusterStore::new(client, "t")
            .list_clusters(10, Some("2026-11-23T10:00:00Z#c-9"))
            .await
            .unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.next, None);
    }

    #[tokio::test]
    async fn a_forged_cursor_is_a_validation_error_before_any_call() {
        let client = mock_client!(aws_sdk_dynamodb, []);
        let err = ClusterStore::new(client, "t")
            .list_clusters(10, Some("CLUSTER#x\" OR 1=1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Validation { ref field, .. } if field == "next"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn throttling_is_reported_as_retryable() {
        let query = mock!(aws_sdk_dynamodb::Client::query).then_error(|| {
            QueryError::ProvisionedThroughputExceededException(
                aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    // As the SDK's deserializer does: the code travels in the error metadata.
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("ProvisionedThroughputExceededException")
                            .message("slow down")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, [&query]);
        let err = ClusterStore::new(client, "t")
            .list_clusters(10, None)
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_item_is_reported_with_its_key() {
        let query = mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
            QueryOutput::builder()
                .items(cluster_item("c-2", "SOMETHING"))
                .build()
        });
        let client = mock_client!(aws_sdk_dynamodb, [&query]);
        let err = ClusterStore::new(client, "t")
            .list_clusters(10, None)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("CLUSTER#c-2") && message.contains("SOMETHING"),
            "{message}"
        );
    }
}
