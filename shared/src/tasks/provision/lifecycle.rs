//! A run's two ends: `begin` takes the cluster's lease for the run (its token fences every
//! later write), `record-failure` ends a failed run with the error the API shows.

use super::{Provisioner, Task, TaskOutcome, TaskRequest, fence_of};
use crate::aws::store::Fence;
use crate::domain::cluster::{Cluster, LastError, Phase, now_rfc3339};
use crate::domain::runs::RunReason;
use crate::domain::runs::run_phase;
use crate::error::Result;

impl Provisioner {
    pub(super) async fn begin(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
        let holder = request
            .execution
            .clone()
            .unwrap_or_else(|| crate::domain::runs::execution_name(&request.ctx));
        let token = self
            .store
            .acquire_lease(&cluster.id, &holder, request.ctx.generation)
            .await?;
        // The run's reason, fixed at its start, says what it does; the phase is only what
        // others may read (and a racing run may have written it).
        let teardown = request.ctx.reason == RunReason::Delete;
        let phase = run_phase(request.ctx.reason);
        let fence = Fence {
            token,
            generation: request.ctx.generation,
        };
        self.store
            .record_step(&cluster.id, fence, phase, Task::Begin.step())
            .await?;
        self.record(
            cluster,
            "RunStarted",
            &format!("{:?} run {holder}, lease token {token}", request.ctx.reason),
        )
        .await?;
        Ok(TaskOutcome {
            lease_token: Some(token),
            mode: Some(if teardown { "teardown" } else { "converge" }),
            ready: true,
            detail: format!("lease token {token}"),
            ..TaskOutcome::default()
        })
    }

    pub(super) async fn record_failure(
        &self,
        cluster: &Cluster,
        request: &TaskRequest,
    ) -> Result<TaskOutcome> {
        let caught = request.error.clone().unwrap_or_default();
        // Cause is the failed Lambda's {"errorType","errorMessage"} as a string.
        let message = serde_json::from_str::<serde_json::Value>(&caught.cause)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("{}: {}", caught.error, caught.cause));
        let error = LastError {
            phase: cluster.step.clone().unwrap_or_else(|| "unknown".into()),
            message: message.chars().take(2000).collect(),
            at: now_rfc3339(),
        };
        let fence = fence_of(request)?;
        self.store
            .finish_run(&cluster.id, fence, Phase::Failed, Some(&error))
            .await?;
        self.record(
            cluster,
            "Failed",
            &format!("in {}: {}", error.phase, error.message),
        )
        .await?;
        Ok(TaskOutcome {
            ready: true,
            detail: "FAILED".into(),
            ..TaskOutcome::default()
        })
    }
}
