//! One module per trigger: what the orchestrator does when an event arrives. Each task
//! takes its adapters from [`crate::aws`] and its decisions from [`crate::domain`].

pub mod api;
pub mod backups;
pub mod events;
pub mod healing;
pub mod provision;
pub mod replication;
pub mod runs;
pub mod scaling;
pub mod status;
pub mod survey;
