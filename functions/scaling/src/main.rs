//! `scaling`: CloudWatch "Alarm State Change" events of the clusters' web alarms
//! (`ha-<cluster>-web-high` / `-web-low`): one step out or in, within the cluster's bounds
//! and outside the cooldown; and the recheck schedule's Scheduled Events: one more step for
//! every alarm still in ALARM once its cluster is READY and out of its cooldown (see
//! `orchestrator::tasks::scaling`). Foreign or malformed events are logged and dropped
//! (EventBridge would only retry them).

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::aws::alarms::AlarmStates;
use orchestrator::aws::store::ClusterStore;
use orchestrator::aws::workflow::Workflow;
use orchestrator::config::{StoreSettings, WorkflowSettings};
use orchestrator::domain::scaling::DEFAULT_COOLDOWN_SECONDS;
use orchestrator::startup::require;
use orchestrator::tasks::events::ScalingTrigger;
use orchestrator::tasks::scaling::Scaler;

/// `SCALE_COOLDOWN_SECONDS` (template.yaml sets it), else the default.
fn cooldown() -> Result<i64, orchestrator::Error> {
    match std::env::var("SCALE_COOLDOWN_SECONDS") {
        Err(_) => Ok(DEFAULT_COOLDOWN_SECONDS),
        Ok(value) => value
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| orchestrator::Error::InvalidConfig {
                name: "SCALE_COOLDOWN_SECONDS",
                value,
                reason: "not a whole number of seconds".into(),
            }),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    let store = require("read configuration", StoreSettings::from_env())?;
    let workflow = require("read configuration", WorkflowSettings::from_env())?;
    let cooldown_seconds = require("read configuration", cooldown())?;
    let sdk = require(
        "configure the AWS SDK",
        orchestrator::aws::sdk::load_sdk_config().await,
    )?;
    let scaler = Scaler {
        store: ClusterStore::new(aws_sdk_dynamodb::Client::new(&sdk), store.table_name),
        workflow: Workflow::new(aws_sdk_sfn::Client::new(&sdk), workflow.state_machine_arn),
        alarms: AlarmStates::new(aws_sdk_cloudwatch::Client::new(&sdk)),
        cooldown_seconds,
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
