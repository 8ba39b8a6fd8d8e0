//! `alb-target`: the Lambda target behind the stack's ALB: health checks, each cluster's
//! status page (JSON or HTML, by host name) and the maintenance page the listener falls back
//! to. Rendering lives in `orchestrator::tasks::status`; this binary looks the cluster up.

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::aws::store::ClusterStore;
use orchestrator::domain::cluster::Cluster;
use orchestrator::startup::ColdStart;
use orchestrator::tasks::status::{self, Wanted};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let store = ColdStart::begin().await?.store()?;
    run(service_fn(|event: LambdaEvent<AlbTargetGroupRequest>| {
        let store = &store;
        async move { handle(store, event.payload).await }
    }))
    .await
}

/// The cluster a name stands for, with its recent actions; a failed lookup is logged and
/// answered as "no such cluster" rather than an error page from the load balancer.
async fn lookup(store: &ClusterStore, name: Option<&str>) -> Option<Cluster> {
    let name = name?;
    let found = async {
        let Some(id) = store.cluster_id_by_name(name).await? else {
            return Ok(None);
        };
        let Some(mut cluster) = store.get_cluster(&id).await? else {
            return Ok(None);
        };
        cluster.actions = store.recent_actions(&id).await?;
        Ok::<_, orchestrator::Error>(Some(cluster))
    };
    match found.await {
        Ok(cluster) => cluster,
        Err(error) => {
            tracing::warn!(cluster = name, error = %error, "cluster lookup failed");
            None
        }
    }
}

#[tracing::instrument(skip_all, fields(path = request.path.as_deref().unwrap_or("/")))]
async fn handle(
    store: &ClusterStore,
    request: AlbTargetGroupRequest,
) -> Result<AlbTargetGroupResponse, Diagnostic> {
    Ok(match status::wanted(&request) {
        Wanted::Health => status::health(),
        Wanted::Status { cluster_name, html } => {
            let cluster = lookup(store, cluster_name.as_deref()).await;
            status::status(cluster_name.as_deref(), cluster.as_ref(), html)
        }
        Wanted::Maintenance { cluster_name } => {
            let cluster = lookup(store, cluster_name.as_deref()).await;
            status::maintenance(cluster_name.as_deref(), cluster.as_ref())
        }
    })
}
