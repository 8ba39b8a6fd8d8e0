//! Step Functions adapter: start `ClusterWorkflow` runs, at most one per
//! (cluster, generation, reason).

use crate::domain::runs::WorkflowInput;
use crate::domain::runs::execution_name;
use crate::error::{Error, Result, from_sdk, sdk_error_code};

/// Starts runs of the stack's `ClusterWorkflow` state machine.
#[derive(Debug, Clone)]
pub struct Workflow {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

impl Workflow {
    /// The state machine named by `state_machine_arn` (`STATE_MACHINE_ARN`).
    pub fn new(client: aws_sdk_sfn::Client, state_machine_arn: impl Into<String>) -> Self {
        Self {
            client,
            state_machine_arn: state_machine_arn.into(),
        }
    }

    /// Start the run for `input`; `Ok(false)` when that run was already started.
    pub async fn start(&self, input: &WorkflowInput) -> Result<bool> {
        let name = execution_name(input);
        let payload =
            serde_json::to_string(input).map_err(|e| Error::encode("workflow input", e))?;
        match self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(&name)
            .input(payload)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(execution = %name, "workflow started");
                Ok(true)
            }
            Err(e) if sdk_error_code(&e) == Some("ExecutionAlreadyExists") => {
                tracing::info!(execution = %name, "workflow already started");
                Ok(false)
            }
            Err(e) => Err(from_sdk("sfn", "StartExecution", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runs::RunReason;
    use crate::mocked_client;
    use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
    use aws_smithy_mocks::mock;

    fn input() -> WorkflowInput {
        WorkflowInput {
            cluster_id: "c-0123456789ab".into(),
            generation: 2,
            reason: RunReason::Delete,
        }
    }

    #[test]
    fn execution_names_are_deterministic_and_valid() {
        let name = execution_name(&input());
        assert_eq!(name, "c-0123456789ab-g2-delete");
        assert!(name.len() <= 80);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[tokio::test]
    async fn a_repeated_start_is_a_no_op() {
        let started = mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(|r| r.name() == Some("c-0123456789ab-g2-delete"))
            .then_output(|| {
                StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:us-east-1:1:execution:w:c")
                    .start_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            });
        let exists = mock!(aws_sdk_sfn::Client::start_execution).then_error(|| {
            StartExecutionError::ExecutionAlreadyExists(
                aws_sdk_sfn::types::error::ExecutionAlreadyExists::builder()
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("ExecutionAlreadyExists")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = mocked_client!(aws_sdk_sfn, [&started, &exists]);
        let workflow = Workflow::new(client, "arn:aws:states:us-east-1:1:stateMachine:w");
        assert!(workflow.start(&input()).await.unwrap());
        assert!(!workflow.start(&input()).await.unwrap());
    }
}
