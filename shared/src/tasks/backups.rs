//! The backup tick (EventBridge schedule, every minute): for every cluster of the stack,
//!
//! 1. resolve its `RUNNING` backup: the `DbBackup` command succeeded -> read and check the
//!    manifest, `COMPLETED`; exit 3 (the node refused: it is the PRIMARY, or not ONLINE) ->
//!    the same backup at once on the next database node; any other end, a node gone, or no
//!    result within [`Backups::attempt_timeout_seconds`] -> `FAILED` with the reason (a
//!    scheduled backup is tried again at the next slot);
//! 2. on a READY cluster, start the `PENDING` on-demand backup or a due scheduled one: the
//!    record is claimed `RUNNING` on a node by a conditional write *before* `SendCommand`,
//!    and the command id recorded after, so a retried or overlapping tick never sends a
//!    second command for the same backup (a claim whose command id was never recorded fails
//!    after [`SEND_GRACE_SECONDS`] instead of being sent again);
//! 3. on a READY cluster, once per [`Backups::archive_seconds`], send `DbBinlogArchive` to
//!    every database node, and on a later tick read the PRIMARY's `consistentAt` into the
//!    archive's `restorableUntil`;
//! 4. delete backups past retention (objects, then records; the newest completed one is
//!    always kept) and archived binlogs older than the oldest kept backup.
//!
//! Every start, completion, refusal, failure and expiry goes to the cluster's action log,
//! without secrets (the scripts' stderr carries none: they read passwords on the instance).

use crate::aws::backups::BackupBucket;
use crate::aws::commands::{Commands, Invocation, STDERR_EXCERPT_CHARS, tail};
use crate::aws::store::{BackupHistory, ClusterStore};
use crate::domain::backup::{
    ArchiveReport, BackupId, BackupRecord, BackupState, BackupTrigger, binlogs_needed_from, due,
    epoch_of, expired, format_epoch,
};
use crate::domain::cluster::{Cluster, NodeState, Phase, Tier};
use crate::domain::commands::{CommandStatus, Document};
use crate::error::{Error, Result};

/// How long a claimed backup may wait for its command id to be recorded, or SSM to know
/// the invocation, before it is judged lost (a tick that died between claim and send).
pub const SEND_GRACE_SECONDS: i64 = 300;
/// The default for [`Backups::attempt_timeout_seconds`]: the `DbBackup` document's own
/// timeout is the lead's (template.yaml); this is the orchestrator's bound on one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT_SECONDS: i64 = 4 * 3600;
/// The default for [`Backups::archive_seconds`] (template.yaml's `BinlogArchiveSeconds`).
pub const DEFAULT_ARCHIVE_SECONDS: i64 = 300;
/// Archived binlogs are kept this much longer than strictly needed (clock skew between the
/// instance that wrote the backup and S3's `LastModified`).
const BINLOG_MARGIN_SECONDS: i64 = 3600;
/// Clusters handled at once.
const TICK_CONCURRENCY: usize = 4;

/// The tick's adapters and settings, built once per cold start.
#[derive(Debug, Clone)]
pub struct Backups {
    /// Clusters, their nodes, the backup records and the action log.
    pub store: ClusterStore,
    /// Sends `DbBackup` / `DbBinlogArchive` and reads their invocations.
    pub commands: Commands,
    /// The backup bucket: manifests, retention.
    pub bucket: BackupBucket,
    /// Seconds between binary log archive rounds (`BINLOG_ARCHIVE_SECONDS`).
    pub archive_seconds: i64,
    /// Seconds one backup attempt may run before it is failed (`BACKUP_TIMEOUT_SECONDS`).
    pub attempt_timeout_seconds: i64,
}

/// What one tick did, for the log line and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Clusters looked at.
    pub clusters: usize,
    /// `(cluster, backup id, what happened)`, in the order it happened.
    pub events: Vec<(String, String, String)>,
}

/// What a running backup's invocation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still running (or just sent): look again next tick.
    Wait,
    /// Exit 0: read the manifest.
    Succeeded,
    /// Exit 3: this node refused (the PRIMARY, or not ONLINE); try the next one.
    Refused,
    /// It ended otherwise, or took too long: the reason.
    Failed(String),
}

/// Judge a `RUNNING` record from its invocation (`None`: SSM knows none yet) at `now`.
pub fn judge(record: &BackupRecord, invocation: Option<&Invocation>, now: i64) -> Verdict {
    judge_with(record, invocation, now, DEFAULT_ATTEMPT_TIMEOUT_SECONDS)
}

