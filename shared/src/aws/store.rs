//! DynamoDB adapter: the single table that holds every cluster's state.
//!
//! Key design (one table, see template.yaml):
//! - `pk = CLUSTER#<id>`, `sk = META`: spec, status, `version`, `generation`, the lease
//!   (`lease_holder`, `lease_expires`, fencing `lease_token`).
//! - `pk = CLUSTER#<id>`, `sk = NODE#<slot>`: one per node; `instance_id` feeds the
//!   `by-instance` GSI.
//! - `pk = ACTIONS#<id>`, `sk = ACTION#<time>#<n>`: the audit log, in a partition of its own
//!   so the hot path (every task reads the cluster) does not grow with the log.
//! - `pk = CLUSTER#<id>`, `sk = STEP#<key>`: the SSM command a run sent for a mutating
//!   database step, so a retried task waits on it instead of sending it again.
//! - `pk = COMMAND#<command id>`, `sk = COMMAND`: what an SSM status event resolves: the
//!   cluster, the step and the Step Functions task token waiting for it (TTL a week).
//! - `pk = EVENT#<event id>`, `sk = EVENT`: an EventBridge event already handled (TTL a day).
//! - `pk = CLUSTER#<id>`, `sk = WATCH#<instance id>`: since when the sweep has seen the
//!   instance's target unhealthy (TTL a day; removed when healthy again).
//! - `pk = CLUSTER#<id>`, `sk = REPLACED#<slot>`: the slot's last replacement for its health
//!   (anti-flapping: one per window; TTL the window).
//! - `pk = CLUSTER#<id>`, `sk = SURVEY`: when the sweep last surveyed the group's
//!   membership (one survey per interval).
//! - `pk = NAME#<name>`, `sk = NAME`: the claim that keeps names unique among live clusters.
//! - The sparse GSI `clusters` (`list_pk = CLUSTER`, `list_sk = <created_at>#<id>`) lists
//!   clusters newest first without a Scan; only META items carry `list_pk`.
//!
//! SDK types stay inside this module; callers see domain types.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::cluster::epoch_seconds;
use crate::domain::cluster::{
    Action, Cluster, ClusterSummary, LastError, Node, Page, Phase, now_rfc3339,
};
use crate::domain::spec::ClusterSpec;
use crate::error::{Error, Result, from_sdk, sdk_error_code};

pub const CLUSTERS_INDEX: &str = "clusters";
pub const INSTANCE_INDEX: &str = "by-instance";
/// How long a handled event's id is remembered for de-duplication.
pub const EVENT_RECORD_SECONDS: i64 = 24 * 3600;
pub const CLUSTER_LIST_PARTITION: &str = "CLUSTER";
pub const MAX_PAGE_SIZE: u32 = 100;
/// How long a workflow run holds a cluster without renewing (every task renews).
pub const LEASE_SECONDS: i64 = 900;
/// How long a deleted cluster's tombstone stays before DynamoDB's TTL removes it.
pub const TOMBSTONE_SECONDS: i64 = 30 * 24 * 3600;
/// How long a command record (command id -> waiting task token) is kept.
pub const COMMAND_RECORD_SECONDS: i64 = 7 * 24 * 3600;
/// Actions the API shows; the full log stays in the table.
pub const RECENT_ACTIONS: usize = 50;

type Item = HashMap<String, AttributeValue>;

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
}

/// What a run must still hold to write: the lease token it was given and the generation
/// it works for. A run whose token was superseded, or whose generation a newer request
/// replaced before any new run took the lease, is refused (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub token: u64,
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

/// An SSM command a workflow task waits on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    pub command_id: String,
    pub cluster_id: String,
    pub generation: u64,
    /// The workflow step (`db-install`, `db-inspect`, ...): the phase a failure names.
    pub step: String,
    pub document: crate::domain::commands::Document,
    /// The instances it went to, with their slots.
    pub targets: Vec<CommandTarget>,
    /// The `STEP#` record it counts against (failures are added there).
    pub step_key: String,
    pub sent_at: String,
}

/// What a run sent for one step so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub command_id: String,
    pub sends: u32,
    pub failures: u32,
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandTarget {
    pub instance_id: String,
    pub slot: String,
}

/// What a scaling request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTarget {
    /// An operator's count (`PATCH`): refused outside the bounds.
    Count(u32),
    /// An alarm's step: clamped to the bounds.
    Step(i32),
}

