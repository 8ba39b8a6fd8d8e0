//! The orchestrator's library: everything the Lambda binaries do, behind plain async
//! functions that take their adapters. The binaries in `functions/` only build those
//! adapters at cold start ([`startup::ColdStart`]) and turn a trigger's event into a call
//! here.
//!
//! # Three layers, no import cycle
//! - [`domain`]: pure types and decisions (a cluster and its nodes, the spec, the plan of
//!   instances, the database report, the next database step ([`domain::db_step`]), run
//!   reasons, command documents, alarm names, backups and their manifests
//!   ([`domain::backup`])). Imports nothing of the crate but [`error`].
//! - [`aws`]: one adapter per AWS service (the DynamoDB store, EC2 fleet, ELBv2 targets,
//!   CloudWatch alarms and metrics, SSM commands, Secrets Manager, Step Functions, the S3
//!   backup bucket). SDK types stop here.
//! - [`tasks`]: one module per trigger, below.
//!
//! `scripts/module-graph.py` (run by `make lint`) fails on a cycle or a layer that points up.
//!
//! # Where each trigger goes
//! | Trigger | Function | Entry point |
//! |---|---|---|
//! | API Gateway HTTP API (`/clusters...`) | `functions/api` | [`tasks::api::handle`] |
//! | `ClusterWorkflow` provision tasks (launch, register, wait, tear down) | `functions/provision` | [`tasks::provision::Provisioner`] `::run` |
//! | `ClusterWorkflow` database tasks (`.waitForTaskToken`: send an SSM command) | `functions/replication` | [`tasks::replication::Replicator`] `::run` |
//! | EventBridge "EC2 Command Invocation Status-change Notification" (a command finished: answer the waiting task, or judge a survey) | `functions/replication` | [`tasks::replication::Replicator`] `::resolve` |
//! | EventBridge "EC2 Instance State-change Notification" (a node lost: heal) | `functions/instance-events` | [`tasks::healing::Healer`] `::on_state_change` |
//! | EventBridge schedule (sweep: lost instances, target health, membership surveys) | `functions/instance-events` | [`tasks::healing::Healer`] `::sweep`, [`tasks::survey`] |
//! | EventBridge "CloudWatch Alarm State Change" (scale the web tier) | `functions/scaling` | [`tasks::scaling::Scaler`] `::on_alarm` |
//! | EventBridge schedule (an alarm still in ALARM steps again) | `functions/scaling` | [`tasks::scaling::Scaler`] `::recheck` |
//! | EventBridge schedule (backup tick: resolve running backups, start requested and due ones, ship binary logs, prune past retention) | `functions/backups` | [`tasks::backups::Backups`] `::tick` |
//! | ALB Lambda target (`/_health`, `/_status`, the maintenance page) | `functions/alb-target` | [`tasks::status`] |
//!
//! Each trigger's typed event and its routing are in [`tasks::events`]. Every reaction that
//! changes a cluster bumps its generation and starts a `ClusterWorkflow` execution named
//! after it (see [`domain::runs`]), so a repeated event starts nothing twice.

#![deny(missing_docs)]

pub mod aws;
pub mod concurrency;
pub mod config;
pub mod domain;
pub mod error;
pub mod startup;
pub mod tasks;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;

pub use error::{Error, Result};
