//! Backups of a cluster's database: their ids, records and manifests, and the pure
//! decisions the backup task takes on them (is one due, which have expired, which backup a
//! point-in-time restore starts from).
//!
//! The S3 layout and the manifest are the shared contract of issue 16 (the scripts write
//! them, the orchestrator reads them):
//! - `clusters/<clusterId>/backups/<backupId>/data.tar.gz` and `.../manifest.json` (written
//!   last: a backup without a manifest does not exist);
//! - `clusters/<clusterId>/binlogs/<serverUuid>/<binlog file>`.
//!
//! Times are RFC 3339 UTC strings as stored everywhere else; they are compared as epoch
//! seconds ([`epoch_of`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest interval between scheduled backups (a week).
pub const MAX_BACKUP_HOURS: u32 = 168;
/// Backups are kept 1 to 35 days, the range RDS allows for automated backups.
pub const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 1..=35;

/// How often a cluster is backed up: every `hours` hours. Spelled `"hourly"` (1),
/// `"daily"` (24) or `"<N>h"` (1 <= N <= 168) in requests and answers; a whole number of
/// hours keeps the task's "is one due" a plain subtraction and leaves cron syntax out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSchedule(u32);

impl BackupSchedule {
    /// Every 24 hours.
    pub const DAILY: Self = Self(24);

    /// The interval in hours.
    pub fn hours(self) -> u32 {
        self.0
    }

    /// `"hourly"`, `"daily"` or `"<N>h"` with 1 <= N <= 168.
    pub fn parse(text: &str) -> Option<Self> {
        let hours = match text {
            "hourly" => 1,
            "daily" => 24,
            other => {
                let digits = other.strip_suffix('h')?;
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok()?
            }
        };
        (1..=MAX_BACKUP_HOURS)
            .contains(&hours)
            .then_some(Self(hours))
    }
}

impl std::fmt::Display for BackupSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("hourly"),
            24 => f.write_str("daily"),
            n => write!(f, "{n}h"),
        }
    }
}

impl Serialize for BackupSchedule {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackupSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a backup schedule")))
    }
}

/// How often a cluster is backed up and how long backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// Time between scheduled backups.
    pub schedule: BackupSchedule,
    /// Days a backup is kept (the newest completed one is kept regardless).
    pub retention_days: u32,
}

impl Default for BackupPolicy {
    /// Daily, kept a week: what a cluster created without `backup` (or before backups
    /// existed) gets.
    fn default() -> Self {
        Self {
            schedule: BackupSchedule::DAILY,
            retention_days: 7,
        }
    }
}

/// The restore a new cluster starts from, pinned by the API before the cluster is created
/// so every run of the workflow restores the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// The cluster the backup is of (a `ClusterId`; it may be deleted by now).
    pub source_cluster: String,
    /// The backup restored.
    pub backup_id: BackupId,
    /// Archived binlogs are applied up to (excluding) this RFC 3339 UTC second; `None`
    /// restores the backup as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<String>,
}

impl RestorePlan {
    /// The plan of restoring `backup` of `source`, up to `stop_at` (epoch seconds).
    pub fn new(source: &str, backup: BackupId, stop_at: Option<i64>) -> Self {
        Self {
            source_cluster: source.to_string(),
            backup_id: backup,
            stop_at: stop_at.map(format_epoch),
        }
    }
}

