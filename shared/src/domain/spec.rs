//! What a user asks for (`POST /clusters`), validated into a [`ClusterSpec`].
//!
//! Every refusal names the field, what is wrong and what to send instead, so a 4xx is
//! enough to fix the request without reading our code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::backup::{
    BackupId, BackupPolicy, BackupSchedule, MAX_BACKUP_HOURS, RETENTION_DAYS, RestorePlan, epoch_of,
};
use crate::error::{Error, Result};

/// The most web instances a cluster may have.
const MAX_WEB: u32 = 20;
/// Database node counts allowed: odd, so a majority survives a lost node.
const DB_COUNTS: [u32; 3] = [1, 3, 5];
/// The largest request body (create or `PATCH`) read.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The most subnets a spec may list.
const MAX_SUBNETS: usize = 6;

/// How many instances of what type one tier gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    /// The number of instances.
    pub count: u32,
    /// Their EC2 instance type (`t3.small`).
    pub instance_type: String,
}

/// How far the web tier may scale, by alarm or by `PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// The fewest web instances scaling in leaves.
    pub min_web: u32,
    /// The most web instances scaling out reaches.
    pub max_web: u32,
}

impl ScalingSpec {
    /// Never below two web instances (one zone may fail) unless fewer were asked for, and up
    /// to the maximum a cluster may have.
    pub fn default_for(web_count: u32) -> Self {
        Self {
            min_web: web_count.min(2),
            max_web: MAX_WEB,
        }
    }
}

/// What a create request's `restore` asks for, before the API resolves it against the
/// source's backups into a [`RestorePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The cluster whose backups to restore from, as sent: the API checks it is a
    /// `ClusterId` (this module cannot name `domain::cluster`, which names it).
    pub from_cluster: String,
    /// Which backup, or which time.
    pub target: RestoreTarget,
}

/// The backup or time a restore asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The latest completed backup, as it is.
    Latest,
    /// This backup, as it is.
    Backup(BackupId),
    /// The state at this time (epoch seconds): a backup and the archived binlogs after it.
    PointInTime(i64),
}

/// A parsed `POST /clusters` body: the spec, and the restore to resolve, if one is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// The cluster asked for (its `restore` still `None`).
    pub spec: ClusterSpec,
    /// The restore asked for.
    pub restore: Option<RestoreRequest>,
}

/// The desired state of a cluster, as recorded in DynamoDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster's name: its listener rule matches `Host: <name>.*`.
    pub name: String,
    /// The web tier.
    pub web: TierSpec,
    /// The database tier (1, 3 or 5 nodes).
    pub db: TierSpec,
    /// Subnets to spread over, in order; empty means the stack's default subnets.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Absent in records written before scaling existed: the defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
    /// The backup policy; records written before backups existed decode to the default.
    #[serde(default)]
    pub backup: BackupPolicy,
    /// The backup the cluster's database starts from, if it is a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestorePlan>,
}

impl ClusterSpec {
    /// Parse and validate a create request body that asks for no restore (tests and tools;
    /// the API parses with [`CreateRequest::from_body`], which resolves a `restore`).
    pub fn from_request_body(body: &[u8]) -> Result<Self> {
        let request = CreateRequest::from_body(body)?;
        if request.restore.is_some() {
            return Err(Error::validation(
                "restore",
                "is not taken here",
                "send the request to the API, which resolves the backup to restore",
            ));
        }
        Ok(request.spec)
    }
}

