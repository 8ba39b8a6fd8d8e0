//! The handlers of `/clusters`, `/clusters/{id}` and
//! `/clusters/{id}/nodes/{instanceId}/replace`: each validates its input before any call,
//! then reads the store or records the request and starts its run through [`Runs`].
//!
//! [`Runs`]: crate::tasks::runs::Runs

use serde_json::{Value, json};

use super::{ApiContext, ApiRequest, ApiResponse, DEFAULT_PAGE_SIZE};
use crate::aws::store::{Created, MAX_PAGE_SIZE, ScaleTarget, Scaled, unique_u32};
use crate::config::ClusterLimits;
use crate::domain::cluster::ClusterId;
use crate::domain::cluster::{Cluster, NodeState, Phase, Tier};
use crate::domain::runs::RunReason;
use crate::domain::spec::CreateRequest;
use crate::error::Error;
use crate::tasks::runs::HealCause;

pub(super) async fn list_clusters(
    ctx: &ApiContext,
    request: &ApiRequest,
) -> Result<ApiResponse, Error> {
    let mut limit = DEFAULT_PAGE_SIZE;
    let mut next = None;
    for (key, value) in &request.query {
        match key.as_str() {
            "limit" => limit = parse_limit(value)?,
            "next" => next = Some(value.as_str()),
            other => {
                return Err(Error::validation(
                    other,
                    "is not a query parameter of GET /clusters",
                    "use only `limit` (1-100) and `next` (the cursor of the previous page)",
                ));
            }
        }
    }
    let page = ctx.store.list_clusters(limit, next).await?;
    Ok(ApiResponse::json(
        200,
        json!({ "clusters": page.items, "next": page.next }),
    ))
}

/// `Idempotency-Key`: 1-128 visible ASCII characters.
fn idempotency_key(request: &ApiRequest) -> Result<Option<&str>, Error> {
    let Some(key) = request.header("idempotency-key") else {
        return Ok(None);
    };
    let ok = (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(key))
    } else {
        Err(Error::validation(
            "Idempotency-Key",
            "is not 1 to 128 visible ASCII characters",
            "send a UUID or another unique token of at most 128 characters",
        ))
    }
}

/// Cluster ids are `c-` and 12 hex digits. With an idempotency key the id derives from it
/// (FNV-1a, stable across deployments), so a retried create names the same cluster.
pub(super) fn new_cluster_id(idempotency_key: Option<&str>) -> String {
    let bits = match idempotency_key {
        Some(key) => {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in b"idempotency:".iter().chain(key.as_bytes()) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            hash
        }
        None => (u64::from(unique_u32()) << 32) | u64::from(unique_u32()),
    };
    ClusterId::from_bits(bits).into()
}

pub(super) fn valid_cluster_id(id: &str) -> bool {
    ClusterId::parse(id).is_some()
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "cluster",
        id: id.to_string(),
    }
}

pub(super) async fn create_cluster(
    ctx: &ApiContext,
    request: &ApiRequest,
) -> Result<ApiResponse, Error> {
    let key = idempotency_key(request)?;
    let create = CreateRequest::from_body(request.body.as_deref().unwrap_or_default())?;
    let mut spec = create.spec;
    if let Some(restore) = &create.restore {
        spec.restore = Some(super::backups::resolve_restore(ctx, restore).await?);
    }
    let id = new_cluster_id(key);
    ctx.network.check_subnets(&spec.subnets).await?;
    ensure_room_for(ctx, &id).await?;
    match ctx.store.create_cluster(&id, &spec).await? {
        Created::New => {}
        // A retried restore may pin a newer backup than the first try did: the cluster
        // recorded first stands.
        Created::Existing(existing)
            if key.is_some()
                && existing.restore.is_some() == spec.restore.is_some()
                && crate::domain::spec::ClusterSpec {
                    restore: existing.restore.clone(),
                    ..spec.clone()
                } == existing => {}
        Created::Existing(_) if key.is_some() => {
            return Err(Error::Conflict(
                "this Idempotency-Key was already used for a different request; send a new key for a new cluster".into(),
            ));
        }
        // A random id collided (astronomically unlikely): the caller may simply retry.
        Created::Existing(_) => {
            return Err(Error::Conflict(
                "cluster id collision; retry the request".into(),
            ));
        }
        Created::NameTaken(owner) => {
            return Err(Error::Conflict(format!(
                "a cluster named {:?} already exists ({owner}); choose another name or delete that cluster first",
                spec.name
            )));
        }
    }
    // Starting is idempotent by execution name, so a retried create restarts nothing.
    ctx.runs
        .start(&id, 1, RunReason::Create, "created by the API")
        .await?;
    let mut body = json!({ "id": id, "name": spec.name, "phase": "PENDING", "statusUrl": format!("/clusters/{id}") });
    if let Some(plan) = &spec.restore {
        body["restore"] = serde_json::to_value(plan).unwrap_or_default();
    }
    let mut response = ApiResponse::json(202, body);
    response
        .headers
        .push(("location", format!("/clusters/{id}")));
    Ok(response)
}