/// The only manifest format this code reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// A backup's id: `<yyyymmddThhmmssZ>-<8 lowercase hex>` (`20261201T063000Z-0a1b2c3d`), so
/// ids sort by the time they were requested and two requests in one second differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    /// The id of a backup requested at `epoch` (seconds) with the random `suffix`.
    pub fn new(epoch: i64, suffix: u32) -> Self {
        let stamp = format_epoch(epoch)
            .replace(['-', ':'], "")
            .trim_end_matches('Z')
            .to_string();
        Self(format!("{stamp}Z-{suffix:08x}"))
    }

    /// `text` as an id, if it has the contract's form (a real calendar time included).
    pub fn parse(text: &str) -> Option<Self> {
        let (stamp, hex) = text.split_once('-')?;
        let hex_ok = hex.len() == 8
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        let bytes = stamp.as_bytes();
        let stamp_ok = bytes.len() == 16
            && bytes[8] == b'T'
            && bytes[15] == b'Z'
            && bytes[..8].iter().all(u8::is_ascii_digit)
            && bytes[9..15].iter().all(u8::is_ascii_digit);
        if !(hex_ok && stamp_ok) {
            return None;
        }
        let rfc = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &stamp[0..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13],
            &stamp[13..15]
        );
        // A round trip refuses 20261301T.. and 20260230T.. that the digits alone allow.
        let epoch = epoch_of(&rfc).ok()?;
        (format_epoch(epoch) == rfc).then(|| Self(text.to_string()))
    }

    /// The id as S3 keys and the store spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> Self {
        id.0
    }
}

impl TryFrom<String> for BackupId {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        Self::parse(&text).ok_or_else(|| format!("{text:?} is not a backup id"))
    }
}

/// Where a backup is in its life. `Completed` and `Failed` are final: the store's
/// conditional writes never move a record out of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupState {
    /// Asked for (`POST /clusters/{id}/backups`); the next tick starts it.
    Pending,
    /// A `DbBackup` command was sent; the tick resolves it.
    Running,
    /// The manifest was read and checked: the backup can be restored.
    Completed,
    /// It did not produce a backup; `failure` says why.
    Failed,
}

impl BackupState {
    /// The store's spelling (`COMPLETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// `text` as a state, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Completed, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// No further change: the record is kept as it is until it expires.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Who asked for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupTrigger {
    /// The cluster's backup policy.
    Schedule,
    /// `POST /clusters/{id}/backups`.
    Api,
}

impl BackupTrigger {
    /// The store's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Api => "api",
        }
    }

    /// `text` as a trigger, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Schedule, Self::Api]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// One backup as the store records it and the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup's id.
    pub id: BackupId,
    /// The cluster it is a copy of.
    pub cluster: String,
    /// Where it is in its life.
    pub state: BackupState,
    /// Who asked for it.
    pub trigger: BackupTrigger,
    /// When it was asked for (RFC 3339 UTC).
    pub requested_at: String,
    /// The slot the current (or last) attempt runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// The instance of that slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The SSM command of the current attempt: a retried tick waits on it instead of
    /// sending another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// When the current attempt's command was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the copy was taken (the manifest's `completedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The compressed archive's size in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The GTID set the copy holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_executed: Option<String>,
    /// The MySQL version that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_version: Option<String>,
    /// Why it failed (no secrets: a script's stderr excerpt or our own words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The nodes that refused it this attempt round (a PRIMARY): the next try picks another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_slots: Vec<u32>,
    /// The store's revision of the record read (its conditional writes move a record only
    /// from the revision it was read at); not part of the record's JSON.
    #[serde(skip)]
    pub revision: u64,
}

impl BackupRecord {
    /// A new record of a backup asked for at `epoch`.
    pub fn pending(cluster: &str, id: BackupId, trigger: BackupTrigger, epoch: i64) -> Self {
        Self {
            id,
            cluster: cluster.to_string(),
            state: BackupState::Pending,
            trigger,
            requested_at: format_epoch(epoch),
            slot: None,
            instance_id: None,
            command_id: None,
            started_at: None,
            completed_at: None,
            bytes: None,
            gtid_executed: None,
            mysql_version: None,
            failure: None,
            refused_slots: Vec::new(),
            revision: 0,
        }
    }

    /// The record completed from a manifest that [`Manifest::check`] accepted.
    pub fn completed_from(&self, manifest: &Manifest) -> Self {
        Self {
            state: BackupState::Completed,
            completed_at: Some(manifest.completed_at.clone()),
            bytes: Some(manifest.archive.bytes),
            gtid_executed: Some(manifest.gtid_executed.clone()),
            mysql_version: Some(manifest.mysql_version.clone()),
            failure: None,
            ..self.clone()
        }
    }

