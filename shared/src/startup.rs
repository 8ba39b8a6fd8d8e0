//! Cold start, shared by every function binary: telemetry on, the SDK configuration loaded
//! once, and each adapter built from its settings in the environment. A step that cannot
//! be done stops the function at start with a message naming the step and what to change
//! ([`require`]); nothing is left to fail on the first event instead.

use aws_config::SdkConfig;

use crate::aws::alarms::{AlarmSettings, AlarmStates, ScalingAlarms};
use crate::aws::commands::{CommandOutput, CommandSettings, Commands};
use crate::aws::fleet::{Fleet, FleetSettings, Instances, StackNetwork};
use crate::aws::health_metrics::TargetHealthMetrics;
use crate::aws::secrets::ClusterSecrets;
use crate::aws::store::ClusterStore;
use crate::aws::targets::{TargetSettings, WebTargets};
use crate::aws::workflow::Workflow;
use crate::config::{StoreSettings, WorkflowSettings};

/// What a start-up step returns: the runtime's error, so `main` can `?` it.
pub type Started<T> = Result<T, lambda_runtime::Error>;

const READ_CONFIGURATION: &str = "read configuration";

/// Unwrap a start-up step or log why the function cannot start and hand the error to the
/// runtime, which exits the process: Lambda then reports `Runtime.ExitError` with this
/// message in the function's log, instead of failing later on every event.
pub fn require<T>(step: &str, result: crate::Result<T>) -> Started<T> {
    result.map_err(|error| {
        tracing::error!(step, error = %error, "cannot start");
        format!("cannot start: {step}: {error}").into()
    })
}

/// Builds a function's adapters at cold start. Creating a client makes no network call, so
/// each adapter costs microseconds; a function builds the ones it uses, once, and keeps them
/// for every invocation.
#[derive(Debug, Clone)]
pub struct ColdStart {
    sdk: SdkConfig,
}

impl ColdStart {
    /// Turn on telemetry and load the SDK configuration (faults and metering included, see
    /// [`crate::aws::sdk::load_sdk_config`]).
    pub async fn begin() -> Started<Self> {
        crate::telemetry::init();
        let sdk = require(
            "configure the AWS SDK",
            crate::aws::sdk::load_sdk_config().await,
        )?;
        Ok(Self { sdk })
    }

