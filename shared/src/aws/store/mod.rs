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
//! - `pk = BACKUPS#<id>`, `sk = BACKUP#<backup id>`: one backup's record (state, where it
//!   ran, its command, size, GTID set); `sk = ARCHIVE`: the binary log archive's
//!   `restorable_until` and its last command. A partition of its own, not under `CLUSTER#`,
//!   so a cluster's purge leaves its backups restorable (see `backups.rs`).
//! - `pk = NAME#<name>`, `sk = NAME`: the claim that keeps names unique among live clusters.
//! - The sparse GSI `clusters` (`list_pk = CLUSTER`, `list_sk = <created_at>#<id>`) lists
//!   clusters newest first without a Scan; only META items carry `list_pk`.
//!
//! SDK types stay inside this module; callers see domain types.
//!
//! One [`ClusterStore`], its methods split by the records they touch (one `impl` block per
//! file), so a reader finds a write next to the others on the same items:
//! - `clusters.rs`: the META item and the nodes as read (get, list, count), a cluster's
//!   creation with its `NAME#` claim, and the `by-instance` lookup.
//! - `runs.rs`: what a workflow run does under its lease: take the lease, record progress,
//!   write and delete nodes, end the run, purge; every write fenced by a [`Fence`].
//! - `requests.rs`: the requests that bump a cluster's generation so a run starts (delete,
//!   heal, scale, converge) and the scaling position the recheck reads.
//! - `commands.rs`: the `COMMAND#` and `STEP#` items: SSM commands the workflow waits on, the
//!   task token each resolves, surveys' commands.
//! - `health.rs`: the sweep's memory between runs: `WATCH#`, `REPLACED#` and `SURVEY` items.
//! - `backups.rs`: the `BACKUPS#` partition: backup records moved by conditional writes,
//!   the archive round's claim and `restorable_until`, the purge of a cluster's backups.
//! - `journal.rs`: what has happened: the `ACTIONS#` audit log and the `EVENT#` claims that
//!   de-duplicate EventBridge deliveries.
//! - `codec.rs`: attribute values to and from domain types, JSON encoding that fails loudly,
//!   and the reading of conditional writes' answers; no DynamoDB calls.
#![deny(missing_docs)]

mod backups;
mod clusters;
mod codec;
mod commands;
mod health;
mod journal;
mod requests;
mod runs;

pub use backups::{BackupHistory, PendingArchive};
pub use clusters::Created;
pub use codec::unique_u32;
pub use commands::{CommandRecord, CommandTarget, StepRecord};
pub use health::HealthWatch;
pub use requests::{ScaleState, ScaleTarget, Scaled};
pub use runs::Fence;

use crate::error::{Result, from_sdk};
use codec::s;

/// The sparse GSI that lists clusters newest first without a Scan.
pub const CLUSTERS_INDEX: &str = "clusters";
/// The GSI from an instance id to its node, for events that name only the instance.
pub const INSTANCE_INDEX: &str = "by-instance";
/// How long a handled event's id is remembered for de-duplication.
pub const EVENT_RECORD_SECONDS: i64 = 24 * 3600;
/// The one `list_pk` value every listed META item carries (the list index's partition).
pub const CLUSTER_LIST_PARTITION: &str = "CLUSTER";
/// The largest page `list_clusters` returns, whatever the caller asks.
pub const MAX_PAGE_SIZE: u32 = 100;
/// How long a workflow run holds a cluster without renewing (every task renews).
pub const LEASE_SECONDS: i64 = 900;
/// How long a deleted cluster's tombstone stays before DynamoDB's TTL removes it.
pub const TOMBSTONE_SECONDS: i64 = 30 * 24 * 3600;
/// How long a command record (command id -> waiting task token) is kept.
pub const COMMAND_RECORD_SECONDS: i64 = 7 * 24 * 3600;
/// Actions the API shows; the full log stays in the table.
pub const RECENT_ACTIONS: usize = 50;

/// The table's client and name: every cluster's state goes through it (see the module doc).
#[derive(Debug, Clone)]
pub struct ClusterStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl ClusterStore {
    /// A store on `table`, reached through `client` (the SDK or a test's mock).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn cluster_key(id: &str) -> String {
        format!("CLUSTER#{id}")
    }

    fn command_key(command_id: &str) -> String {
        format!("COMMAND#{command_id}")
    }

    fn name_key(name: &str) -> String {
        format!("NAME#{name}")
    }

    fn actions_key(id: &str) -> String {
        format!("ACTIONS#{id}")
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
}

/// Test items shared by the tests of several files.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;

    use super::codec::{Item, s};

    /// A META item as the list index returns it (no spec).
    pub(super) fn cluster_item(id: &str, phase: &str) -> Item {
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
}