/// Refuse a create the stack's load balancer could not take (see [`ClusterLimits`])
/// before anything is recorded, instead of failing half-way at CreateTargetGroup. A retry
/// of a create that was accepted (same Idempotency-Key) is not a new cluster and passes.
/// Two creates racing for the last place can both pass; the second then fails at
/// CreateTargetGroup with `TooManyTargetGroups`, and its run tears down what it made.
async fn ensure_room_for(ctx: &ApiContext, id: &str) -> Result<(), Error> {
    let live = ctx.store.count_live_clusters().await?;
    if live < ctx.limits.max_clusters || ctx.store.get_cluster(id).await?.is_some() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "this stack holds {live} clusters, its limit of {max}: each cluster takes a target group and a listener rule on the stack's load balancer, which holds at most 100 target groups (AWS does not raise that quota); delete a cluster you no longer need, or deploy another stack for more clusters{lowered}",
        max = ctx.limits.max_clusters,
        lowered = if ctx.limits.max_clusters < ClusterLimits::LOAD_BALANCER_CAPACITY {
            format!(
                " (the stack's MaxClusters parameter sets {}; up to {} fit)",
                ctx.limits.max_clusters,
                ClusterLimits::LOAD_BALANCER_CAPACITY
            )
        } else {
            String::new()
        },
    )))
}

pub(super) async fn get_cluster(ctx: &ApiContext, id: &str) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let mut cluster = ctx
        .store
        .get_cluster(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    cluster.actions = ctx.store.recent_actions(id).await?;
    let history = ctx.store.backup_history(id).await?;
    let (restorable_until, latest) = super::backups::backup_summary(&history);
    let mut view = cluster_view(&cluster);
    view["restorableUntil"] = restorable_until;
    view["latestBackup"] = latest;
    Ok(ApiResponse::json(200, view))
}

/// `DELETE /clusters/{id}`: tear the cluster down; its backups are kept (restorable, and
/// pruned by retention) unless `?purgeBackups=true`, which deletes them now, also of a
/// cluster already deleted.
pub(super) async fn delete_cluster(
    ctx: &ApiContext,
    id: &str,
    request: &ApiRequest,
) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let purge = super::backups::purge_requested(&request.query)?;
    let deleted = ctx.runs.delete(id).await;
    let mut body = json!({ "id": id, "phase": "DELETING", "statusUrl": format!("/clusters/{id}") });
    let (status, unknown) = match deleted {
        Ok(_) => (202, false),
        // Only the backups are left to delete.
        Err(Error::Gone(_)) if purge => (200, false),
        Err(Error::NotFound { .. }) if purge => (200, true),
        Err(error) => return Err(error),
    };
    if purge {
        let (objects, records) = super::backups::purge_backups(ctx, id).await?;
        if unknown && objects == 0 && records == 0 {
            return Err(not_found(id));
        }
        if status == 200 {
            body["phase"] = json!("DELETED");
        }
        body["backupObjectsPurged"] = json!(objects);
    }
    Ok(ApiResponse::json(status, body))
}