/// What a scaling request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scaled {
    Started { generation: u64, from: u32, to: u32 },
    Unchanged(String),
}

/// What `create_cluster` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New,
    /// A cluster with this id already exists; its spec is returned to compare.
    Existing(ClusterSpec),
    /// Another live cluster (this id) has the name.
    NameTaken(String),
}

impl ClusterStore {
    fn cluster_key(id: &str) -> String {
        format!("CLUSTER#{id}")
    }

    fn command_key(command_id: &str) -> String {
        format!("COMMAND#{command_id}")
    }

    fn name_key(name: &str) -> String {
        format!("NAME#{name}")
    }

    /// Record a new cluster (phase PENDING, generation 1) and claim its name, both or
    /// neither: a transaction with a condition on each item.
    pub async fn create_cluster(&self, id: &str, spec: &ClusterSpec) -> Result<Created> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let now = now_rfc3339();
        let spec_json = serde_json::to_string(spec).map_err(|e| Error::CorruptRecord {
            key: Self::cluster_key(id),
            problem: e.to_string(),
        })?;
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

    fn actions_key(id: &str) -> String {
        format!("ACTIONS#{id}")
    }

    /// Every item of a partition (all pages, strongly consistent), optionally only some
    /// attributes. A cluster has two: `CLUSTER#<id>` (META and nodes, read by every task)
    /// and `ACTIONS#<id>` (the audit log, which grows with the cluster's life and so is
    /// kept out of the hot path).
    async fn partition_items(&self, pk: String, projection: Option<&str>) -> Result<Vec<Item>> {
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

    /// Delete one item by its key; an absent item is fine.
    async fn delete_key(&self, pk: String, sk: String) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("dynamodb", "DeleteItem", e))
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

