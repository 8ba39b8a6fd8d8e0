//! DynamoDB adapter: the single table that holds every cluster's state.
//!
//! Key design (one table, see template.yaml):
//! - `pk = CLUSTER#<id>`, `sk = META`: spec, status, `version`, `generation`.
//! - The sparse GSI `clusters` (`list_pk = CLUSTER`, `list_sk = <created_at>#<id>`) lists
//!   clusters newest first without a Scan; only META items carry `list_pk`.
//!
//! SDK types stay inside this module; callers see domain types.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{Error, Result, from_sdk};
use crate::model::{ClusterSummary, Page, Phase};

pub const CLUSTERS_INDEX: &str = "clusters";
pub const CLUSTER_LIST_PARTITION: &str = "CLUSTER";
pub const MAX_PAGE_SIZE: u32 = 100;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct ClusterStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl ClusterStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

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
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The cursor is the `list_sk` of the last item: `<created_at>#<id>`. Everything else in
/// the index's start key derives from it, so the cursor stays short and opaque enough.
fn start_key_from_cursor(cursor: &str) -> Result<Item> {
    let invalid = || {
        Error::validation(
            "next",
            format!("{cursor:?} is not a cursor this API returned"),
            "pass the `next` value of the previous page unchanged, or omit it to start over",
        )
    };
    let (created_at, id) = cursor.rsplit_once('#').ok_or_else(invalid)?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok || created_at.is_empty() || created_at.len() > 40 {
        return Err(invalid());
    }
    Ok(HashMap::from([
        ("pk".to_string(), s(format!("CLUSTER#{id}"))),
        ("sk".to_string(), s("META")),
        ("list_pk".to_string(), s(CLUSTER_LIST_PARTITION)),
        ("list_sk".to_string(), s(cursor)),
    ]))
}

fn summary_from_item(item: &Item) -> Result<ClusterSummary> {
    let key = item
        .get("pk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_else(|| "<no pk>".into());
    let corrupt = |problem: String| Error::CorruptRecord {
        key: key.clone(),
        problem,
    };
    let text = |name: &str| -> Result<String> {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| corrupt(format!("string attribute {name} is missing")))
    };
    let number = |name: &str| -> Result<u32> {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| corrupt(format!("number attribute {name} is missing or not a count")))
    };
    let phase_text = text("phase")?;
    let phase = Phase::parse(&phase_text)
        .ok_or_else(|| corrupt(format!("unknown phase {phase_text:?}")))?;
    Ok(ClusterSummary {
        id: text("id")?,
        name: text("name")?,
        phase,
        web_count: number("web_count")?,
        db_count: number("db_count")?,
        created_at: text("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client as mock_client;
    use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
    use aws_smithy_mocks::{RuleMode, mock};

    fn cluster_item(id: &str, phase: &str) -> Item {
        HashMap::from([
            ("pk".into(), s(format!("CLUSTER#{id}"))),
            ("sk".into(), s("META")),
            ("id".into(), s(id)),
            ("name".into(), s("shop")),
            ("phase".into(), s(phase)),
            ("web_count".into(), AttributeValue::N("2".into())),
            ("db_count".into(), AttributeValue::N("3".into())),
            ("created_at".into(), s("2026-11-23T10:00:00Z")),
        ])
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
