//! `replication`: the database tasks of ClusterWorkflow (install MySQL, inspect, create /
//! join / reboot the InnoDB Cluster, bootstrap MySQL Router) over SSM Run Command, and the
//! SSM command status events that answer the waiting workflow. The tasks live in
//! `orchestrator::tasks::replication`; this binary builds the clients once and routes the trigger.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::startup::ColdStart;
use orchestrator::tasks::events::ReplicationTrigger;
use orchestrator::tasks::replication::Replicator;
use orchestrator::tasks::survey::MembershipSurvey;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let start = ColdStart::begin().await?;
    let store = start.store()?;
    let commands = start.commands()?;
    let replicator = Replicator {
        survey: MembershipSurvey {
            store: store.clone(),
            commands: commands.clone(),
            runs: orchestrator::tasks::runs::Runs::new(store.clone(), start.workflow()?),
        },
        store,
        commands,
        task_tokens: start.task_tokens(),
        instances: start.instances(),
        backup_bucket: start.backup_bucket(),
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let replicator = &replicator;
        async move { handle(replicator, event).await }
    }))
    .await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(
    replicator: &Replicator,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Diagnostic> {
    match ReplicationTrigger::from_json(event.payload) {
        Ok(ReplicationTrigger::Task(request)) => {
            let task = request.task;
            // Boxed: the task's future is deep enough to exceed the compiler's layout limit inline.
            match Box::pin(replicator.run(*request)).await {
                // The workflow waits for the command's outcome, not for this answer.
                Ok(()) => {
                    tracing::info!(?task, "task handed to SSM");
                    Ok(serde_json::json!({"accepted": true}))
                }
                Err(error) => {
                    tracing::warn!(?task, error = %error, error_type = error.error_type(), "task failed");
                    Err(error.into())
                }
            }
        }
        Ok(ReplicationTrigger::CommandStatus(status)) => {
            let detail = &status.detail;
            tracing::info!(
                command_id = %detail.command_id,
                instance_id = %detail.instance_id,
                status = ?detail.status,
                "command status change received"
            );
            if !detail.status.is_terminal() {
                return Ok(serde_json::Value::Null);
            }
            // A failed resolution is retried by EventBridge's async invoke; the fallback poll
            // of the waiting state covers an event lost for good.
            let answered =
                Box::pin(replicator.resolve(&detail.command_id, Some(&detail.instance_id)))
                    .await
                    .map_err(|error| {
                        tracing::warn!(error = %error, "could not answer the waiting task");
                        Diagnostic::from(error)
                    })?;
            Ok(serde_json::json!({"answered": answered}))
        }
        Err(error) => {
            tracing::warn!(error = %error, "event dropped");
            Ok(serde_json::Value::Null)
        }
    }
}