    /// An UpdateItem on the cluster's META item, to be completed by the caller.
    fn update_meta(
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
                let json = serde_json::to_string(error).unwrap_or_default();
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

    /// Ask for deletion: next generation, phase DELETING; returns the new generation. A
    /// repeated DELETE starts a fresh teardown run (teardown is idempotent, and a run still
    /// going is fenced out), so a teardown that died can always be restarted.
    pub async fn request_delete(&self, id: &str) -> Result<u64> {
        let result = self
            .update_meta(id)
            .update_expression(
                "SET phase = :deleting, generation = generation + :one, version = version + :one, \
                 updated_at = :at",
            )
            .condition_expression("attribute_exists(pk) AND phase <> :deleted")
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => number_attr(output.attributes().unwrap_or(&HashMap::new()), "generation")
                .ok_or_else(|| Error::CorruptRecord {
                    key: Self::cluster_key(id),
                    problem: "generation missing".into(),
                }),
            Err(e) if is_condition_failure(&e) => match self.get_cluster(id).await? {
                None => Err(Error::NotFound {
                    kind: "cluster",
                    id: id.to_string(),
                }),
                Some(_) => Err(Error::Gone(format!("cluster {id} is already deleted"))),
            },
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Ask for a healing run because `instance_id` was lost: bumps the generation (a newer
    /// run supersedes whatever runs) and remembers the instance, once. `None` when the loss
    /// is already being healed or the cluster is being deleted: nothing to start.
    /// With `replace`, the instance is alive and is to be retired once its successor serves
    /// (an operator's or the sweep's decision) rather than already lost.
    pub async fn request_heal(
        &self,
        id: &str,
        instance_id: &str,
        replace: bool,
    ) -> Result<Option<u64>> {
        let expression = if replace {
            "SET phase = :healing, generation = generation + :one, version = version + :one, \
             updated_at = :at ADD lost_instances :lost, replace_instances :lost"
        } else {
            "SET phase = :healing, generation = generation + :one, version = version + :one, \
             updated_at = :at ADD lost_instances :lost"
        };
        let result = self
            .update_meta(id)
            .update_expression(expression)
            .condition_expression(
                "attribute_exists(pk) AND NOT phase IN (:deleting, :deleted) \
                 AND NOT contains(lost_instances, :instance)",
            )
            .expression_attribute_values(":healing", s(Phase::Healing.as_str()))
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .expression_attribute_values(":lost", AttributeValue::Ss(vec![instance_id.to_string()]))
            .expression_attribute_values(":instance", s(instance_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(number_attr(
                output.attributes().unwrap_or(&HashMap::new()),
                "generation",
            )),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Change the web count (to a count, or by a step within the scaling bounds) and bump
    /// the generation so a scaling run converges to it. With `cooldown_seconds`, a change
    /// within that time of the last one is refused (`Unchanged`): alarms must not flap.
    pub async fn request_scale(
        &self,
        id: &str,
        target: ScaleTarget,
        cooldown_seconds: Option<i64>,
    ) -> Result<Scaled> {
        let cluster = self.require_cluster(id).await?;
        if matches!(cluster.phase, Phase::Deleting | Phase::Deleted) {
            return Err(Error::ClusterDeleting {
                id: id.to_string(),
                phase: cluster.phase.as_str(),
            });
        }
        let from = cluster.spec.web.count;
        let bounds = cluster.spec.scaling();
        let to = match target {
            ScaleTarget::Count(count) => {
                cluster.spec.with_web_count(count)?;
                count
            }
            ScaleTarget::Step(step) => {
                let wanted = i64::from(from) + i64::from(step);
                wanted.clamp(i64::from(bounds.min_web), i64::from(bounds.max_web)) as u32
            }
        };
        if to == from {
            return Ok(Scaled::Unchanged(format!(
                "the web tier already has {from} (bounds {}-{})",
                bounds.min_web, bounds.max_web
            )));
        }
        let spec = cluster.spec.with_web_count(to)?;
        let now = epoch_seconds();
        let mut condition = "version = :version AND NOT phase IN (:deleting, :deleted)".to_string();
        if cooldown_seconds.is_some() {
            condition.push_str(
                " AND (attribute_not_exists(last_scaled_at) OR last_scaled_at <= :cutoff)",
            );
        }
        let mut update = self
            .update_meta(id)
            .update_expression(
                "SET spec = :spec, phase = :scaling, generation = generation + :one, \
                 version = version + :one, updated_at = :at, last_scaled_at = :now",
            )
            .condition_expression(condition)
            .expression_attribute_values(
                ":spec",
                s(serde_json::to_string(&spec).unwrap_or_default()),
            )
            .expression_attribute_values(":scaling", s(Phase::Scaling.as_str()))
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":version", n(cluster.version));
        if let Some(cooldown) = cooldown_seconds {
            update = update.expression_attribute_values(":cutoff", n(now - cooldown));
        }
        match update.send().await {
            Ok(_) => Ok(Scaled::Started {
                generation: cluster.generation + 1,
                from,
                to,
            }),
            Err(e) if is_condition_failure(&e) => {
                let again = self.get_cluster(id).await?;
                // Our own write landed and only its answer was lost (the SDK's retry of
                // the same conditional update then fails its condition): the record is
                // exactly what we wrote, one version on. That is a success, not a conflict,
                // or the caller's resend would find nothing to change and no run started.
                if let Some(now) = &again
                    && now.version == cluster.version + 1
                    && now.generation == cluster.generation + 1
                    && now.phase == Phase::Scaling
                    && now.spec == spec
                {
                    return Ok(Scaled::Started {
                        generation: now.generation,
                        from,
                        to,
                    });
                }
                if again.as_ref().map(|c| c.version) != Some(cluster.version) {
                    Err(Error::Conflict(format!(
                        "cluster {id} changed while scaling it; send the request again"
                    )))
                } else {
                    Ok(Scaled::Unchanged(format!(
                        "the last scaling of cluster {id} is less than {}s ago (cooldown)",
                        cooldown_seconds.unwrap_or_default()
                    )))
                }
            }
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
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

    /// One write, made only while `fence` still holds the cluster: a transaction of a
    /// ConditionCheck on META (token and generation) and the write itself.
    async fn fenced_transact(
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
            (
                "data".to_string(),
                s(serde_json::to_string(node).unwrap_or_default()),
            ),
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

    /// What a run sent for a step (`STEP#<key>` in the cluster partition): the last command,
    /// how often the step was sent and how often its command failed.
    pub async fn step_record(&self, id: &str, step_key: &str) -> Result<Option<StepRecord>> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("STEP#{step_key}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        Ok(item.item().and_then(|item| {
            Some(StepRecord {
                command_id: item.get("command_id")?.as_s().ok()?.clone(),
                sends: number_attr(item, "sends").unwrap_or(1) as u32,
                failures: number_attr(item, "failures").unwrap_or(0) as u32,
                last_failure: item
                    .get("last_failure")
                    .and_then(|v| v.as_s().ok())
                    .cloned(),
            })
        }))
    }

    /// Count a failed command against its step (the event handler calls this). Refused
    /// quietly once the cluster is purged, so a late event creates nothing.
    pub async fn record_step_failure(&self, id: &str, step_key: &str, message: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("STEP#{step_key}")))
            .update_expression("ADD failures :one SET last_failure = :message")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":message", s(message))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Record a command the workflow now waits on, under the run's fence: the command item
    /// (what a status event resolves: the task token to answer) and its step's pointer to
    /// it, now sent `sends` times. Command items expire a week after they are sent.
    pub async fn record_command(
        &self,
        fence: Fence,
        record: &CommandRecord,
        sends: u32,
        task_token: &str,
    ) -> Result<()> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        let id = record.cluster_id.as_str();
        let step_key = format!("STEP#{}", record.step_key);
        let corrupt = |key: String| {
            move |e: aws_sdk_dynamodb::error::BuildError| Error::CorruptRecord {
                key,
                problem: e.to_string(),
            }
        };
        let command = Put::builder()
            .table_name(&self.table)
            .item("pk", s(Self::command_key(&record.command_id)))
            .item("sk", s("COMMAND"))
            .item("cluster_id", s(id))
            .item("task_token", s(task_token))
            .item("data", s(serde_json::to_string(record).unwrap_or_default()))
            .item("expires_at", n(epoch_seconds() + COMMAND_RECORD_SECONDS))
            .build()
            .map_err(corrupt(Self::command_key(&record.command_id)))?;
        // An update, not a put: the failure count of earlier sends stays.
        let step = Update::builder()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(&step_key))
            .update_expression("SET command_id = :command, sends = :sends")
            .expression_attribute_values(":command", s(&record.command_id))
            .expression_attribute_values(":sends", n(sends))
            .build()
            .map_err(corrupt(step_key.clone()))?;
        self.fenced_transact(
            id,
            fence,
            vec![
                TransactWriteItem::builder().put(command).build(),
                TransactWriteItem::builder().update(step).build(),
            ],
        )
        .await
    }

    /// Point a command at the task token now waiting for it (a retried or re-armed task).
    pub async fn arm_command(&self, command_id: &str, task_token: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET task_token = :token")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":token", s(task_token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(Error::NotFound {
                kind: "command",
                id: command_id.to_string(),
            }),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// A recorded command and the task token waiting for it; `None` for commands this
    /// orchestrator did not send (or whose record expired).
    pub async fn command(&self, command_id: &str) -> Result<Option<(CommandRecord, String)>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        let record: CommandRecord = data_of(item)?;
        let token = item
            .get("task_token")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        Ok(Some((record, token)))
    }

    /// Note that `instance_id` reported a final status for a command; returns every
    /// instance that has so far (the event handler answers once all targets have).
    pub async fn note_finished(&self, command_id: &str, instance_id: &str) -> Result<Vec<String>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("ADD finished :instance")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":instance",
                AttributeValue::Ss(vec![instance_id.to_string()]),
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output
                .attributes()
                .and_then(|a| a.get("finished"))
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default()),
            Err(e) if is_condition_failure(&e) => Ok(Vec::new()),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
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

    /// Record a survey's command (no workflow waits on it: no lease, no task token).
    pub async fn record_survey(&self, record: &CommandRecord) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::command_key(&record.command_id)))
            .item("sk", s("COMMAND"))
            .item("cluster_id", s(&record.cluster_id))
            .item("task_token", s(""))
            .item("data", s(serde_json::to_string(record).unwrap_or_default()))
            .item("expires_at", n(epoch_seconds() + COMMAND_RECORD_SECONDS))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("dynamodb", "PutItem", e))
    }

    /// Claim the right to judge a survey's answers: true once per command.
    pub async fn claim_survey_result(&self, command_id: &str) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET resolved_at = :at")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(resolved_at)")
            .expression_attribute_values(":at", s(now_rfc3339()))
            .send()
            .await;
        happened(result, "UpdateItem")
    }

    /// Start converging a READY cluster again (a member left its group while its instance
    /// stayed up): phase HEALING and the next generation, only if it is still READY at
    /// `generation`. `None` when something else has moved it on since.
    pub async fn request_converge(&self, id: &str, generation: u64) -> Result<Option<u64>> {
        let result = self
            .update_meta(id)
            .update_expression(
                "SET phase = :healing, generation = generation + :one, version = version + :one, \
                 updated_at = :at",
            )
            .condition_expression("phase = :ready AND generation = :generation")
            .expression_attribute_values(":healing", s(Phase::Healing.as_str()))
            .expression_attribute_values(":ready", s(Phase::Ready.as_str()))
            .expression_attribute_values(":generation", n(generation))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(number_attr(
                output.attributes().unwrap_or(&HashMap::new()),
                "generation",
            )),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Claim the right to answer `task_token` for this command: true once per token, so an
    /// event delivered twice (or an event racing the fallback poll) answers the workflow once.
    pub async fn claim_resolution(&self, command_id: &str, task_token: &str) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET resolved_token = :token, resolved_at = :at")
            .condition_expression(
                "task_token = :token AND (attribute_not_exists(resolved_token) OR resolved_token <> :token)",
            )
            .expression_attribute_values(":token", s(task_token))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .send()
            .await;
        happened(result, "UpdateItem")
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
            .item("data", s(serde_json::to_string(&entry).unwrap_or_default()))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "PutItem", e))?;
        tracing::info!(cluster_id = id, generation, action, detail, "action");
        Ok(())
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

    /// What the scaling recheck decides on (phase, web count and bounds, last step), from
    /// one GetItem of the META item's few attributes, so a recheck that finds nothing due
    /// reads one item and writes nothing. `None` when there is no such cluster.
    pub async fn scale_state(&self, id: &str) -> Result<Option<ScaleState>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s("META"))
            .projection_expression("phase, spec, last_scaled_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        let corrupt = |problem: String| Error::CorruptRecord {
            key: Self::cluster_key(id),
            problem,
        };
        let text = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| corrupt(format!("{name} is missing")))
        };
        let phase_text = text("phase")?;
        let phase = Phase::parse(phase_text)
            .ok_or_else(|| corrupt(format!("unknown phase {phase_text:?}")))?;
        let spec: ClusterSpec =
            serde_json::from_str(text("spec")?).map_err(|e| corrupt(format!("spec: {e}")))?;
        Ok(Some(ScaleState {
            phase,
            web: spec.web.count,
            bounds: spec.scaling(),
            last_scaled_at: item
                .get("last_scaled_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok()),
        }))
    }
}

