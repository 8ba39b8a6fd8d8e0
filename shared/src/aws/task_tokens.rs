//! Step Functions task tokens: answer a `.waitForTaskToken` state with `SendTaskSuccess` or
//! `SendTaskFailure`. The replication tasks hand a command to SSM and return; the command's
//! status event answers the token here, once the command has finished on every instance.

use crate::error::{Result, from_sdk, sdk_error_code};

/// Error codes of `SendTaskSuccess` / `SendTaskFailure` that mean the workflow no longer
/// waits on the token (Step Functions API reference, SendTaskSuccess "Errors"):
/// `TaskTimedOut` "the task token has either expired or the task associated with the token
/// has already been closed" (the state timed out and its retry waits on a new token, or the
/// run ended), `InvalidToken` and `TaskDoesNotExist` (no such task any more). Answering
/// such a token is no error: nothing waits for the answer. Every other code is.
const NOT_WAITING: [&str; 3] = ["TaskTimedOut", "InvalidToken", "TaskDoesNotExist"];

/// Answers the workflow's waiting states; why a task token adapter exists at all: the
/// replication tasks must not name the Step Functions SDK.
#[derive(Debug, Clone)]
pub struct TaskTokens {
    client: aws_sdk_sfn::Client,
}

impl TaskTokens {
    /// Wrap a Step Functions client.
    pub fn new(client: aws_sdk_sfn::Client) -> Self {
        Self { client }
    }

    /// `SendTaskSuccess` with `output` (a JSON document) as the state's result. Returns
    /// whether the workflow still waited on `token` (false: see [`NOT_WAITING`]).
    pub async fn succeed(&self, token: &str, output: &str) -> Result<bool> {
        let sent = self
            .client
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match sdk_error_code(&e) {
                Some(code) if NOT_WAITING.contains(&code) => Ok(not_waiting(code)),
                _ => Err(from_sdk("states", "SendTaskSuccess", e)),
            },
        }
    }

    /// `SendTaskFailure` with `error_type` as the state's `Error` (what its `Retry` and
    /// `Catch` match on) and `message` in the `Cause`. Returns whether the workflow still
    /// waited on `token`.
    pub async fn fail(&self, token: &str, error_type: &str, message: &str) -> Result<bool> {
        // The same shape as a failed Lambda's Cause, which RecordFailure reads.
        let cause = serde_json::json!({"errorType": error_type, "errorMessage": message});
        let sent = self
            .client
            .send_task_failure()
            .task_token(token)
            .error(error_type)
            .cause(cause.to_string())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match sdk_error_code(&e) {
                Some(code) if NOT_WAITING.contains(&code) => Ok(not_waiting(code)),
                _ => Err(from_sdk("states", "SendTaskFailure", e)),
            },
        }
    }
}

fn not_waiting(code: &str) -> bool {
    tracing::info!(%code, "the workflow no longer waits on this token");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client;
    use aws_smithy_mocks::{RuleMode, mock};

    fn sfn_error(code: &'static str) -> aws_smithy_types::error::ErrorMetadata {
        aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message("answered by the test")
            .build()
    }

    #[tokio::test]
    async fn a_success_carries_the_token_and_the_output() {
        let rule = mock!(aws_sdk_sfn::Client::send_task_success)
            .match_requests(|r| {
                r.task_token() == Some("token-1") && r.output() == Some(r#"{"done":true}"#)
            })
            .then_output(|| {
                aws_sdk_sfn::operation::send_task_success::SendTaskSuccessOutput::builder().build()
            });
        let tokens = TaskTokens::new(mocked_client!(aws_sdk_sfn, [&rule]));
        assert!(tokens.succeed("token-1", r#"{"done":true}"#).await.unwrap());
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_failure_carries_the_error_type_and_a_lambda_shaped_cause() {
        let rule = mock!(aws_sdk_sfn::Client::send_task_failure)
            .match_requests(|r| {
                let cause: serde_json::Value =
                    serde_json::from_str(r.cause().unwrap_or_default()).unwrap_or_default();
                r.task_token() == Some("token-1")
                    && r.error() == Some("Orchestrator.CommandFailed")
                    && cause
                        == serde_json::json!({
                            "errorType": "Orchestrator.CommandFailed",
                            "errorMessage": "DbInstall Failed"
                        })
            })
            .then_output(|| {
                aws_sdk_sfn::operation::send_task_failure::SendTaskFailureOutput::builder().build()
            });
        let tokens = TaskTokens::new(mocked_client!(aws_sdk_sfn, [&rule]));
        assert!(
            tokens
                .fail("token-1", "Orchestrator.CommandFailed", "DbInstall Failed")
                .await
                .unwrap()
        );
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_token_nothing_waits_on_is_no_error_any_other_refusal_is() {
        use aws_sdk_sfn::operation::send_task_failure::SendTaskFailureError;
        use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
        for code in NOT_WAITING {
            let success = mock!(aws_sdk_sfn::Client::send_task_success)
                .then_error(move || SendTaskSuccessError::generic(sfn_error(code)));
            let failure = mock!(aws_sdk_sfn::Client::send_task_failure)
                .then_error(move || SendTaskFailureError::generic(sfn_error(code)));
            let tokens = TaskTokens::new(mocked_client!(
                aws_sdk_sfn,
                RuleMode::MatchAny,
                [&success, &failure]
            ));
            assert!(!tokens.succeed("old", "{}").await.unwrap(), "{code}");
            assert!(!tokens.fail("old", "E", "m").await.unwrap(), "{code}");
        }
        let success = mock!(aws_sdk_sfn::Client::send_task_success)
            .then_error(|| SendTaskSuccessError::generic(sfn_error("InvalidOutput")));
        let failure = mock!(aws_sdk_sfn::Client::send_task_failure)
            .then_error(|| SendTaskFailureError::generic(sfn_error("AccessDeniedException")));
        let tokens = TaskTokens::new(mocked_client!(
            aws_sdk_sfn,
            RuleMode::MatchAny,
            [&success, &failure]
        ));
        let refused = tokens.succeed("token-1", "{}").await.unwrap_err();
        assert!(refused.to_string().contains("InvalidOutput"), "{refused}");
        let refused = tokens.fail("token-1", "E", "m").await.unwrap_err();
        assert!(
            refused.to_string().contains("AccessDeniedException"),
            "{refused}"
        );
    }
}
