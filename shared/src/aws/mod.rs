//! Adapters: one per AWS service the orchestrator calls. SDK types stop here; what the
//! adapters take and return are the [`crate::domain`] types.

pub mod alarms;
pub mod backups;
pub mod commands;
pub mod faults;
pub mod fleet;
pub mod health_metrics;
pub mod metering;
pub mod sdk;
pub mod secrets;
pub mod store;
pub mod targets;
pub mod task_tokens;
pub mod workflow;