    /// The cluster table (`TABLE_NAME`).
    pub fn store(&self) -> Started<ClusterStore> {
        let settings = require(READ_CONFIGURATION, StoreSettings::from_env())?;
        Ok(ClusterStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            settings.table_name,
        ))
    }

    /// The cluster state machine (`STATE_MACHINE_ARN`).
    pub fn workflow(&self) -> Started<Workflow> {
        let settings = require(READ_CONFIGURATION, WorkflowSettings::from_env())?;
        Ok(Workflow::new(
            aws_sdk_sfn::Client::new(&self.sdk),
            settings.state_machine_arn,
        ))
    }

    /// SSM Run Command with the stack's documents and output bucket.
    pub fn commands(&self) -> Started<Commands> {
        let settings = require(READ_CONFIGURATION, CommandSettings::from_env())?;
        Ok(Commands::new(
            aws_sdk_ssm::Client::new(&self.sdk),
            crate::aws::sdk::s3_client(&self.sdk),
            settings,
        ))
    }

    /// The command-output bucket alone (the provision task reads web-router output).
    pub fn command_output(&self) -> Started<CommandOutput> {
        require(
            READ_CONFIGURATION,
            CommandOutput::from_env(crate::aws::sdk::s3_client(&self.sdk)),
        )
    }

    /// EC2 instances of the stack (launch settings from the environment).
    pub fn fleet(&self) -> Started<Fleet> {
        let settings = require(READ_CONFIGURATION, FleetSettings::from_env())?;
        Ok(Fleet::new(
            aws_sdk_ec2::Client::new(&self.sdk),
            aws_sdk_ssm::Client::new(&self.sdk),
            settings,
        ))
    }

    /// The stack's instances, read-only (the sweep, the reboot's confirmation).
    pub fn instances(&self) -> Instances {
        Instances::new(aws_sdk_ec2::Client::new(&self.sdk))
    }

    /// The workflow's task tokens (the replication tasks answer waiting states with them).
    pub fn task_tokens(&self) -> crate::aws::task_tokens::TaskTokens {
        crate::aws::task_tokens::TaskTokens::new(aws_sdk_sfn::Client::new(&self.sdk))
    }

    /// The stack's VPC (`VPC_ID`), which a create's subnets must belong to.
    pub fn stack_network(&self) -> Started<StackNetwork> {
        let vpc_id = require(READ_CONFIGURATION, crate::config::required("VPC_ID"))?;
        Ok(StackNetwork::new(
            aws_sdk_ec2::Client::new(&self.sdk),
            vpc_id,
        ))
    }

    /// The load balancer's web target groups and listener rules.
    pub fn web_targets(&self) -> Started<WebTargets> {
        let settings = require(READ_CONFIGURATION, TargetSettings::from_env())?;
        Ok(WebTargets::new(
            aws_sdk_elasticloadbalancingv2::Client::new(&self.sdk),
            settings,
        ))
    }

    /// CloudWatch's view of target health on the stack's listener.
    pub fn target_health_metrics(&self) -> Started<TargetHealthMetrics> {
        let settings = require(READ_CONFIGURATION, TargetSettings::from_env())?;
        Ok(TargetHealthMetrics::new(
            aws_sdk_cloudwatch::Client::new(&self.sdk),
            &settings.listener_arn,
        ))
    }

    /// The clusters' scaling alarms (thresholds from the environment).
    pub fn scaling_alarms(&self) -> Started<ScalingAlarms> {
        let settings = require(READ_CONFIGURATION, AlarmSettings::from_env())?;
        Ok(ScalingAlarms::new(
            aws_sdk_cloudwatch::Client::new(&self.sdk),
            settings,
        ))
    }

    /// Which cluster alarms are in ALARM (the scaling recheck).
    pub fn alarm_states(&self) -> AlarmStates {
        AlarmStates::new(aws_sdk_cloudwatch::Client::new(&self.sdk))
    }

    /// The stack's backup bucket (`BACKUP_BUCKET`), when set: a restore fails with what to
    /// set when it is not, and nothing else needs it in this function.
    pub fn backup_bucket(&self) -> Option<String> {
        std::env::var("BACKUP_BUCKET")
            .ok()
            .map(|bucket| bucket.trim().to_string())
            .filter(|bucket| !bucket.is_empty())
    }

    /// The backup tick: the store, the commands, the backup bucket (`BACKUP_BUCKET`), the
    /// archive interval (`BINLOG_ARCHIVE_SECONDS`, at least 60) and one attempt's bound
    /// (`BACKUP_TIMEOUT_SECONDS`).
    pub fn backups(&self) -> Started<crate::tasks::backups::Backups> {
        use crate::tasks::backups::{DEFAULT_ARCHIVE_SECONDS, DEFAULT_ATTEMPT_TIMEOUT_SECONDS};
        let lookup = |name: &str| std::env::var(name).ok();
        let seconds = |name, default| {
            require(
                READ_CONFIGURATION,
                crate::config::seconds_or(name, default, lookup),
            )
        };
        Ok(crate::tasks::backups::Backups {
            store: self.store()?,
            commands: self.commands()?,
            bucket: self.backups_bucket()?,
            archive_seconds: seconds("BINLOG_ARCHIVE_SECONDS", DEFAULT_ARCHIVE_SECONDS)?.max(60),
            attempt_timeout_seconds: seconds(
                "BACKUP_TIMEOUT_SECONDS",
                DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
            )?
            .max(600),
        })
    }

    /// The backup bucket's adapter when `BACKUP_BUCKET` is set (the API: only a purge
    /// needs it, and says what to set when it is not).
    pub fn backups_bucket_if_set(&self) -> Option<crate::aws::backups::BackupBucket> {
        self.backup_bucket().map(|bucket| {
            crate::aws::backups::BackupBucket::new(crate::aws::sdk::s3_client(&self.sdk), bucket)
        })
    }

    /// The backup bucket's adapter (`BACKUP_BUCKET`, required).
    pub fn backups_bucket(&self) -> Started<crate::aws::backups::BackupBucket> {
        require(
            READ_CONFIGURATION,
            crate::aws::backups::BackupBucket::from_env(crate::aws::sdk::s3_client(&self.sdk)),
        )
    }

    /// The clusters' admin secrets.
    pub fn secrets(&self) -> ClusterSecrets {
        ClusterSecrets::new(aws_sdk_secretsmanager::Client::new(&self.sdk))
    }

    /// The SDK configuration, for a client no adapter wraps yet.
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }
}