impl CreateRequest {
    /// Parse and validate a create request body.
    pub fn from_body(body: &[u8]) -> Result<Self> {
        if body.len() > MAX_BODY_BYTES {
            return Err(Error::validation(
                "body",
                format!("{} bytes is too large", body.len()),
                format!("send at most {MAX_BODY_BYTES} bytes of JSON"),
            ));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::validation(
                "body",
                "is empty",
                r#"send JSON such as {"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6g.large"}}"#,
            ));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Error::validation(
                "body",
                format!("is not valid JSON ({e})"),
                "send a JSON object with name, web and db",
            )
        })?;
        let object = value.as_object().ok_or_else(|| {
            Error::validation(
                "body",
                "is not a JSON object",
                "send a JSON object with name, web and db",
            )
        })?;
        reject_unknown(
            object,
            "",
            &[
                "name", "web", "db", "subnets", "scaling", "backup", "restore",
            ],
        )?;
        let name = required_str(object, "name")?;
        validate_name(&name)?;
        let web = tier(object, "web", 2, "t3.small")?;
        if !(1..=MAX_WEB).contains(&web.count) {
            return Err(Error::validation(
                "web.count",
                format!("{} is out of range", web.count),
                format!("ask for 1 to {MAX_WEB} web instances"),
            ));
        }
        let db = tier(object, "db", 3, "r6i.large")?;
        if !DB_COUNTS.contains(&db.count) {
            return Err(Error::validation(
                "db.count",
                format!("{} cannot form a fault-tolerant group", db.count),
                "use 3 (recommended: survives one failure), 5 (survives two) or 1 (no fault tolerance)",
            ));
        }
        let subnets = match object.get("subnets") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut subnets = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let field = format!("subnets[{i}]");
                    let id = item.as_str().ok_or_else(|| {
                        Error::validation(
                            &field,
                            "is not a string",
                            "list subnet ids such as subnet-0abc1234",
                        )
                    })?;
                    if !is_aws_id(id, "subnet-") {
                        return Err(Error::validation(
                            &field,
                            format!("{id:?} is not a subnet id"),
                            "list subnet ids such as subnet-0abc1234",
                        ));
                    }
                    if subnets.iter().any(|s| s == id) {
                        return Err(Error::validation(
                            &field,
                            format!("{id} is listed twice"),
                            "list each subnet once",
                        ));
                    }
                    subnets.push(id.to_string());
                }
                if subnets.len() > MAX_SUBNETS {
                    return Err(Error::validation(
                        "subnets",
                        format!("{} subnets is too many", subnets.len()),
                        format!("list at most {MAX_SUBNETS}, one per availability zone"),
                    ));
                }
                subnets
            }
            Some(_) => {
                return Err(Error::validation(
                    "subnets",
                    "is not a list",
                    "send a list of subnet ids, or omit it to use the stack's subnets",
                ));
            }
        };
        let scaling = match object.get("scaling") {
            None | Some(Value::Null) => None,
            Some(value) => Some(scaling(value, web.count)?),
        };
        let backup = match object.get("backup") {
            None | Some(Value::Null) => BackupPolicy::default(),
            Some(value) => backup_policy(value)?,
        };
        let restore = match object.get("restore") {
            None | Some(Value::Null) => None,
            Some(value) => Some(restore_request(value)?),
        };
        Ok(Self {
            spec: ClusterSpec {
                name,
                web,
                db,
                subnets,
                scaling,
                backup,
                restore: None,
            },
            restore,
        })
    }
}

impl ClusterSpec {
    /// The scaling bounds: as recorded, or the defaults for records without them.
    pub fn scaling(&self) -> ScalingSpec {
        self.scaling
            .unwrap_or_else(|| ScalingSpec::default_for(self.web.count))
    }

    /// The spec with `count` web instances, if the scaling bounds allow it.
    pub fn with_web_count(&self, count: u32) -> Result<Self> {
        let bounds = self.scaling();
        if !(bounds.min_web..=bounds.max_web).contains(&count) {
            return Err(Error::validation(
                "web.count",
                format!(
                    "{count} is outside the cluster's scaling bounds {}-{}",
                    bounds.min_web, bounds.max_web
                ),
                format!(
                    "ask for {} to {} web instances",
                    bounds.min_web, bounds.max_web
                ),
            ));
        }
        let mut next = self.clone();
        next.web.count = count;
        Ok(next)
    }