    /// The record failed with `reason` (cut to a length the API and the store carry).
    pub fn failed(&self, reason: &str) -> Self {
        Self {
            state: BackupState::Failed,
            failure: Some(excerpt(reason, 1000)),
            ..self.clone()
        }
    }
}

/// The archive a manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestArchive {
    /// Its S3 key (`clusters/<id>/backups/<backupId>/data.tar.gz`).
    pub key: String,
    /// `gzip`.
    pub compression: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// `manifest.json`, as `db-backup.sh` writes it (the contract of issue 16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    /// The backup's id.
    pub backup_id: String,
    /// The cluster's id.
    pub cluster_id: String,
    /// `clone-local`.
    pub method: String,
    /// The MySQL version of the source.
    pub mysql_version: String,
    /// The source's `report_host`.
    pub source_host: String,
    /// The source's `server_uuid`.
    pub source_server_uuid: String,
    /// The source's role when copied (`SECONDARY`).
    pub source_role: String,
    /// When the copy started (RFC 3339 UTC).
    pub started_at: String,
    /// When the copy was complete (RFC 3339 UTC).
    pub completed_at: String,
    /// The GTID set of the copy.
    pub gtid_executed: String,
    /// The copy's binary log file.
    pub binlog_file: String,
    /// And position in it.
    pub binlog_position: u64,
    /// The uncompressed data's size.
    pub data_bytes: u64,
    /// The archive.
    pub archive: ManifestArchive,
}

impl Manifest {
    /// Parse a manifest's bytes (the object, or a script's last stdout line).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
            key: "manifest.json".into(),
            problem: e.to_string(),
        })
    }

    /// The key `manifest.json` of `backup` of `cluster` is stored under.
    pub fn key(cluster: &str, backup: &BackupId) -> String {
        format!("{}manifest.json", backup_prefix(cluster, backup))
    }

    /// Whether this manifest is the one of `cluster`'s backup `backup`, complete and sane:
    /// a manifest that names another backup, an empty archive or a malformed checksum would
    /// make a restore fail later, so the backup fails now instead.
    pub fn check(&self, cluster: &str, backup: &BackupId) -> Result<()> {
        let wrong = |problem: String| Error::CorruptRecord {
            key: Self::key(cluster, backup),
            problem,
        };
        if self.format_version != MANIFEST_FORMAT_VERSION {
            return Err(wrong(format!(
                "formatVersion {} is not {MANIFEST_FORMAT_VERSION}",
                self.format_version
            )));
        }
        if self.backup_id != backup.as_str() {
            return Err(wrong(format!("names backup {}", self.backup_id)));
        }
        if self.cluster_id != cluster {
            return Err(wrong(format!("names cluster {}", self.cluster_id)));
        }
        let archive_key = format!("{}data.tar.gz", backup_prefix(cluster, backup));
        if self.archive.key != archive_key {
            return Err(wrong(format!(
                "archive key {} is not {archive_key}",
                self.archive.key
            )));
        }
        if self.archive.bytes == 0 || self.data_bytes == 0 {
            return Err(wrong("archive or data size is 0".into()));
        }
        let hex = &self.archive.sha256;
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(wrong(format!("sha256 {hex:?} is not 64 lowercase hex")));
        }
        if self.gtid_executed.trim().is_empty() {
            return Err(wrong("gtidExecuted is empty".into()));
        }
        for (field, value) in [
            ("startedAt", &self.started_at),
            ("completedAt", &self.completed_at),
        ] {
            epoch_of(value).map_err(|_| wrong(format!("{field} {value:?} is not RFC 3339")))?;
        }
        Ok(())
    }
}

/// `clusters/<cluster>/`: everything of one cluster in the bucket.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("clusters/{cluster}/")
}

/// `clusters/<cluster>/backups/<backup>/`: one backup's objects.
pub fn backup_prefix(cluster: &str, backup: &BackupId) -> String {
    format!("{}backups/{backup}/", cluster_prefix(cluster))
}

