//! `backups`: the backup tick, on an EventBridge schedule (template.yaml's
//! `BackupTickSchedule`): resolve running backups, start requested and due ones, ship
//! binary logs, prune past retention (see `orchestrator::tasks::backups`). Any other event
//! is logged and dropped (EventBridge would only retry it).

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::startup::ColdStart;
use orchestrator::tasks::backups::Backups;
use orchestrator::tasks::events::{SCHEDULED, ScheduleEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let start = ColdStart::begin().await?;
    let backups = start.backups()?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let backups = &backups;
        async move { handle(backups, event).await }
    }))
    .await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(
    backups: &Backups,
    event: LambdaEvent<serde_json::Value>,
) -> Result<(), Diagnostic> {
    match serde_json::from_value::<ScheduleEvent>(event.payload) {
        Ok(tick) if (tick.source.as_str(), tick.detail_type.as_str()) == SCHEDULED => {}
        Ok(other) => {
            tracing::warn!(source = ?other.source, detail_type = ?other.detail_type, "not a scheduled event; dropped");
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(error = %error, "malformed event dropped");
            return Ok(());
        }
    }
    let now = orchestrator::domain::cluster::epoch_seconds();
    match Box::pin(backups.tick(now)).await {
        Ok(report) => {
            tracing::info!(clusters = report.clusters, events = ?report.events, "backup tick done");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(error = %error, "backup tick failed; the next tick tries again");
            Err(error.into())
        }
    }
}