    /// The web count a `PATCH /clusters/{id}` body asks for: `{"web": {"count": N}}`.
    pub fn patched_web_count(body: &[u8]) -> Result<u32> {
        let example = r#"send {"web": {"count": 3}}"#;
        if body.len() > MAX_BODY_BYTES {
            return Err(Error::validation(
                "body",
                format!("{} bytes is too large", body.len()),
                example,
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::validation("body", format!("is not valid JSON ({e})"), example))?;
        let object = value
            .as_object()
            .ok_or_else(|| Error::validation("body", "is not a JSON object", example))?;
        reject_unknown(object, "", &["web"])?;
        let web = object
            .get("web")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::validation("web", "is missing or not an object", example))?;
        reject_unknown(web, "web.", &["count"])?;
        web.get("count")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Error::validation("web.count", "is missing or not a whole number", example)
            })
    }

    /// Total instances the spec asks for.
    pub fn instance_count(&self) -> u32 {
        self.web.count + self.db.count
    }
}

fn scaling(value: &Value, web_count: u32) -> Result<ScalingSpec> {
    let example = format!(
        r#"send {{"minWeb": {}, "maxWeb": {MAX_WEB}}}"#,
        web_count.min(2)
    );
    let object = value
        .as_object()
        .ok_or_else(|| Error::validation("scaling", "is not an object", &example))?;
    reject_unknown(object, "scaling.", &["minWeb", "maxWeb"])?;
    let defaults = ScalingSpec::default_for(web_count);
    let bound = |field: &str, default: u32| -> Result<u32> {
        match object.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::validation(
                        format!("scaling.{field}"),
                        "is not a whole number",
                        &example,
                    )
                }),
        }
    };
    let spec = ScalingSpec {
        min_web: bound("minWeb", defaults.min_web)?,
        max_web: bound("maxWeb", defaults.max_web)?,
    };
    if !(1 <= spec.min_web
        && spec.min_web <= web_count
        && web_count <= spec.max_web
        && spec.max_web <= MAX_WEB)
    {
        return Err(Error::validation(
            "scaling",
            format!(
                "minWeb {} and maxWeb {} must hold web.count {web_count} within 1-{MAX_WEB}",
                spec.min_web, spec.max_web
            ),
            format!("use 1 <= minWeb <= {web_count} <= maxWeb <= {MAX_WEB}"),
        ));
    }
    Ok(spec)
}

fn backup_policy(value: &Value) -> Result<BackupPolicy> {
    let example = r#"send {"schedule": "daily", "retentionDays": 7}"#;
    let object = value
        .as_object()
        .ok_or_else(|| Error::validation("backup", "is not an object", example))?;
    reject_unknown(object, "backup.", &["schedule", "retentionDays"])?;
    let defaults = BackupPolicy::default();
    let schedule = match object.get("schedule") {
        None => defaults.schedule,
        Some(Value::String(text)) => BackupSchedule::parse(text).ok_or_else(|| {
            Error::validation(
                "backup.schedule",
                format!("{text:?} is not a schedule"),
                format!(r#"send "hourly", "daily" or "<N>h" with N from 1 to {MAX_BACKUP_HOURS}"#),
            )
        })?,
        Some(other) => {
            return Err(Error::validation(
                "backup.schedule",
                format!("{other} is not a string"),
                r#"send "hourly", "daily" or "<N>h", e.g. "12h""#,
            ));
        }
    };
    let retention_days = match object.get("retentionDays") {
        None => defaults.retention_days,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| RETENTION_DAYS.contains(n))
            .ok_or_else(|| {
                Error::validation(
                    "backup.retentionDays",
                    format!("{v} is not a whole number of days from 1 to 35"),
                    "send 1 to 35 (days), e.g. 7",
                )
            })?,
    };
    Ok(BackupPolicy {
        schedule,
        retention_days,
    })
}