fn judge_with(
    record: &BackupRecord,
    invocation: Option<&Invocation>,
    now: i64,
    timeout: i64,
) -> Verdict {
    let started = record
        .started_at
        .as_deref()
        .and_then(|t| epoch_of(t).ok())
        .unwrap_or(now);
    let age = now - started;
    let Some(command) = record.command_id.as_deref() else {
        return if age > SEND_GRACE_SECONDS {
            Verdict::Failed(format!(
                "the DbBackup command of this attempt was never recorded as sent ({} s after \
                 the claim); the attempt is given up rather than risk a second copy",
                age
            ))
        } else {
            Verdict::Wait
        };
    };
    let Some(invocation) = invocation else {
        return if age > SEND_GRACE_SECONDS {
            Verdict::Failed(format!(
                "SSM knows no invocation of command {command} on {} after {age} s",
                record.instance_id.as_deref().unwrap_or("?")
            ))
        } else {
            Verdict::Wait
        };
    };
    if !invocation.status.is_terminal() {
        return if age > timeout {
            Verdict::Failed(format!(
                "no result from command {command} after {} minutes (status {:?} {})",
                age / 60,
                invocation.status,
                invocation.status_details
            ))
        } else {
            Verdict::Wait
        };
    }
    match (invocation.status, invocation.response_code) {
        (CommandStatus::Success, _) => Verdict::Succeeded,
        // db-backup.sh's contract: exit 3 is a refusal (the PRIMARY while another member
        // is ONLINE, or not an ONLINE member), never a half-made backup.
        (CommandStatus::Failed, 3) => Verdict::Refused,
        (status, code) => Verdict::Failed(format!(
            "command {command} ended {status:?} ({}) with exit code {code}",
            if invocation.status_details.is_empty() {
                "no detail"
            } else {
                invocation.status_details.as_str()
            }
        )),
    }
}

/// The database nodes a backup may run on, best first, leaving out `refused` slots:
/// running instances only; SECONDARY before anything else (the script refuses the PRIMARY
/// while another member is ONLINE), then ONLINE members, then slots other than the seed
/// `db-0` (usually the PRIMARY), then by slot.
pub fn candidates(cluster: &Cluster, refused: &[u32]) -> Vec<(u32, String)> {
    let mut nodes: Vec<_> = cluster
        .nodes
        .iter()
        .filter(|n| n.tier == Tier::Db && n.state == NodeState::Running)
        .filter_map(|n| {
            let index = crate::domain::cluster::Slot::parse(&n.slot)?.index;
            let instance = n.instance_id.clone()?;
            (!refused.contains(&index)).then_some((n, index, instance))
        })
        .collect();
    nodes.sort_by_key(|(n, index, _)| {
        (
            n.role.as_deref() != Some("SECONDARY"),
            n.member_state.as_deref() != Some("ONLINE"),
            *index == 0,
            *index,
        )
    });
    nodes
        .into_iter()
        .map(|(_, index, instance)| (index, instance))
        .collect()
}

/// A scheduled backup's id: the minute it was due and a suffix from the cluster and that
/// minute, so two ticks overlapping in one minute create the same record (the store's
/// conditional create keeps one) instead of two backups.
pub fn scheduled_id(cluster: &str, now: i64) -> BackupId {
    let minute = now - now.rem_euclid(60);
    // FNV-1a: stable across processes, unlike the standard library's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in format!("{cluster}@{minute}").bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    BackupId::new(minute, hash)
}

