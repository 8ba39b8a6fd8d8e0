//! Runs of `ClusterWorkflow`: why one runs, what every task of it receives, and the
//! execution name that makes a repeated start a no-op.

use serde::{Deserialize, Serialize};

use crate::domain::cluster::Phase;

/// Why a `ClusterWorkflow` execution runs. Part of the execution name, so one reason per
/// (cluster, generation) starts at most one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunReason {
    /// A new cluster: launch and bootstrap everything.
    Create,
    /// A node was lost or is to be replaced.
    Heal,
    /// The web count was changed (by the API or an alarm).
    Scale,
    /// Tear the cluster down.
    Delete,
    /// The membership survey found members out of the group: converge again.
    Sweep,
}

/// The input of every `ClusterWorkflow` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowInput {
    /// The cluster the run converges.
    pub cluster_id: String,
    /// The generation that started the run; a newer one supersedes it (fencing).
    pub generation: u64,
    /// Why it runs; sets the phase the cluster is in while it runs.
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

/// The phase a run shows while it works.
pub fn run_phase(reason: RunReason) -> Phase {
    match reason {
        RunReason::Create => Phase::Provisioning,
        RunReason::Heal | RunReason::Sweep => Phase::Healing,
        RunReason::Scale => Phase::Scaling,
        RunReason::Delete => Phase::Deleting,
    }
}
