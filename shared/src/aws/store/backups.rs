//! A cluster's backups and its binary log archive, in a partition of their own
//! (`BACKUPS#<cluster id>`), so the teardown's purge of `CLUSTER#` and `ACTIONS#` leaves
//! them: a deleted cluster's backups stay restorable until they expire or
//! `DELETE /clusters/{id}?purgeBackups=true` removes them.
//!
//! - `sk = BACKUP#<backup id>`: one [`BackupRecord`] (JSON in `data`, its `state` and a
//!   `rev` number beside it for the conditional writes). A record moves only from the
//!   revision it was read at and only while it is not final: a `COMPLETED` or `FAILED`
//!   record never changes again, and two ticks that race on one backup cannot both win.
//! - `sk = ARCHIVE`: the binary log archive's [`ArchiveState`] (`restorable_until` and its
//!   epoch `until_epoch`, which only moves forward; the last `DbBinlogArchive` command and
//!   when it was sent, `sent_epoch`, claimed once per interval).

use super::ClusterStore;
use super::codec::{Item, data_of, happened, n, number_attr, s, sk_of, to_json};
use crate::domain::backup::{ArchiveState, BackupId, BackupRecord, BackupState};
use crate::error::{Error, Result, from_sdk};

/// Everything recorded about a cluster's backups, from one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupHistory {
    /// Every backup record, oldest first (the ids sort by time).
    pub records: Vec<BackupRecord>,
    /// The binary log archive, once a round was sent.
    pub archive: Option<ArchiveState>,
    /// The archive round's command, still to be read (`None` once read).
    pub archive_pending: Option<PendingArchive>,
}

/// A `DbBinlogArchive` command sent and not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingArchive {
    /// The command.
    pub command_id: String,
    /// When it was sent (epoch seconds).
    pub sent_epoch: i64,
}

impl ClusterStore {
    fn backups_key(cluster: &str) -> String {
        format!("BACKUPS#{cluster}")
    }

    fn backup_sk(id: &BackupId) -> String {
        format!("BACKUP#{id}")
    }

    /// The cluster's backups and archive state. Empty for a cluster never backed up (or one
    /// this stack never had: the partition is per stack table).
    pub async fn backup_history(&self, cluster: &str) -> Result<BackupHistory> {
        let items = self
            .partition_items(Self::backups_key(cluster), None)
            .await?;
        let mut history = BackupHistory::default();
        for item in &items {
            let sk = sk_of(item);
            if sk.starts_with("BACKUP#") {
                let mut record: BackupRecord = data_of(item)?;
                record.revision = number_attr(item, "rev").unwrap_or_default();
                history.records.push(record);
            } else if sk == "ARCHIVE" {
                history.archive = Some(archive_of(item)?);
                let command = item
                    .get("pending_command")
                    .and_then(|v| v.as_s().ok())
                    .cloned();
                history.archive_pending = command.map(|command_id| PendingArchive {
                    command_id,
                    sent_epoch: number_attr(item, "sent_epoch").unwrap_or_default() as i64,
                });
            }
        }
        history.records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(history)
    }

    /// Record a new backup (`PENDING` from the API, `RUNNING` from the schedule's claim);
    /// false when one with this id exists.
    pub async fn create_backup(&self, record: &BackupRecord) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(backup_item(record, 1)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        happened(result, "PutItem")
    }

