//! The pure core: what a cluster is, what was asked for, what to do next. Nothing here
//! calls AWS or imports anything of the crate but [`crate::error`]; every function is
//! tested without a client.

pub mod backup;
pub mod cluster;
pub mod commands;
pub mod db_step;
pub mod plan;
pub mod report;
pub mod runs;
pub mod scaling;
pub mod spec;
pub mod userdata;