/// `PATCH /clusters/{id}` `{"web": {"count": N}}`: scale the web tier by hand, within the
/// cluster's bounds (no cooldown: a person decided).
pub(super) async fn patch_cluster(
    ctx: &ApiContext,
    id: &str,
    request: &ApiRequest,
) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let count = crate::domain::spec::ClusterSpec::patched_web_count(
        request.body.as_deref().unwrap_or_default(),
    )?;
    match ctx
        .runs
        .scale(id, ScaleTarget::Count(count), None, "by the API")
        .await?
    {
        Scaled::Unchanged(why) => {
            // A resend of a scale that was recorded but whose run may not have started (the
            // first answer was an error after the write): make sure the run is under way.
            // Starting is idempotent by execution name, so a run already going is untouched.
            if let Some(cluster) = ctx.store.get_cluster(id).await?
                && cluster.phase == Phase::Scaling
            {
                ctx.runs
                    .start(
                        id,
                        cluster.generation,
                        RunReason::Scale,
                        "a resent scale whose run may not have started",
                    )
                    .await?;
            }
            Ok(ApiResponse::json(
                200,
                json!({ "id": id, "unchanged": why }),
            ))
        }
        Scaled::Started {
            generation,
            from,
            to,
        } => Ok(ApiResponse::json(
            202,
            json!({
                "id": id,
                "phase": "SCALING",
                "generation": generation,
                "web": { "from": from, "to": to },
                "statusUrl": format!("/clusters/{id}"),
            }),
        )),
    }
}

/// An operator's replacement of one node: a healing run launches its successor in the same
/// slot, registers it or adds it to the group, then retires the old instance.
pub(super) async fn replace_node(
    ctx: &ApiContext,
    id: &str,
    instance: &str,
) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let cluster = ctx
        .store
        .get_cluster(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if matches!(cluster.phase, Phase::Deleting | Phase::Deleted) {
        return Err(Error::Conflict(format!(
            "cluster {id} is {}; nothing of it is replaced any more",
            cluster.phase.as_str()
        )));
    }
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.instance_id.as_deref() == Some(instance))
        .ok_or_else(|| Error::NotFound {
            kind: "node",
            id: format!("{instance} of cluster {id} (see GET /clusters/{id} for its nodes)"),
        })?;
    if node.role.as_deref() == Some("PRIMARY") {
        return Err(Error::Conflict(format!(
            "{instance} ({}) is the PRIMARY of the group; make another member primary first \
             (MySQL Shell: cluster.setPrimaryInstance), or stop the instance and let the group \
             fail over, then replace it",
            node.slot
        )));
    }
    let detail = format!("{instance} ({}) by the API", node.slot);
    let Some(generation) = ctx
        .runs
        .heal(id, instance, HealCause::Operator, &detail)
        .await?
    else {
        return Err(Error::Conflict(format!(
            "{instance} is already being replaced or healed; follow GET /clusters/{id}"
        )));
    };
    Ok(ApiResponse::json(
        202,
        json!({
            "id": id,
            "replacing": instance,
            "slot": node.slot,
            "generation": generation,
            "phase": "HEALING",
            "statusUrl": format!("/clusters/{id}"),
        }),
    ))
}

/// The cluster as `GET /clusters/{id}` shows it: the record plus conditions derived from
/// the nodes, so a reader sees at a glance what is still missing.
pub fn cluster_view(cluster: &Cluster) -> Value {
    let mut view = serde_json::to_value(cluster).unwrap_or_else(|_| json!({}));
    let count = |tier: Tier, pred: &dyn Fn(&crate::domain::cluster::Node) -> bool| {
        cluster
            .nodes
            .iter()
            .filter(|n| n.tier == tier && pred(n))
            .count()
    };
    let running = |n: &crate::domain::cluster::Node| {
        matches!(
            n.state,
            NodeState::Running | NodeState::Registered | NodeState::Healthy | NodeState::Unhealthy
        )
    };
    let web_running = count(Tier::Web, &running);
    let db_running = count(Tier::Db, &running);
    let web_healthy = count(Tier::Web, &|n| {
        n.target_health.as_deref() == Some("healthy")
    });
    view["conditions"] = json!({
        "webInstancesRunning": format!("{web_running}/{}", cluster.spec.web.count),
        "dbInstancesRunning": format!("{db_running}/{}", cluster.spec.db.count),
        "webTargetsHealthy": format!("{web_healthy}/{}", cluster.spec.web.count),
    });
    view["primary"] = cluster
        .nodes
        .iter()
        .find(|n| n.role.as_deref() == Some("PRIMARY"))
        .and_then(|n| n.instance_id.clone())
        .map(Value::String)
        .unwrap_or(Value::Null);
    view
}

fn parse_limit(value: &str) -> Result<u32, Error> {
    let fix = format!("use a whole number from 1 to {MAX_PAGE_SIZE}");
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Ok(n) => Err(Error::validation(
            "limit",
            format!("{n} is out of range"),
            fix,
        )),
        Err(_) => Err(Error::validation(
            "limit",
            format!("{value:?} is not a number"),
            fix,
        )),
    }
}