fn restore_request(value: &Value) -> Result<RestoreRequest> {
    let example = r#"send {"fromCluster": "c-0123456789ab"} with at most one of "backupId": "20261201T063000Z-0a1b2c3d" or "pointInTime": "2026-12-01T06:30:00Z""#;
    let object = value
        .as_object()
        .ok_or_else(|| Error::validation("restore", "is not an object", example))?;
    reject_unknown(
        object,
        "restore.",
        &["fromCluster", "backupId", "pointInTime"],
    )?;
    let from_cluster = match object.get("fromCluster") {
        Some(Value::String(text)) => text.clone(),
        Some(_) => {
            return Err(Error::validation(
                "restore.fromCluster",
                "is not a string",
                "send a cluster id such as c-0123456789ab",
            ));
        }
        None => {
            return Err(Error::validation(
                "restore.fromCluster",
                "is missing",
                "send the id of the cluster whose backups to restore",
            ));
        }
    };
    let string = |field: &str| -> Result<Option<String>> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(Error::validation(
                format!("restore.{field}"),
                "is not a string",
                example,
            )),
        }
    };
    let target = match (string("backupId")?, string("pointInTime")?) {
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                "restore",
                "names both backupId and pointInTime",
                "send one of them: a backup restores as it is, a time restores the state then",
            ));
        }
        (Some(id), None) => RestoreTarget::Backup(BackupId::parse(&id).ok_or_else(|| {
            Error::validation(
                "restore.backupId",
                format!("{id:?} is not a backup id"),
                "send an id as GET /clusters/{id}/backups lists it, e.g. 20261201T063000Z-0a1b2c3d",
            )
        })?),
        (None, Some(time)) => RestoreTarget::PointInTime(epoch_of(&time).map_err(|_| {
            Error::validation(
                "restore.pointInTime",
                format!("{time:?} is not an RFC 3339 UTC time"),
                "send a UTC time such as 2026-12-01T06:30:00Z",
            )
        })?),
        (None, None) => RestoreTarget::Latest,
    };
    Ok(RestoreRequest {
        from_cluster,
        target,
    })
}

fn reject_unknown(
    object: &serde_json::Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<()> {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            return Err(Error::validation(
                format!("{prefix}{key}"),
                "is not a known field",
                format!("send only {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn required_str(object: &serde_json::Map<String, Value>, field: &str) -> Result<String> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::validation(field, "is not a string", "send a string")),
        None => Err(Error::validation(
            field,
            "is missing",
            "name the cluster, e.g. \"shop\"",
        )),
    }
}

/// 1 to 32 lowercase letters, digits and hyphens, starting with a letter, not ending with
/// a hyphen: a DNS label, an InnoDB Cluster name and part of AWS resource names.
pub fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn validate_name(name: &str) -> Result<()> {
    let fix = "use 1 to 32 lowercase letters, digits and hyphens, starting with a letter";
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::validation(
            "name",
            format!("{name:?} is not a valid name"),
            fix,
        ))
    }
}

fn tier(
    object: &serde_json::Map<String, Value>,
    field: &str,
    default_count: u32,
    example_type: &str,
) -> Result<TierSpec> {
    let Some(value) = object.get(field) else {
        return Err(Error::validation(
            field,
            "is missing",
            format!("send {{\"count\": {default_count}, \"instanceType\": \"{example_type}\"}}"),
        ));
    };
    let tier = value.as_object().ok_or_else(|| {
        Error::validation(
            field,
            "is not an object",
            format!("send {{\"count\": {default_count}, \"instanceType\": \"{example_type}\"}}"),
        )
    })?;
    reject_unknown(tier, &format!("{field}."), &["count", "instanceType"])?;
    let count_field = format!("{field}.count");
    let count = match tier.get("count") {
        Some(Value::Number(n)) => {
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::validation(
                        &count_field,
                        format!("{n} is not a whole number of instances"),
                        "send a whole number",
                    )
                })?
        }
        Some(other) => {
            return Err(Error::validation(
                &count_field,
                format!("{other} is not a number"),
                "send a whole number",
            ));
        }
        None => {
            return Err(Error::validation(
                &count_field,
                "is missing",
                format!("send a count, e.g. {default_count}"),
            ));
        }
    };
    let type_field = format!("{field}.instanceType");
    let instance_type = match tier.get("instanceType") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(Error::validation(
                &type_field,
                "is not a string",
                format!("send an EC2 instance type such as {example_type}"),
            ));
        }
        None => {
            return Err(Error::validation(
                &type_field,
                "is missing",
                format!("send an EC2 instance type such as {example_type}"),
            ));
        }
    };
    if !is_instance_type(&instance_type) {
        return Err(Error::validation(
            &type_field,
            format!("{instance_type:?} is not an EC2 instance type"),
            format!("use the family.size form, e.g. {example_type}"),
        ));
    }
    Ok(TierSpec {
        count,
        instance_type,
    })
}

