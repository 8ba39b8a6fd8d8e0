//! The orchestrator's library: everything the Lambda binaries do, behind plain async
//! functions that take a context of clients and settings. The binaries in `functions/`
//! only turn a trigger's event into a call here.

pub mod alarms;
pub mod api;
pub mod aws;
pub mod commands;
pub mod concurrency;
pub mod config;
pub mod error;
pub mod events;
pub mod faults;
pub mod fleet;
pub mod healing;
pub mod health_metrics;
pub mod metering;
pub mod model;
pub mod plan;
pub mod provision;
pub mod replication;
pub mod report;
pub mod scaling;
pub mod secrets;
pub mod spec;
pub mod startup;
pub mod status;
pub mod store;
pub mod survey;
pub mod targets;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod userdata;
pub mod workflow;

pub use error::{Error, Result};
