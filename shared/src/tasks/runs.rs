//! Starting `ClusterWorkflow` runs: the one path from "this cluster must change" to a run.
//!
//! Every request that changes what a cluster should be (a delete, a heal, a scale, a
//! converge after a survey) bumps the cluster's generation in the store, so the new run
//! fences out any run still going, then notes in the action log why the run starts, and
//! starts the execution named after (cluster, generation, reason), which makes a repeated
//! start a no-op ([`crate::domain::runs::execution_name`]). [`Runs`] does those steps in
//! that order for every trigger (the API, the alarm reaction, the heal on an instance
//! event, the sweep, the membership survey) and logs each start with `cluster_id`,
//! `generation`, `reason` and why.
//!
//! The order matters: the bump comes first (a crash after it leaves a recorded request the
//! next trigger or the operator's resend starts again; see [`Runs::start`]), the action log
//! entry before the start (the run may read the log), and the start last.

use crate::aws::store::{ClusterStore, ScaleTarget, Scaled};
use crate::aws::workflow::Workflow;
use crate::domain::runs::{RunReason, WorkflowInput};
use crate::error::Result;

/// Why a node is replaced, which decides how the store records the request and what the
/// action log calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealCause {
    /// Its instance stopped or terminated (an EC2 event, or the sweep found it gone).
    Lost,
    /// Its web target stayed unhealthy beside a healthy peer (the sweep's decision): the
    /// instance is alive and is retired once its successor serves.
    Unhealthy,
    /// An operator asked for it (`POST /clusters/{id}/nodes/{instanceId}/replace`): alive,
    /// retired once its successor serves.
    Operator,
}

impl HealCause {
    /// The action log's name for the request.
    fn action(self) -> &'static str {
        match self {
            Self::Lost => "InstanceLost",
            Self::Unhealthy => "TargetUnhealthy",
            Self::Operator => "ReplaceRequested",
        }
    }

    /// Whether the instance is alive and to be retired after its successor (see
    /// [`ClusterStore::request_heal`]).
    fn replaces_live_instance(self) -> bool {
        !matches!(self, Self::Lost)
    }
}

/// The store and the state machine together: bumps a cluster's generation, logs why and
/// starts the run, so no trigger does those steps by hand.
#[derive(Debug, Clone)]
pub struct Runs {
    store: ClusterStore,
    workflow: Workflow,
}

impl Runs {
    /// Built once per cold start from the function's store and state machine.
    pub fn new(store: ClusterStore, workflow: Workflow) -> Self {
        Self { store, workflow }
    }

    /// Start the run of a generation already recorded (a create's generation 1, or a
    /// request whose first answer failed after the write): no bump and no action log entry.
    /// `Ok(false)` when that run was already started.
    pub async fn start(
        &self,
        cluster_id: &str,
        generation: u64,
        reason: RunReason,
        why: &str,
    ) -> Result<bool> {
        tracing::info!(
            cluster_id,
            generation,
            ?reason,
            why,
            "run of a recorded generation"
        );
        self.workflow
            .start(&WorkflowInput {
                cluster_id: cluster_id.to_string(),
                generation,
                reason,
            })
            .await
    }

    /// Delete a cluster: the next generation, phase DELETING, and its teardown run.
    /// Returns the generation. A repeated delete starts a fresh teardown (see
    /// [`ClusterStore::request_delete`]).
    pub async fn delete(&self, cluster_id: &str) -> Result<u64> {
        let generation = self.store.request_delete(cluster_id).await?;
        self.start(
            cluster_id,
            generation,
            RunReason::Delete,
            "deleted by the API",
        )
        .await?;
        Ok(generation)
    }

    /// Change the web count and start the scaling run; `by` says who asked (`"by the API"`,
    /// `"by alarm …"`) in the action log entry `web <from> -> <to> <by>`. Errors of the
    /// request (no such cluster, [`crate::Error::ClusterDeleting`]) come back before
    /// anything started; `Unchanged` starts nothing.
    pub async fn scale(
        &self,
        cluster_id: &str,
        target: ScaleTarget,
        cooldown_seconds: Option<i64>,
        by: &str,
    ) -> Result<Scaled> {
        let scaled = self
            .store
            .request_scale(cluster_id, target, cooldown_seconds)
            .await?;
        if let Scaled::Started {
            generation,
            from,
            to,
        } = &scaled
        {
            self.start_explained(
                cluster_id,
                *generation,
                RunReason::Scale,
                "ScaleRequested",
                &format!("web {from} -> {to} {by}"),
            )
            .await?;
        }
        Ok(scaled)
    }

    /// Replace the node of `instance_id` in a healing run; `detail` says which node and
    /// why in the action log. `None` when that instance is already being healed or the
    /// cluster is being deleted: nothing started.
    pub async fn heal(
        &self,
        cluster_id: &str,
        instance_id: &str,
        cause: HealCause,
        detail: &str,
    ) -> Result<Option<u64>> {
        let Some(generation) = self
            .store
            .request_heal(cluster_id, instance_id, cause.replaces_live_instance())
            .await?
        else {
            return Ok(None);
        };
        self.start_explained(
            cluster_id,
            generation,
            RunReason::Heal,
            cause.action(),
            detail,
        )
        .await?;
        Ok(Some(generation))
    }

