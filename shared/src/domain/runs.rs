//! Runs of `ClusterWorkflow`: why one runs, what every task of it receives, and the
//! execution name that makes a repeated start a no-op.

use serde::{Deserialize, Serialize};

/// Why a `ClusterWorkflow` execution runs. Part of the execution name, so one reason per
/// (cluster, generation) starts at most one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunReason {
    Create,
    Heal,
    Scale,
    Delete,
    Sweep,
}

/// The input of every `ClusterWorkflow` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowInput {
    pub cluster_id: String,
    pub generation: u64,
    pub reason: RunReason,
}

/// Execution names are unique per state machine for 90 days: naming a run after its
/// (cluster, generation, reason) makes a repeated start a no-op instead of a second run.
pub fn execution_name(input: &WorkflowInput) -> String {
    let reason = match input.reason {
        RunReason::Create => "create",
        RunReason::Heal => "heal",
        RunReason::Scale => "scale",
        RunReason::Delete => "delete",
        RunReason::Sweep => "sweep",
    };
    format!("{}-g{}-{reason}", input.cluster_id, input.generation)
}
