//! `instance-events`: EC2 "Instance State-change Notification" events for cluster nodes
//! (a lost node starts a healing run; see `orchestrator::tasks::healing`) and the scheduled sweep,
//! which finds lost instances whose events never arrived. Foreign or malformed events are logged and dropped:
//! failing them would only make EventBridge retry an event that can never succeed.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::startup::{ColdStart, require};
use orchestrator::tasks::events::HealingTrigger;
use orchestrator::tasks::healing::{Healer, HealthPolicy};
use orchestrator::tasks::runs::Runs;
use orchestrator::tasks::survey::MembershipSurvey;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let start = ColdStart::begin().await?;
    let store = start.store()?;
    let runs = Runs::new(store.clone(), start.workflow()?);
    let healer = Healer {
        survey: MembershipSurvey {
            store: store.clone(),
            commands: start.commands()?,
            runs: runs.clone(),
        },
        runs,
        store,
        instances: start.instances(),
        metrics: start.target_health_metrics()?,
        targets: start.web_targets()?,
        policy: require("read configuration", HealthPolicy::from_env())?,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let healer = &healer;
        async move { handle(healer, event).await }
    }))
    .await
}

#[tracing::instrument(skip_all, fields(request_id = %event.context.request_id))]
async fn handle(healer: &Healer, event: LambdaEvent<serde_json::Value>) -> Result<(), Diagnostic> {
    match HealingTrigger::from_json(event.payload) {
        Ok(HealingTrigger::InstanceStateChange(change)) => {
            match Box::pin(healer.on_state_change(&change)).await {
                Ok(reaction) => {
                    tracing::info!(instance_id = %change.detail.instance_id, ?reaction, "instance state change handled");
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(instance_id = %change.detail.instance_id, error = %error, "instance state change failed; EventBridge retries it");
                    Err(error.into())
                }
            }
        }
        Ok(HealingTrigger::Sweep(tick)) => match Box::pin(healer.sweep()).await {
            Ok(report) => {
                tracing::info!(time = ?tick.time, clusters = report.clusters_checked, describe_calls = report.describe_calls, metric_calls = report.metric_calls, describes_spared = report.describes_spared, heals = ?report.heals_started, held = ?report.replacements_held, routing = ?report.routing_changes, surveys = report.surveys_sent.len(), "sweep done");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(error = %error, "sweep failed; the next tick sweeps again");
                Err(error.into())
            }
        },
        Err(error) => {
            tracing::warn!(error = %error, "event dropped");
            Ok(())
        }
    }
}
