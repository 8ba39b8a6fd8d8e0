//! `instance-events`: EC2 "Instance State-change Notification" events for cluster nodes and
//! the scheduled health sweep. This release records what arrived; healing and the sweep come
//! with the healing issue. Foreign or malformed events are logged and dropped: failing them
//! would only make EventBridge retry an event that can never succeed.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::StoreSettings;
use orchestrator::events::HealingTrigger;
use orchestrator::startup::require;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    require("read configuration", StoreSettings::from_env())?;
    run(service_fn(handle)).await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(event: LambdaEvent<serde_json::Value>) -> Result<(), Diagnostic> {
    match HealingTrigger::from_json(event.payload) {
        Ok(HealingTrigger::InstanceStateChange(change)) => tracing::info!(
            instance_id = %change.detail.instance_id,
            state = ?change.detail.state,
            lost = change.detail.state.is_lost(),
            "instance state change received"
        ),
        Ok(HealingTrigger::Sweep(tick)) => {
            tracing::info!(time = ?tick.time, "sweep tick received")
        }
        Err(error) => tracing::warn!(error = %error, "event dropped"),
    }
    Ok(())
}
