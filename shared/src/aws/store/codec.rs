//! Between DynamoDB's attribute values and the domain's types, with no DynamoDB call:
//! attribute builders and readers, items to clusters and summaries, the list cursor, JSON
//! that fails loudly instead of writing `""`, and the reading of a conditional write's
//! answer.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::CLUSTER_LIST_PARTITION;
use crate::domain::cluster::{Cluster, ClusterSummary, Phase};
use crate::domain::spec::ClusterSpec;
use crate::error::{Error, Result, from_sdk, sdk_error_code};

/// One DynamoDB item, as the SDK reads and writes it.
pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn number_attr(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub(super) fn sk_of(item: &Item) -> &str {
    item.get("sk")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .unwrap_or("")
}

/// `value` as the JSON text an item's attribute holds. A value that cannot be encoded is an
/// [`Error::Encode`] naming `what`: never an empty string written in its place, which
/// would read back later as a corrupt record far from the bug that wrote it.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::encode(what, e))
}

pub(super) fn data_of<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T> {
    let key = format!(
        "{}/{}",
        item.get("pk")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .unwrap_or(""),
        sk_of(item)
    );
    let data = item
        .get("data")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| Error::CorruptRecord {
            key: key.clone(),
            problem: "data attribute missing".into(),
        })?;
    serde_json::from_str(data).map_err(|e| Error::CorruptRecord {
        key,
        problem: e.to_string(),
    })
}

pub(super) fn cluster_from_meta(item: &Item) -> Result<Cluster> {
    let key = item
        .get("pk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let corrupt = |problem: String| Error::CorruptRecord {
        key: key.clone(),
        problem,
    };
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let required = |name: &str| text(name).ok_or_else(|| corrupt(format!("{name} is missing")));
    let phase_text = required("phase")?;
    let phase = Phase::parse(&phase_text)
        .ok_or_else(|| corrupt(format!("unknown phase {phase_text:?}")))?;
    let spec: ClusterSpec =
        serde_json::from_str(&required("spec")?).map_err(|e| corrupt(format!("spec: {e}")))?;
    let last_error = match text("last_error") {
        Some(json) => {
            Some(serde_json::from_str(&json).map_err(|e| corrupt(format!("last_error: {e}")))?)
        }
        None => None,
    };
    Ok(Cluster {
        id: required("id")?,
        phase,
        step: text("step"),
        spec,
        generation: number_attr(item, "generation")
            .ok_or_else(|| corrupt("generation is missing".into()))?,
        version: number_attr(item, "version")
            .ok_or_else(|| corrupt("version is missing".into()))?,
        created_at: required("created_at")?,
        updated_at: required("updated_at")?,
        last_error,
        target_group_arn: text("target_group_arn"),
        replacing: item
            .get("replace_instances")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        nodes: Vec::new(),
        actions: Vec::new(),
    })
}

/// The cursor is the `list_sk` of the last item: `<created_at>#<id>`. Everything else in
/// the index's start key derives from it, so the cursor stays short and opaque enough.
pub(super) fn start_key_from_cursor(cursor: &str) -> Result<Item> {
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

pub(super) fn summary_from_item(item: &Item) -> Result<ClusterSummary> {
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

/// A conditional write's answer as whether it happened: a failed condition is `false`
/// (someone else claimed it, or it was done already), any other error an error.
pub(super) fn happened<O, E>(
    result: std::result::Result<
        O,
        aws_sdk_dynamodb::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    >,
    operation: &'static str,
) -> Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(from_sdk("dynamodb", operation, e)),
    }
}

pub(super) fn is_condition_failure<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    sdk_error_code(err) == Some("ConditionalCheckFailedException")
}

/// A per-process-random number: `RandomState` is seeded randomly for every instance.
pub fn unique_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_cannot_be_encoded_is_an_encode_error_not_an_empty_string() {
        // serde_json writes map keys as strings only: a tuple key fails its `Serialize`.
        let unencodable = HashMap::from([((1u32, 2u32), "x")]);
        let err = to_json("test map", &unencodable).unwrap_err();
        assert!(
            matches!(err, Error::Encode { what: "test map", ref problem } if problem.contains("key must be a string")),
            "{err}"
        );
        assert_eq!(
            to_json("test map", &HashMap::from([("k", 1)])).unwrap(),
            r#"{"k":1}"#
        );
    }
}
