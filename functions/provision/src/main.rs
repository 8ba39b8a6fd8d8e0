//! `provision`: the instance tasks of ClusterWorkflow (launch, wait running, register web
//! targets, wait healthy, finish; and for teardown deregister, terminate, wait, purge).
//! The tasks live in `orchestrator::tasks::provision`; this binary builds the clients once.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::startup::ColdStart;
use orchestrator::tasks::provision::{Provisioner, TaskOutcome, TaskRequest};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let start = ColdStart::begin().await?;
    let provisioner = Provisioner {
        store: start.store()?,
        fleet: start.fleet()?,
        targets: start.web_targets()?,
        alarms: start.scaling_alarms()?,
        secrets: start.secrets(),
        command_output: start.command_output()?,
    };
    run(service_fn(|event: LambdaEvent<TaskRequest>| {
        let provisioner = &provisioner;
        async move { task(provisioner, event.payload).await }
    }))
    .await
}

async fn task(provisioner: &Provisioner, request: TaskRequest) -> Result<TaskOutcome, Diagnostic> {
    let task = request.task;
    match provisioner.run(request).await {
        Ok(outcome) => {
            tracing::info!(?task, ready = outcome.ready, detail = %outcome.detail, "task done");
            Ok(outcome)
        }
        Err(error) => {
            tracing::warn!(?task, error = %error, error_type = error.error_type(), "task failed");
            Err(error.into())
        }
    }
}