/// `clusters/<cluster>/binlogs/`: the archived binary logs of every server of the cluster.
pub fn binlog_prefix(cluster: &str) -> String {
    format!("{}binlogs/", cluster_prefix(cluster))
}

/// The backup archive's state of a cluster: up to when a point-in-time restore can go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveState {
    /// Everything the PRIMARY committed before this time is in S3 (its `consistentAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_until: Option<String>,
    /// The server whose binlogs were last shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
    /// The last `DbBinlogArchive` command sent, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// When it was sent (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_at: Option<String>,
}

/// What `db-binlog-archive.sh` prints last (the contract): the PRIMARY's report, or
/// `{"role":"SECONDARY","skipped":true}` elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// `PRIMARY`, `SECONDARY` or the member state.
    pub role: String,
    /// The PRIMARY's server uuid.
    #[serde(default)]
    pub server_uuid: Option<String>,
    /// The binlog files shipped by this run.
    #[serde(default)]
    pub shipped: Vec<String>,
    /// Everything committed before this time is in S3 (PRIMARY only).
    #[serde(default)]
    pub consistent_at: Option<String>,
}

impl ArchiveReport {
    /// The report in a command's output: its last non-empty line, if it is one.
    pub fn from_output(output: &str) -> Option<Self> {
        let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(line.trim()).ok()
    }

    /// The PRIMARY's `consistentAt`, when it is a valid time.
    pub fn primary_consistent_at(&self) -> Option<i64> {
        if self.role != "PRIMARY" {
            return None;
        }
        self.consistent_at.as_deref().and_then(|t| epoch_of(t).ok())
    }
}

/// Whether a scheduled backup is due at `now`: none of the cluster's backups is in flight,
/// and the last scheduled one that did not fail was asked for at least one interval ago
/// (a failed one is retried at the next slot: the interval counts from the last attempt,
/// so a broken node does not get a backup attempt every minute).
pub fn due(policy: &BackupPolicy, records: &[BackupRecord], now: i64) -> bool {
    if records
        .iter()
        .any(|r| matches!(r.state, BackupState::Pending | BackupState::Running))
    {
        return false;
    }
    let interval = i64::from(policy.schedule.hours()) * 3600;
    let last = records
        .iter()
        .filter(|r| r.trigger == BackupTrigger::Schedule)
        .filter_map(|r| epoch_of(&r.requested_at).ok())
        .max();
    match last {
        None => true,
        Some(last) => now - last >= interval,
    }
}

/// The backups to delete at `now`: those past the retention, except the newest completed
/// one (a cluster always keeps one restorable backup while it has any), and failed ones
/// past the retention too. Records in flight are never expired.
pub fn expired<'a>(
    policy: &BackupPolicy,
    records: &'a [BackupRecord],
    now: i64,
) -> Vec<&'a BackupRecord> {
    let cutoff = now - i64::from(policy.retention_days) * 86_400;
    let newest_completed = records
        .iter()
        .filter(|r| r.state == BackupState::Completed)
        .max_by_key(|r| r.completed_epoch())
        .map(|r| r.id.clone());
    records
        .iter()
        .filter(|r| r.state.is_final())
        .filter(|r| Some(&r.id) != newest_completed.as_ref())
        .filter(|r| {
            let at = r
                .completed_epoch()
                .or_else(|| epoch_of(&r.requested_at).ok());
            at.is_some_and(|at| at < cutoff)
        })
        .collect()
}

/// Archived binlogs older than this time (epoch) are not needed by any kept backup: the
/// oldest kept completed backup's start (its copy needs the logs from then on).
pub fn binlogs_needed_from(kept: &[&BackupRecord]) -> Option<i64> {
    kept.iter()
        .filter(|r| r.state == BackupState::Completed)
        .filter_map(|r| {
            r.started_at
                .as_deref()
                .or(Some(r.requested_at.as_str()))
                .and_then(|t| epoch_of(t).ok())
        })
        .min()
}