    /// Replace a backup's record with `next`, if it is still at the revision `next` was
    /// made from (`next.revision`) and not final; false otherwise (another tick moved it
    /// first, or it is final already). The written record's revision is one more.
    pub async fn update_backup(&self, next: &BackupRecord) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(backup_item(next, next.revision + 1)?))
            .condition_expression("rev = :rev AND #state IN (:pending, :running)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":rev", n(next.revision))
            .expression_attribute_values(":pending", s(BackupState::Pending.as_str()))
            .expression_attribute_values(":running", s(BackupState::Running.as_str()))
            .send()
            .await;
        happened(result, "PutItem")
    }

    /// Forget a backup whose objects were deleted (retention or purge).
    pub async fn delete_backup(&self, cluster: &str, id: &BackupId) -> Result<()> {
        self.delete_key(Self::backups_key(cluster), Self::backup_sk(id))
            .await
    }

    /// Claim this interval's binary log archive round: true at most once per
    /// `interval_seconds`, so overlapping ticks send one `DbBinlogArchive` between them.
    pub async fn claim_archive_round(
        &self,
        cluster: &str,
        now: i64,
        interval_seconds: i64,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::backups_key(cluster)))
            .key("sk", s("ARCHIVE"))
            .update_expression("SET sent_epoch = :now REMOVE pending_command")
            .condition_expression("attribute_not_exists(sent_epoch) OR sent_epoch <= :cutoff")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":cutoff", n(now - interval_seconds))
            .send()
            .await;
        happened(result, "UpdateItem")
    }

    /// Remember the archive round's command, for the next tick to read.
    pub async fn record_archive_command(&self, cluster: &str, command_id: &str) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::backups_key(cluster)))
            .key("sk", s("ARCHIVE"))
            .update_expression("SET pending_command = :command, last_command_id = :command")
            .expression_attribute_values(":command", s(command_id))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("dynamodb", "UpdateItem", e))
    }

    /// The archive round's command was read: forget it, and move `restorable_until`
    /// forward to `until` (epoch, RFC 3339) when the PRIMARY reported one. Only forward:
    /// a late answer of an older round does not shrink the window. False when only the
    /// command was forgotten (no time, or not later than the recorded one).
    pub async fn finish_archive_round(
        &self,
        cluster: &str,
        command_id: &str,
        until: Option<(i64, &str, &str)>,
    ) -> Result<bool> {
        let forget = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::backups_key(cluster)))
            .key("sk", s("ARCHIVE"))
            .update_expression("REMOVE pending_command")
            .condition_expression("pending_command = :command")
            .expression_attribute_values(":command", s(command_id))
            .send()
            .await;
        happened(forget, "UpdateItem")?;
        let Some((epoch, text, server_uuid)) = until else {
            return Ok(false);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::backups_key(cluster)))
            .key("sk", s("ARCHIVE"))
            .update_expression(
                "SET until_epoch = :epoch, restorable_until = :until, server_uuid = :uuid",
            )
            .condition_expression("attribute_not_exists(until_epoch) OR until_epoch < :epoch")
            .expression_attribute_values(":epoch", n(epoch))
            .expression_attribute_values(":until", s(text))
            .expression_attribute_values(":uuid", s(server_uuid))
            .send()
            .await;
        happened(result, "UpdateItem")
    }

    /// Delete every record of the cluster's backups and its archive state
    /// (`DELETE /clusters/{id}?purgeBackups=true`, after the objects); returns how many.
    pub async fn purge_backups(&self, cluster: &str) -> Result<usize> {
        let items = self
            .partition_items(Self::backups_key(cluster), Some("pk, sk"))
            .await?;
        for item in &items {
            self.delete_key(Self::backups_key(cluster), sk_of(item).to_string())
                .await?;
        }
        Ok(items.len())
    }
}

fn backup_item(record: &BackupRecord, rev: u64) -> Result<Item> {
    let mut stored = record.clone();
    stored.revision = rev;
    Ok(Item::from([
        ("pk".into(), s(ClusterStore::backups_key(&record.cluster))),
        ("sk".into(), s(ClusterStore::backup_sk(&record.id))),
        ("state".into(), s(record.state.as_str())),
        ("rev".into(), n(rev)),
        ("data".into(), s(to_json("backup record", &stored)?)),
    ]))
}

fn archive_of(item: &Item) -> Result<ArchiveState> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let state = ArchiveState {
        restorable_until: text("restorable_until"),
        server_uuid: text("server_uuid"),
        last_command_id: text("last_command_id"),
        last_sent_at: number_attr(item, "sent_epoch")
            .map(|e| crate::domain::backup::format_epoch(e as i64)),
    };
    if let Some(until) = &state.restorable_until {
        crate::domain::backup::epoch_of(until).map_err(|_| Error::CorruptRecord {
            key: format!("{}/ARCHIVE", sk_of(item)),
            problem: format!("restorable_until {until:?} is not RFC 3339"),
        })?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests;
