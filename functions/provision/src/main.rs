//! `provision`: the instance tasks of ClusterWorkflow (launch, wait running, register web
//! targets, wait healthy, finish; and for teardown deregister, terminate, wait, purge).
//! The tasks live in `orchestrator::tasks::provision`; this binary builds the clients once.

use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::aws::alarms::{AlarmSettings, ScalingAlarms};
use orchestrator::aws::commands::CommandOutput;
use orchestrator::aws::fleet::{Fleet, FleetSettings};
use orchestrator::aws::secrets::ClusterSecrets;
use orchestrator::aws::store::ClusterStore;
use orchestrator::aws::targets::{TargetSettings, WebTargets};
use orchestrator::config::StoreSettings;
use orchestrator::startup::require;
use orchestrator::tasks::provision::{Provisioner, TaskOutcome, TaskRequest};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    let store = require("read configuration", StoreSettings::from_env())?;
    let fleet = require("read configuration", FleetSettings::from_env())?;
    let targets = require("read configuration", TargetSettings::from_env())?;
    let alarms = require("read configuration", AlarmSettings::from_env())?;
    let sdk = require(
        "configure the AWS SDK",
        orchestrator::aws::sdk::load_sdk_config().await,
    )?;
    let command_output = require(
        "read configuration",
        CommandOutput::from_env(orchestrator::aws::sdk::s3_client(&sdk)),
    )?;
    let provisioner = Provisioner {
        store: ClusterStore::new(aws_sdk_dynamodb::Client::new(&sdk), store.table_name),
        fleet: Fleet::new(
            aws_sdk_ec2::Client::new(&sdk),
            aws_sdk_ssm::Client::new(&sdk),
            fleet,
        ),
        targets: WebTargets::new(aws_sdk_elasticloadbalancingv2::Client::new(&sdk), targets),
        alarms: ScalingAlarms::new(aws_sdk_cloudwatch::Client::new(&sdk), alarms),
        secrets: ClusterSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        command_output,
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