/// `family.size`: `t3.micro`, `m7g.2xlarge`, `c6in.metal-24xl`, `u-6tb1.56xlarge`.
pub fn is_instance_type(value: &str) -> bool {
    let Some((family, size)) = value.split_once('.') else {
        return false;
    };
    value.len() <= 32
        && family.starts_with(|c: char| c.is_ascii_lowercase())
        && family
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && family.chars().any(|c| c.is_ascii_digit())
        && !size.is_empty()
        && size
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `subnet-0abc...`: the prefix then 8 or 17 hex digits.
pub fn is_aws_id(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .map(|hex| (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ClusterSpec> {
        ClusterSpec::from_request_body(body.as_bytes())
    }

    fn field_of(result: Result<ClusterSpec>) -> String {
        match result {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    const GOOD: &str = r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;

    #[test]
    fn a_good_request_is_accepted() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.name, "shop");
        assert_eq!(spec.web.count, 2);
        assert_eq!(spec.db.instance_type, "r6i.large");
        assert!(spec.subnets.is_empty());
        assert_eq!(spec.instance_count(), 5);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("", "body"),
            ("{", "body"),
            ("[1]", "body"),
            (
                r#"{"web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "name",
            ),
            (
                r#"{"name":"Shop!","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "name",
            ),
            (
                r#"{"name":"shop","web":{"count":0,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "web.count",
            ),
            (
                r#"{"name":"shop","web":{"count":21,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "web.count",
            ),
            (
                r#"{"name":"shop","web":{"count":2.5,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "web.count",
            ),
            (
                r#"{"name":"shop","web":{"count":2,"instanceType":"small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "web.instanceType",
            ),
            (
                r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":2,"instanceType":"r6i.large"}}"#,
                "db.count",
            ),
            (
                r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"},"color":"red"}"#,
                "color",
            ),
            (
                r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small","spot":true},"db":{"count":3,"instanceType":"r6i.large"}}"#,
                "web.spot",
            ),
            (
                r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"},"subnets":["vpc-12345678"]}"#,
                "subnets[0]",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(parse(body)), field, "{body}");
        }
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let huge = format!(r#"{{"name":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(field_of(parse(&huge)), "body");
    }

    #[test]
    fn instance_types_follow_the_family_size_form() {
        for ok in [
            "t3.micro",
            "m7g.2xlarge",
            "c6in.metal-24xl",
            "u-6tb1.56xlarge",
            "r6i.large",
        ] {
            assert!(is_instance_type(ok), "{ok}");
        }
        for bad in [
            "t3",
            "T3.micro",
            ".micro",
            "t3.",
            "micro.t3x",
            "t3.micro;rm",
            "small.large",
        ] {
            assert!(!is_instance_type(bad), "{bad}");
        }
    }

    #[test]
    fn a_spec_recorded_before_backups_decodes_with_the_default_policy() {
        let old = r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"},"subnets":[]}"#;
        let spec: ClusterSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.backup, BackupPolicy::default());
        assert_eq!(spec.backup.schedule.hours(), 24);
        assert_eq!(spec.backup.retention_days, 7);
        assert_eq!(spec.restore, None);
        // And what is written now reads back the same.
        let again: ClusterSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn backup_policies_are_parsed_and_bounded() {
        let body = |backup: &str| {
            format!(
                r#"{{"name":"shop","web":{{"count":2,"instanceType":"t3.small"}},"db":{{"count":3,"instanceType":"r6i.large"}},"backup":{backup}}}"#
            )
        };
        let ok = parse(&body(r#"{"schedule":"6h","retentionDays":35}"#)).unwrap();
        assert_eq!(ok.backup.schedule.hours(), 6);
        assert_eq!(ok.backup.retention_days, 35);
        assert_eq!(serde_json::to_value(ok.backup).unwrap()["schedule"], "6h");
        let hourly = parse(&body(r#"{"schedule":"hourly"}"#)).unwrap();
        assert_eq!(hourly.backup.schedule.hours(), 1);
        assert_eq!(hourly.backup.retention_days, 7);
        assert_eq!(
            serde_json::to_value(hourly.backup).unwrap()["schedule"],
            "hourly"
        );
        for (backup, field) in [
            (r#"{"schedule":"weekly"}"#, "backup.schedule"),
            (r#"{"schedule":"0h"}"#, "backup.schedule"),
            (r#"{"schedule":"169h"}"#, "backup.schedule"),
            (r#"{"schedule":"-1h"}"#, "backup.schedule"),
            (r#"{"schedule":24}"#, "backup.schedule"),
            (r#"{"retentionDays":0}"#, "backup.retentionDays"),
            (r#"{"retentionDays":36}"#, "backup.retentionDays"),
            (r#"{"retentionDays":"7"}"#, "backup.retentionDays"),
            (r#"{"when":"daily"}"#, "backup.when"),
            (r#""daily""#, "backup"),
        ] {
            assert_eq!(field_of(parse(&body(backup))), field, "{backup}");
        }
    }

    #[test]
    fn a_restore_request_is_parsed_into_its_target() {
        let body = |restore: &str| {
            format!(
                r#"{{"name":"shop","web":{{"count":2,"instanceType":"t3.small"}},"db":{{"count":3,"instanceType":"r6i.large"}},"restore":{restore}}}"#
            )
        };
        let request = |restore: &str| CreateRequest::from_body(body(restore).as_bytes());
        let latest = request(r#"{"fromCluster":"c-0123456789ab"}"#).unwrap();
        let restore = latest.restore.unwrap();
        assert_eq!(restore.from_cluster, "c-0123456789ab");
        assert_eq!(restore.target, RestoreTarget::Latest);
        assert_eq!(latest.spec.restore, None);
        let by_id =
            request(r#"{"fromCluster":"c-0123456789ab","backupId":"20261201T063000Z-0a1b2c3d"}"#)
                .unwrap();
        assert!(matches!(
            by_id.restore.unwrap().target,
            RestoreTarget::Backup(id) if id.as_str() == "20261201T063000Z-0a1b2c3d"
        ));
        let at =
            request(r#"{"fromCluster":"c-0123456789ab","pointInTime":"2026-12-01T06:30:00Z"}"#)
                .unwrap();
        assert_eq!(
            at.restore.unwrap().target,
            RestoreTarget::PointInTime(epoch_of("2026-12-01T06:30:00Z").unwrap())
        );
        for (restore, field) in [
            (
                r#"{"fromCluster":"c-0123456789ab","backupId":"20261201T063000Z-0a1b2c3d","pointInTime":"2026-12-01T06:30:00Z"}"#,
                "restore",
            ),
            (
                r#"{"backupId":"20261201T063000Z-0a1b2c3d"}"#,
                "restore.fromCluster",
            ),
            (
                r#"{"fromCluster":"c-0123456789ab","backupId":"latest"}"#,
                "restore.backupId",
            ),
            (
                r#"{"fromCluster":"c-0123456789ab","pointInTime":"2026-12-01 06:30"}"#,
                "restore.pointInTime",
            ),
            (
                r#"{"fromCluster":"c-0123456789ab","pointInTime":"2026-12-01T07:30:00+01:00"}"#,
                "restore.pointInTime",
            ),
            (r#"{"fromCluster":"c-0123456789ab","at":"x"}"#, "restore.at"),
        ] {
            match request(restore) {
                Err(Error::Validation { field: got, .. }) => assert_eq!(got, field, "{restore}"),
                other => panic!("{restore}: expected a validation error, got {other:?}"),
            }
        }
        // The spec-only parser refuses a restore rather than drop it.
        assert_eq!(
            field_of(parse(&body(r#"{"fromCluster":"c-0123456789ab"}"#))),
            "restore"
        );
    }
}