impl BackupRecord {
    /// The time the copy was complete, as epoch seconds.
    pub fn completed_epoch(&self) -> Option<i64> {
        self.completed_at.as_deref().and_then(|t| epoch_of(t).ok())
    }
}

/// The backup a restore of a point in time `at` starts from: the latest completed backup
/// taken at or before `at`, when `at` is within the restorable window (the oldest completed
/// backup to `restorable_until`, the archive's `consistentAt`).
pub fn backup_for_point_in_time<'a>(
    cluster: &str,
    records: &'a [BackupRecord],
    restorable_until: Option<&str>,
    at: i64,
    now: i64,
) -> Result<&'a BackupRecord> {
    let field = "restore.pointInTime";
    let completed: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.state == BackupState::Completed && r.completed_epoch().is_some())
        .collect();
    let Some(oldest) = completed.iter().filter_map(|r| r.completed_epoch()).min() else {
        return Err(Error::validation(
            field,
            format!("cluster {cluster} has no completed backup"),
            "take a backup first (POST /clusters/{id}/backups) or wait for the scheduled one",
        ));
    };
    let until = restorable_until
        .and_then(|t| epoch_of(t).ok())
        .map(|u| u.max(oldest));
    let window = format!(
        "restorable from {} to {}",
        format_epoch(oldest),
        until.map_or_else(|| format_epoch(oldest), format_epoch)
    );
    if at > now {
        return Err(Error::validation(
            field,
            format!("{} is in the future", format_epoch(at)),
            format!("ask for a time {window}"),
        ));
    }
    if at < oldest || at > until.unwrap_or(oldest) {
        return Err(Error::validation(
            field,
            format!("{} is outside the window", format_epoch(at)),
            format!("ask for a time {window}"),
        ));
    }
    completed
        .into_iter()
        .filter(|r| r.completed_epoch().is_some_and(|c| c <= at))
        .max_by_key(|r| (r.completed_epoch(), r.id.clone()))
        .ok_or_else(|| {
            Error::validation(
                field,
                "no backup precedes it",
                format!("ask for a time {window}"),
            )
        })
}

/// The backup `id` of a restore by id: it must exist and be completed.
pub fn backup_by_id<'a>(records: &'a [BackupRecord], id: &BackupId) -> Result<&'a BackupRecord> {
    let record = records
        .iter()
        .find(|r| &r.id == id)
        .ok_or_else(|| Error::NotFound {
            kind: "backup",
            id: id.to_string(),
        })?;
    if record.state != BackupState::Completed {
        return Err(Error::Conflict(format!(
            "backup {id} is {} and cannot be restored; pick a COMPLETED backup",
            record.state.as_str()
        )));
    }
    Ok(record)
}

/// The latest completed backup (a restore that names neither a backup nor a time).
pub fn latest_completed(records: &[BackupRecord]) -> Option<&BackupRecord> {
    records
        .iter()
        .filter(|r| r.state == BackupState::Completed)
        .max_by_key(|r| (r.completed_epoch(), r.id.clone()))
}

/// An RFC 3339 time as epoch seconds (fractions dropped). Only UTC (`Z`) is taken: the
/// contract's times are UTC, and an offset is a mistake worth a clear refusal.
pub fn epoch_of(text: &str) -> Result<i64> {
    let bad = || {
        Error::validation(
            "time",
            format!("{text:?} is not an RFC 3339 UTC time"),
            "send a time such as 2026-12-01T06:30:00Z",
        )
    };
    if !text.ends_with('Z') {
        return Err(bad());
    }
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .map(|t| t.secs())
        .map_err(|_| bad())
}

/// Epoch seconds as RFC 3339 UTC without fractions (`2026-12-01T06:30:00Z`).
pub fn format_epoch(epoch: i64) -> String {
    aws_smithy_types::DateTime::from_secs(epoch)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// The first `max` characters of `text`, on a character boundary, trimmed.
pub fn excerpt(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests;
