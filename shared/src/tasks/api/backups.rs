//! The backup routes: `GET` and `POST /clusters/{id}/backups`, the resolution of a create
//! request's `restore` into a pinned [`RestorePlan`], and the purge of a cluster's backups
//! that `DELETE /clusters/{id}?purgeBackups=true` asks for.

use serde_json::{Value, json};

use super::{ApiContext, ApiResponse};
use crate::aws::store::BackupHistory;
use crate::domain::backup::{
    BackupId, BackupRecord, BackupState, BackupTrigger, RestorePlan, backup_by_id,
    backup_for_point_in_time, latest_completed,
};
use crate::domain::cluster::{ClusterId, Phase, epoch_seconds};
use crate::domain::spec::{RestoreRequest, RestoreTarget};
use crate::error::Error;

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "cluster",
        id: id.to_string(),
    }
}

/// `GET /clusters/{id}/backups`: every backup recorded, newest first, with the archive's
/// `restorableUntil`. Works for a deleted cluster (even after its tombstone expired) while
/// its backups are kept.
pub(super) async fn list_backups(ctx: &ApiContext, id: &str) -> Result<ApiResponse, Error> {
    if ClusterId::parse(id).is_none() {
        return Err(not_found(id));
    }
    let history = ctx.store.backup_history(id).await?;
    let cluster = ctx.store.get_cluster(id).await?;
    if cluster.is_none() && history.records.is_empty() {
        return Err(not_found(id));
    }
    let mut backups: Vec<&BackupRecord> = history.records.iter().collect();
    backups.reverse();
    Ok(ApiResponse::json(
        200,
        json!({
            "clusterId": id,
            "phase": cluster.as_ref().map(|c| c.phase.as_str()),
            "policy": cluster.as_ref().map(|c| c.spec.backup),
            "restorableUntil": restorable_until(&history),
            "backups": backups,
        }),
    ))
}

/// `POST /clusters/{id}/backups`: record an on-demand backup `PENDING`; the next tick (within
/// a minute) starts it. 409 unless the cluster is READY, or while another backup of it is
/// pending or running (its id is named, so a retried request finds it).
pub(super) async fn create_backup(ctx: &ApiContext, id: &str) -> Result<ApiResponse, Error> {
    if ClusterId::parse(id).is_none() {
        return Err(not_found(id));
    }
    let cluster = ctx
        .store
        .get_cluster(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if cluster.phase != Phase::Ready {
        return Err(Error::Conflict(format!(
            "cluster {id} is {}, not READY; a backup is taken of a READY cluster, try again once it is",
            cluster.phase.as_str()
        )));
    }
    let history = ctx.store.backup_history(id).await?;
    if let Some(busy) = history
        .records
        .iter()
        .find(|r| matches!(r.state, BackupState::Pending | BackupState::Running))
    {
        return Err(Error::Conflict(format!(
            "backup {} of cluster {id} is {}; follow it with GET /clusters/{id}/backups and ask again once it ended",
            busy.id,
            busy.state.as_str()
        )));
    }
    let now = epoch_seconds();
    let record = BackupRecord::pending(
        id,
        BackupId::new(now, crate::aws::store::unique_u32()),
        BackupTrigger::Api,
        now,
    );
    if !ctx.store.create_backup(&record).await? {
        return Err(Error::Conflict(
            "backup id collision; retry the request".into(),
        ));
    }
    let mut response = ApiResponse::json(202, serde_json::to_value(&record).unwrap_or_default());
    response
        .headers
        .push(("location", format!("/clusters/{id}/backups")));
    Ok(response)
}

/// Resolve a create's `restore` against the source cluster's backups in this stack's table
/// (so the plan names one backup and one time, and every run of the workflow restores the
/// same thing).
pub(super) async fn resolve_restore(
    ctx: &ApiContext,
    request: &RestoreRequest,
) -> Result<RestorePlan, Error> {
    let source = ClusterId::parse(&request.from_cluster).ok_or_else(|| {
        Error::validation(
            "restore.fromCluster",
            format!("{:?} is not a cluster id", request.from_cluster),
            "send the id of the cluster whose backups to restore, e.g. c-0123456789ab",
        )
    })?;
    let history = ctx.store.backup_history(source.as_str()).await?;
    if history.records.is_empty() {
        return Err(Error::validation(
            "restore.fromCluster",
            format!("no backups of cluster {source} in this stack"),
            "name a cluster of this stack that has a COMPLETED backup (GET /clusters/{id}/backups)",
        ));
    }
    let (backup, stop_at) = match &request.target {
        RestoreTarget::Latest => {
            let latest = latest_completed(&history.records).ok_or_else(|| {
                Error::validation(
                    "restore.fromCluster",
                    format!("cluster {source} has no COMPLETED backup"),
                    "wait for its backup to complete (GET /clusters/{id}/backups)",
                )
            })?;
            (latest.id.clone(), None)
        }
        RestoreTarget::Backup(id) => (backup_by_id(&history.records, id)?.id.clone(), None),
        RestoreTarget::PointInTime(at) => {
            let backup = backup_for_point_in_time(
                source.as_str(),
                &history.records,
                history
                    .archive
                    .as_ref()
                    .and_then(|a| a.restorable_until.as_deref()),
                *at,
                epoch_seconds(),
            )?;
            (backup.id.clone(), Some(*at))
        }
    };
    Ok(RestorePlan::new(source.as_str(), backup, stop_at))
}

/// What `GET /clusters/{id}` adds about backups: `restorableUntil` and the latest backup.
pub(super) fn backup_summary(history: &BackupHistory) -> (Value, Value) {
    let latest = history
        .records
        .iter()
        .max_by(|a, b| a.id.cmp(&b.id))
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .unwrap_or(Value::Null);
    (restorable_until(history), latest)
}

fn restorable_until(history: &BackupHistory) -> Value {
    history
        .archive
        .as_ref()
        .and_then(|a| a.restorable_until.clone())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// `?purgeBackups=true|false` of `DELETE /clusters/{id}`; any other parameter is a 400.
pub(super) fn purge_requested(query: &[(String, String)]) -> Result<bool, Error> {
    let mut purge = false;
    for (key, value) in query {
        match (key.as_str(), value.as_str()) {
            ("purgeBackups", "true") => purge = true,
            ("purgeBackups", "false") => purge = false,
            ("purgeBackups", other) => {
                return Err(Error::validation(
                    "purgeBackups",
                    format!("{other:?} is not true or false"),
                    "send purgeBackups=true to delete the cluster's backups too, or leave it out to keep them",
                ));
            }
            (other, _) => {
                return Err(Error::validation(
                    other,
                    "is not a query parameter of DELETE /clusters/{id}",
                    "use only purgeBackups=true|false",
                ));
            }
        }
    }
    Ok(purge)
}

/// Delete the cluster's backup objects, then their records; how many objects and records
/// went.
pub(super) async fn purge_backups(ctx: &ApiContext, id: &str) -> Result<(usize, usize), Error> {
    let bucket = ctx.backups.as_ref().ok_or(Error::MissingConfig {
        name: crate::aws::backups::BACKUP_BUCKET,
        hint: "template.yaml sets it for every function; redeploy the stack",
    })?;
    let objects = bucket.purge_cluster(id).await?;
    let records = ctx.store.purge_backups(id).await?;
    Ok((objects, records))
}
