//! `provision`: ClusterWorkflow tasks for the instance tiers (launch, wait running, register
//! web targets, tear down). Until the provisioning issue lands, a task is refused with a
//! terminal error so the workflow fails visibly instead of pretending a cluster exists.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::StoreSettings;
use orchestrator::events::WorkflowInput;
use orchestrator::startup::require;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    require("read configuration", StoreSettings::from_env())?;
    run(service_fn(task)).await
}

#[tracing::instrument(skip_all, fields(cluster_id = %event.payload.cluster_id, reason = ?event.payload.reason))]
async fn task(event: LambdaEvent<WorkflowInput>) -> Result<serde_json::Value, Diagnostic> {
    tracing::warn!("provisioning tasks are not implemented in this release");
    Err(orchestrator::Error::validation(
        "reason",
        format!("{:?} runs are not supported yet", event.payload.reason),
        "upgrade the stack to a release that provisions clusters",
    )
    .into())
}
