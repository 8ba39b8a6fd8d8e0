//! `scaling`: CloudWatch "Alarm State Change" events on the stack's ALB alarms. This release
//! records what arrived; resizing comes with the scaling issue. Foreign or malformed events
//! are logged and dropped (EventBridge would only retry them).

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::StoreSettings;
use orchestrator::events::alarm_from_json;
use orchestrator::startup::require;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    require("read configuration", StoreSettings::from_env())?;
    run(service_fn(handle)).await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(event: LambdaEvent<serde_json::Value>) -> Result<(), Diagnostic> {
    match alarm_from_json(event.payload) {
        Ok(alarm) => tracing::info!(
            alarm = %alarm.detail.alarm_name,
            from = ?alarm.detail.previous_state.value,
            to = ?alarm.detail.state.value,
            "alarm state change received"
        ),
        Err(error) => tracing::warn!(error = %error, "event dropped"),
    }
    Ok(())
}