/// A cluster's scaling position, as [`ClusterStore::scale_state`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleState {
    pub phase: Phase,
    pub web: u32,
    pub bounds: crate::domain::spec::ScalingSpec,
    /// Epoch second of the last change of the web count (alarm or `PATCH`), if any.
    pub last_scaled_at: Option<i64>,
}

/// A conditional write's answer as whether it happened: a failed condition is `false`
/// (someone else claimed it, or it was done already), any other error an error.
fn happened<O, E>(
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

fn is_condition_failure<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    sdk_error_code(err) == Some("ConditionalCheckFailedException")
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
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

fn sk_of(item: &Item) -> &str {
    item.get("sk")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .unwrap_or("")
}

fn number_attr(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn data_of<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T> {
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

fn cluster_from_meta(item: &Item) -> Result<Cluster> {
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
    async fn a_scale_whose_answer_was_lost_is_started_not_a_conflict() {
        let meta = |web: u32, phase: &str, generation: i64, version: i64| {
            let mut item = cluster_item("c-1", phase);
            item.insert(
                "spec".into(),
                s(format!(
                    r#"{{"name":"shop","web":{{"count":{web},"instanceType":"t3.small"}},"db":{{"count":3,"instanceType":"r6i.large"}}}}"#
                )),
            );
            item.insert("generation".into(), n(generation));
            item.insert("version".into(), n(version));
            item.insert("updated_at".into(), s("2026-11-23T10:00:00Z"));
            item
        };
        // Before: READY with 2 web, version 7. After the write whose answer was lost: the
        // record is what this request wrote (3 web, SCALING, generation 4, version 8).
        let before = mock!(aws_sdk_dynamodb::Client::query)
            .sequence()
            .output(move || QueryOutput::builder().items(meta(2, "READY", 3, 7)).build())
            .output(move || {
                QueryOutput::builder()
                    .items(meta(3, "SCALING", 4, 8))
                    .build()
            })
            .build();
        let update = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder()
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("ConditionalCheckFailedException")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&before, &update]);
        let scaled = ClusterStore::new(client, "t")
            .request_scale("c-1", ScaleTarget::Count(3), None)
            .await
            .expect("a lost answer of our own write is a success");
        assert_eq!(
            scaled,
            Scaled::Started {
                generation: 4,
                from: 2,
                to: 3
            }
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
