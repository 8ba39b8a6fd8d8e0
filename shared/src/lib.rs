//! The orchestrator's library: everything the Lambda binaries do, behind plain async
//! functions that take a context of clients and settings. The binaries in `functions/`
//! only turn a trigger's event into a call here.

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
