//! `scaling`: CloudWatch "Alarm State Change" events of the clusters' web alarms
//! (`ha-<cluster>-web-high` / `-web-low`): one step out or in, within the cluster's bounds
//! and outside the cooldown; and the recheck schedule's Scheduled Events: one more step for
//! every alarm still in ALARM once its cluster is READY and out of its cooldown (see
//! `orchestrator::tasks::scaling`). Foreign or malformed events are logged and dropped
//! (EventBridge would only retry them).

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::seconds_or;
use orchestrator::domain::scaling::DEFAULT_COOLDOWN_SECONDS;
use orchestrator::startup::{ColdStart, require};
use orchestrator::tasks::events::ScalingTrigger;
use orchestrator::tasks::runs::Runs;
use orchestrator::tasks::scaling::Scaler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let start = ColdStart::begin().await?;
    let store = start.store()?;
    let scaler = Scaler {
        runs: Runs::new(store.clone(), start.workflow()?),
        store,
        alarms: start.alarm_states(),
        // template.yaml sets it; the default otherwise.
        cooldown_seconds: require(
            "read configuration",
            seconds_or("SCALE_COOLDOWN_SECONDS", DEFAULT_COOLDOWN_SECONDS, |name| {
                std::env::var(name).ok()
            }),
        )?,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let scaler = &scaler;
        async move { handle(scaler, event).await }
    }))
    .await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(scaler: &Scaler, event: LambdaEvent<serde_json::Value>) -> Result<(), Diagnostic> {
    match ScalingTrigger::from_json(event.payload) {
        Ok(ScalingTrigger::Alarm(alarm)) => match Box::pin(scaler.on_alarm(&alarm)).await {
            Ok(reaction) => {
                tracing::info!(alarm = %alarm.detail.alarm_name, ?reaction, "alarm state change handled");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(alarm = %alarm.detail.alarm_name, error = %error, "alarm state change failed; EventBridge retries it");
                Err(error.into())
            }
        },
        Ok(ScalingTrigger::Recheck(_)) => match Box::pin(scaler.recheck()).await {
            Ok(recheck) => {
                tracing::info!(in_alarm = recheck.alarms.len(), "alarms in ALARM rechecked");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(error = %error, "recheck of alarms in ALARM failed; the next tick tries again");
                Err(error.into())
            }
        },
        Err(error) => {
            tracing::warn!(error = %error, "event dropped");
            Ok(())
        }
    }
}