impl Backups {
    /// One tick at `now` (epoch seconds) over every cluster of the stack. One cluster's
    /// failure does not stop the others; the first error is returned once all were tried,
    /// so the invocation fails visibly and the next tick tries again.
    #[tracing::instrument(skip_all)]
    pub async fn tick(&self, now: i64) -> Result<TickReport> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_clusters(crate::aws::store::MAX_PAGE_SIZE, after.as_deref())
                .await?;
            ids.extend(page.items.into_iter().map(|c| c.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut report = TickReport {
            clusters: ids.len(),
            events: Vec::new(),
        };
        let results = crate::concurrency::bounded(ids, TICK_CONCURRENCY, |id| {
            let this = self.clone();
            async move {
                let outcome = this.cluster_tick(&id, now).await;
                Ok::<_, Error>((id, outcome))
            }
        })
        .await?;
        let mut first_error = None;
        for (id, outcome) in results {
            match outcome {
                Ok(events) => report.events.extend(events),
                Err(error) => {
                    tracing::warn!(cluster_id = %id, error = %error, "backup tick failed for the cluster");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Steps 1-4 for one cluster.
    pub async fn cluster_tick(&self, id: &str, now: i64) -> Result<Vec<(String, String, String)>> {
        let Some(cluster) = self.store.get_cluster(id).await? else {
            return Ok(Vec::new());
        };
        let history = self.store.backup_history(id).await?;
        self.handle_cluster(&cluster, &history, now).await
    }

    /// Steps 1-4 for one cluster as read.
    pub async fn handle_cluster(
        &self,
        cluster: &Cluster,
        history: &BackupHistory,
        now: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let cluster = cluster.clone();
        let mut events = Vec::new();
        let mut records = history.records.clone();
        // 1. resolve what runs.
        for record in records.iter_mut() {
            if record.state == BackupState::Running
                && let Some(next) = self.resolve(&cluster, record, now, &mut events).await?
            {
                *record = next;
            }
        }
        if cluster.phase == Phase::Ready {
            // 2. start what is asked for or due.
            self.start_next(&cluster, &mut records, now, &mut events)
                .await?;
            // 3. the binlog archive.
            self.archive_round(&cluster, history, now).await?;
        }
        // 4. retention.
        self.prune(&cluster, &records, now, &mut events).await?;
        Ok(events)
    }

    async fn journal(
        &self,
        cluster: &Cluster,
        record: &BackupRecord,
        action: &str,
        detail: String,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<()> {
        events.push((
            cluster.id.clone(),
            record.id.to_string(),
            action.to_string(),
        ));
        self.store
            .append_action(&cluster.id, cluster.generation, action, &detail)
            .await
    }

    /// Step 1 for one `RUNNING` record; the record as written when it moved.
    async fn resolve(
        &self,
        cluster: &Cluster,
        record: &BackupRecord,
        now: i64,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<Option<BackupRecord>> {
        let instance = record.instance_id.clone().unwrap_or_default();
        let node_alive = cluster.nodes.iter().any(|n| {
            n.tier == Tier::Db
                && n.instance_id.as_deref() == Some(instance.as_str())
                && n.state == NodeState::Running
        });
        let invocation = match record.command_id.as_deref() {
            Some(command) if !instance.is_empty() => {
                self.commands.invocation(command, &instance).await?
            }
            _ => None,
        };
        let mut verdict = judge_with(
            record,
            invocation.as_ref(),
            now,
            self.attempt_timeout_seconds,
        );
        if verdict == Verdict::Wait && !node_alive && record.command_id.is_some() {
            verdict = Verdict::Failed(format!(
                "instance {instance} is no longer a running database node of the cluster"
            ));
        }
        match verdict {
            Verdict::Wait => Ok(None),
            Verdict::Succeeded => {
                let next = match self.bucket.manifest(&cluster.id, &record.id).await? {
                    None => record.failed(
                        "db-backup.sh exited 0 but left no manifest.json: the backup does not exist",
                    ),
                    Some(manifest) => match manifest.check(&cluster.id, &record.id) {
                        Ok(()) => record.completed_from(&manifest),
                        Err(problem) => record.failed(&problem.to_string()),
                    },
                };
                self.settle(cluster, record, next, events).await
            }
            Verdict::Refused => {
                let stderr = self.stderr(cluster, record).await;
                let mut refused = record.refused_slots.clone();
                refused.extend(record.slot);
                let choice = candidates(cluster, &refused).into_iter().next();
                match choice {
                    Some((slot, instance_id)) => {
                        self.journal(
                            cluster,
                            record,
                            "backup-refused",
                            format!(
                                "backup {} refused on db-{}: {stderr}; trying db-{slot}",
                                record.id,
                                record.slot.unwrap_or_default()
                            ),
                            events,
                        )
                        .await?;
                        let mut again = record.clone();
                        again.refused_slots = refused;
                        self.send_backup(cluster, again, slot, instance_id, now, events)
                            .await
                    }
                    None => {
                        let next = record.failed(&format!(
                            "every database node refused the backup; last: {stderr}"
                        ));
                        self.settle(cluster, record, next, events).await
                    }
                }
            }
            Verdict::Failed(reason) => {
                let stderr = match invocation {
                    Some(ref i) if i.status.is_terminal() => {
                        format!("; stderr: {}", self.stderr(cluster, record).await)
                    }
                    _ => String::new(),
                };
                let next = record.failed(&format!("{reason}{stderr}"));
                self.settle(cluster, record, next, events).await
            }
        }
    }

    /// The tail of the attempt's stderr (the scripts print no secret), or why it is not
    /// known.
    async fn stderr(&self, cluster: &Cluster, record: &BackupRecord) -> String {
        let (Some(command), Some(instance)) = (&record.command_id, &record.instance_id) else {
            return "no output".into();
        };
        match self.commands.output(&cluster.id, command, instance).await {
            Ok((output, _)) => {
                let text = tail(&output.stderr, STDERR_EXCERPT_CHARS);
                if text.is_empty() {
                    "no stderr".into()
                } else {
                    text
                }
            }
            Err(error) => format!("stderr unreadable ({error})"),
        }
    }

    /// Write a final record and journal it; `None` when another tick moved it first.
    async fn settle(
        &self,
        cluster: &Cluster,
        record: &BackupRecord,
        next: BackupRecord,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<Option<BackupRecord>> {
        if !self.store.update_backup(&next).await? {
            return Ok(None);
        }
        let (action, detail) = match next.state {
            BackupState::Completed => (
                "backup-completed",
                format!(
                    "backup {} completed on db-{}: {} bytes, GTID set {}, MySQL {}",
                    record.id,
                    next.slot.unwrap_or_default(),
                    next.bytes.unwrap_or_default(),
                    next.gtid_executed.as_deref().unwrap_or(""),
                    next.mysql_version.as_deref().unwrap_or("")
                ),
            ),
            _ => (
                "backup-failed",
                format!(
                    "backup {} failed: {}",
                    record.id,
                    next.failure.as_deref().unwrap_or("")
                ),
            ),
        };
        self.journal(cluster, record, action, detail, events)
            .await?;
        Ok(Some(BackupRecord {
            revision: next.revision + 1,
            ..next
        }))
    }

    /// Claim `record` `RUNNING` on `slot`, send its command, record the command id.
    async fn send_backup(
        &self,
        cluster: &Cluster,
        record: BackupRecord,
        slot: u32,
        instance_id: String,
        now: i64,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<Option<BackupRecord>> {
        let claim = BackupRecord {
            state: BackupState::Running,
            slot: Some(slot),
            instance_id: Some(instance_id.clone()),
            command_id: None,
            started_at: Some(format_epoch(now)),
            ..record.clone()
        };
        if !self.store.update_backup(&claim).await? {
            return Ok(None);
        }
        let claimed = BackupRecord {
            revision: claim.revision + 1,
            ..claim
        };
        // The scripts read the cluster admin password on the node, from this secret.
        let admin_secret = crate::aws::secrets::admin_secret_name(&cluster.id);
        let sent = self
            .commands
            .send(
                &cluster.id,
                Document::DbBackup,
                std::slice::from_ref(&instance_id),
                &[
                    ("adminSecretId", admin_secret.as_str()),
                    ("bucket", self.bucket.name()),
                    ("clusterId", cluster.id.as_str()),
                    ("backupId", record.id.as_str()),
                ],
            )
            .await;
        match sent {
            Ok(command_id) => {
                let with_command = BackupRecord {
                    command_id: Some(command_id.clone()),
                    ..claimed.clone()
                };
                if !self.store.update_backup(&with_command).await? {
                    return Ok(None);
                }
                self.journal(
                    cluster,
                    &claimed,
                    "backup-started",
                    format!(
                        "backup {} ({}) started on db-{slot} ({instance_id}), command {command_id}",
                        record.id,
                        record.trigger.as_str()
                    ),
                    events,
                )
                .await?;
                Ok(Some(BackupRecord {
                    revision: with_command.revision + 1,
                    ..with_command
                }))
            }
            Err(error) => {
                let next = claimed.failed(&format!("SendCommand failed: {error}"));
                self.settle(cluster, &claimed, next, events).await
            }
        }
    }

    /// Step 2: the `PENDING` backup asked for, else a due scheduled one; nothing while one
    /// runs.
    async fn start_next(
        &self,
        cluster: &Cluster,
        records: &mut Vec<BackupRecord>,
        now: i64,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<()> {
        if records.iter().any(|r| r.state == BackupState::Running) {
            return Ok(());
        }
        let pending = records
            .iter()
            .find(|r| r.state == BackupState::Pending)
            .cloned();
        let record = match pending {
            Some(record) => record,
            None if due(&cluster.spec.backup, records, now) => {
                let record = BackupRecord::pending(
                    &cluster.id,
                    scheduled_id(&cluster.id, now),
                    BackupTrigger::Schedule,
                    now,
                );
                if !self.store.create_backup(&record).await? {
                    return Ok(());
                }
                BackupRecord {
                    revision: 1,
                    ..record
                }
            }
            None => return Ok(()),
        };
        let Some((slot, instance)) = candidates(cluster, &record.refused_slots)
            .into_iter()
            .next()
        else {
            let next = record.failed("the cluster has no running database node to back up");
            if let Some(written) = self.settle(cluster, &record, next, events).await? {
                records.push(written);
            }
            return Ok(());
        };
        if let Some(written) = self
            .send_backup(cluster, record, slot, instance, now, events)
            .await?
        {
            records.retain(|r| r.id != written.id);
            records.push(written);
        }
        Ok(())
    }

    /// Step 3: read the last round's PRIMARY report, then send this round's command.
    async fn archive_round(
        &self,
        cluster: &Cluster,
        history: &BackupHistory,
        now: i64,
    ) -> Result<()> {
        let db_instances: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.tier == Tier::Db && n.state == NodeState::Running)
            .filter_map(|n| n.instance_id.clone())
            .collect();
        if let Some(pending) = &history.archive_pending {
            let mut until = None;
            let mut waiting = false;
            for instance in &db_instances {
                let Some(invocation) = self
                    .commands
                    .invocation(&pending.command_id, instance)
                    .await?
                else {
                    continue;
                };
                if !invocation.status.is_terminal() {
                    waiting = true;
                    continue;
                }
                if invocation.status != CommandStatus::Success {
                    tracing::warn!(cluster_id = %cluster.id, instance, status = ?invocation.status, "binlog archive failed on a node");
                    continue;
                }
                let (output, _) = self
                    .commands
                    .output(&cluster.id, &pending.command_id, instance)
                    .await?;
                if let Some(report) = ArchiveReport::from_output(&output.stdout)
                    && let Some(at) = report.primary_consistent_at()
                {
                    until = Some((at, report.server_uuid.unwrap_or_default()));
                }
            }
            // A round still running is read next tick, unless the next round is due.
            if waiting && now - pending.sent_epoch < self.archive_seconds {
                return Ok(());
            }
            let text = until.as_ref().map(|(at, _)| format_epoch(*at));
            let read = until
                .as_ref()
                .zip(text.as_deref())
                .map(|((at, uuid), text)| (*at, text, uuid.as_str()));
            self.store
                .finish_archive_round(&cluster.id, &pending.command_id, read)
                .await?;
        }
        let last_sent = history
            .archive
            .as_ref()
            .and_then(|a| a.last_sent_at.as_deref())
            .and_then(|t| epoch_of(t).ok());
        if last_sent.is_some_and(|sent| now - sent < self.archive_seconds) {
            return Ok(());
        }
        if db_instances.is_empty()
            || !self
                .store
                .claim_archive_round(&cluster.id, now, self.archive_seconds)
                .await?
        {
            return Ok(());
        }
        let admin_secret = crate::aws::secrets::admin_secret_name(&cluster.id);
        let command = self
            .commands
            .send(
                &cluster.id,
                Document::DbBinlogArchive,
                &db_instances,
                &[
                    ("adminSecretId", admin_secret.as_str()),
                    ("bucket", self.bucket.name()),
                    ("clusterId", cluster.id.as_str()),
                ],
            )
            .await?;
        self.store
            .record_archive_command(&cluster.id, &command)
            .await
    }

    /// Step 4: expired backups, then the binlogs no kept backup needs.
    async fn prune(
        &self,
        cluster: &Cluster,
        records: &[BackupRecord],
        now: i64,
        events: &mut Vec<(String, String, String)>,
    ) -> Result<()> {
        let gone = expired(&cluster.spec.backup, records, now);
        if gone.is_empty() {
            return Ok(());
        }
        for record in &gone {
            let objects = self.bucket.delete_backup(&cluster.id, &record.id).await?;
            self.store.delete_backup(&cluster.id, &record.id).await?;
            self.journal(
                cluster,
                record,
                "backup-expired",
                format!(
                    "backup {} ({}) deleted after {} days of retention ({objects} objects)",
                    record.id,
                    record.state.as_str(),
                    cluster.spec.backup.retention_days
                ),
                events,
            )
            .await?;
        }
        let kept: Vec<&BackupRecord> = records
            .iter()
            .filter(|r| !gone.iter().any(|g| g.id == r.id))
            .collect();
        if let Some(from) = binlogs_needed_from(&kept) {
            self.bucket
                .delete_binlogs_before(&cluster.id, from - BINLOG_MARGIN_SECONDS)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
