//! `replication`: ClusterWorkflow tasks for the database tier (install MySQL, create the
//! InnoDB Cluster, join nodes, verify) over SSM, and the SSM command status events that
//! resume a waiting workflow. Until the replication issue lands, a task is refused with a
//! terminal error so the workflow fails visibly instead of pretending a database exists;
//! status events are logged.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::StoreSettings;
use orchestrator::events::ReplicationTrigger;
use orchestrator::startup::require;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    require("read configuration", StoreSettings::from_env())?;
    run(service_fn(handle)).await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Diagnostic> {
    match ReplicationTrigger::from_json(event.payload) {
        Ok(ReplicationTrigger::Task(input)) => {
            tracing::warn!(cluster_id = %input.cluster_id, "database tasks are not implemented in this release");
            Err(orchestrator::Error::validation(
                "reason",
                format!(
                    "{:?} runs of the database tier are not supported yet",
                    input.reason
                ),
                "upgrade the stack to a release that sets up the database tier",
            )
            .into())
        }
        Ok(ReplicationTrigger::CommandStatus(status)) => {
            tracing::info!(
                command_id = %status.detail.command_id,
                instance_id = %status.detail.instance_id,
                status = ?status.detail.status,
                "command status change received"
            );
            Ok(serde_json::Value::Null)
        }
        Err(error) => {
            tracing::warn!(error = %error, "event dropped");
            Ok(serde_json::Value::Null)
        }
    }
}