    /// Converge a READY cluster whose members left its group (the membership survey's
    /// verdict), only if it is still at the `surveyed` generation; `None` when it has moved
    /// on since (a run since then has looked at the group).
    pub async fn converge(
        &self,
        cluster_id: &str,
        surveyed: u64,
        detail: &str,
    ) -> Result<Option<u64>> {
        let Some(generation) = self.store.request_converge(cluster_id, surveyed).await? else {
            return Ok(None);
        };
        self.start_explained(
            cluster_id,
            generation,
            RunReason::Sweep,
            "MemberOutOfGroup",
            detail,
        )
        .await?;
        Ok(Some(generation))
    }

    /// Note in the action log why the run of a generation just bumped starts
    /// (`<why>; <healing|scaling|…> run, generation N`), then start it.
    async fn start_explained(
        &self,
        cluster_id: &str,
        generation: u64,
        reason: RunReason,
        action: &str,
        why: &str,
    ) -> Result<()> {
        let run = match reason {
            RunReason::Create => "create",
            RunReason::Heal => "healing",
            RunReason::Scale => "scaling",
            RunReason::Delete => "delete",
            RunReason::Sweep => "sweep",
        };
        self.store
            .append_action(
                cluster_id,
                generation,
                action,
                &format!("{why}; {run} run, generation {generation}"),
            )
            .await?;
        tracing::info!(
            cluster_id,
            generation,
            ?reason,
            why,
            action,
            "run requested"
        );
        self.workflow
            .start(&WorkflowInput {
                cluster_id: cluster_id.to_string(),
                generation,
                reason,
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    const ID: &str = "c-0123456789ab";

    /// StartExecution of the run named `name`, answered as started.
    fn started(name: &'static str) -> Rule {
        mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(move |r| r.name() == Some(name))
            .then_output(|| {
                StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:us-east-1:1:execution:w:x")
                    .start_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            })
    }

    /// The action log's PutItem, matched only when its entry names `action` and `detail`.
    fn logged(action: &'static str, detail: &'static str) -> Rule {
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                r.item()
                    .and_then(|i| i.get("data"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|d| d.contains(action) && d.contains(detail))
            })
            .then_output(|| PutItemOutput::builder().build())
    }

    /// Runs whose DynamoDB answers the request with `bump` and the action log with `logged`.
    fn runs(bump: &Rule, logged: &Rule, sfn: &Rule) -> Runs {
        Runs::new(
            ClusterStore::new(
                mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [bump, logged]),
                "table",
            ),
            Workflow::new(
                mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [sfn]),
                "arn:aws:states:us-east-1:1:stateMachine:w",
            ),
        )
    }

    /// The bump, the log entry naming the cause, then the run of the bumped generation.
    #[tokio::test]
    async fn a_heal_bumps_logs_why_and_starts_that_generation() {
        let bump = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.update_expression()
                    .is_some_and(|e| e.contains("replace_instances"))
            })
            .then_output(|| {
                UpdateItemOutput::builder()
                    .attributes("generation", AttributeValue::N("4".into()))
                    .build()
            });
        let logged = logged(
            "TargetUnhealthy",
            "i-1 (web-1) is unhealthy; healing run, generation 4",
        );
        let start = started("c-0123456789ab-g4-heal");
        let runs = runs(&bump, &logged, &start);
        let generation = runs
            .heal(ID, "i-1", HealCause::Unhealthy, "i-1 (web-1) is unhealthy")
            .await
            .unwrap();
        assert_eq!(generation, Some(4));
        assert_eq!(bump.num_calls(), 1);
        assert_eq!(logged.num_calls(), 1);
        assert_eq!(start.num_calls(), 1);
    }

    /// A loss already being healed: the conditional bump fails, nothing is logged or started.
    #[tokio::test]
    async fn a_heal_already_under_way_starts_nothing() {
        let refused = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.update_expression()
                    .is_some_and(|e| !e.contains("replace_instances"))
            })
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            });
        let logged = mock!(aws_sdk_dynamodb::Client::put_item)
            .then_output(|| PutItemOutput::builder().build());
        let start = started("c-0123456789ab-g4-heal");
        let runs = runs(&refused, &logged, &start);
        let generation = runs
            .heal(ID, "i-1", HealCause::Lost, "i-1 (web-1) is terminated")
            .await
            .unwrap();
        assert_eq!(generation, None);
        assert_eq!(refused.num_calls(), 1);
        assert_eq!(logged.num_calls(), 0);
        assert_eq!(start.num_calls(), 0);
    }

    /// The survey's converge: only from the generation surveyed, logged as a member out of
    /// its group, and run as a `sweep` run of the next generation.
    #[tokio::test]
    async fn a_converge_starts_a_sweep_run_only_from_the_surveyed_generation() {
        let bump = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.expression_attribute_values()
                    .and_then(|v| v.get(":generation"))
                    .and_then(|v| v.as_n().ok())
                    .is_some_and(|g| g == "5")
            })
            .then_output(|| {
                UpdateItemOutput::builder()
                    .attributes("generation", AttributeValue::N("6".into()))
                    .build()
            });
        let logged = logged(
            "MemberOutOfGroup",
            "db-1 reports OFFLINE; sweep run, generation 6",
        );
        let start = started("c-0123456789ab-g6-sweep");
        let runs = runs(&bump, &logged, &start);
        assert_eq!(
            runs.converge(ID, 5, "db-1 reports OFFLINE").await.unwrap(),
            Some(6)
        );
        assert_eq!(bump.num_calls(), 1);
        assert_eq!(logged.num_calls(), 1);
        assert_eq!(start.num_calls(), 1);
    }
}
