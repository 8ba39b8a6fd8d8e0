//! The one error type of the orchestrator library.
//!
//! Every variant maps to a stable `errorType` string (see [`Error::error_type`]). The state
//! machine's `Retry` and `Catch` blocks match on those strings, so they are part of the
//! contract between the Rust code and `statemachine/*.asl.json`: rename one only together
//! with the definitions that match on it.

/// The crate's result type: fails with [`Error`] unless another error is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `errorType` of failures worth retrying (throttling, 5xx, timeouts, lost races).
pub const ERROR_TYPE_RETRYABLE: &str = "Orchestrator.Retryable";
/// `errorType` of failures that will not go away by retrying (bad input, missing config).
pub const ERROR_TYPE_TERMINAL: &str = "Orchestrator.Terminal";
/// A command failed on an instance in a way that may pass on a second try (a package
/// mirror down, a timeout): the state machine waits and enters the step again, which sends
/// a new command; the task turns it terminal after a few failures.
pub const ERROR_TYPE_COMMAND_FAILED: &str = "Orchestrator.CommandFailed";
/// `errorType` of a run that a newer run replaced: the workflow ends quietly.
pub const ERROR_TYPE_SUPERSEDED: &str = "Orchestrator.Superseded";

/// Every failure of the library; its variant decides retry or stop ([`Error::error_type`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required environment variable is absent: the deployment is wrong, not the request.
    #[error("missing configuration: environment variable {name} is not set; {hint}")]
    MissingConfig {
        /// The variable.
        name: &'static str,
        /// Where it is set, so the operator knows what to fix.
        hint: &'static str,
    },

    /// An environment variable is present but unusable.
    #[error("invalid configuration: {name}={value:?}: {reason}")]
    InvalidConfig {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
        /// What is wrong with it and what is expected instead.
        reason: String,
    },

    /// The caller sent something we will not act on; `fix` tells them what to change.
    #[error("invalid {field}: {problem}; {fix}")]
    Validation {
        /// The request field at fault (`web.count`).
        field: String,
        /// What is wrong with it.
        problem: String,
        /// What to send instead.
        fix: String,
    },

    /// The resource does not exist: a 404 for the API.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked for (`cluster`, ...).
        kind: &'static str,
        /// The id asked for.
        id: String,
    },

    /// Another writer changed the record first (optimistic concurrency) or holds the lease.
    #[error("conflict: {0}")]
    Conflict(String),

    /// This run's lease token or generation is no longer current: a newer run owns the
    /// cluster, so this one stops without touching anything (fencing).
    #[error("superseded: {0}")]
    Superseded(String),

    /// The cluster is being deleted or is deleted: it takes no more changes (a scale, an
    /// alarm's step). A conflict for the API; for an alarm, nothing to do.
    #[error("conflict: cluster {id} is {phase}; it is not scaled any more")]
    ClusterDeleting {
        /// The cluster.
        id: String,
        /// Its phase now.
        phase: &'static str,
    },

    /// A value could not be serialised to JSON: a bug in a type's `Serialize`, never
    /// written as an empty string in its place.
    #[error("could not encode {what} as JSON: {problem}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// serde_json's message.
        problem: String,
    },

    /// The resource existed and is gone for good (a deleted cluster's tombstone).
    #[error("gone: {0}")]
    Gone(String),

    /// An AWS call failed. `retryable` is decided from the error code and the kind of
    /// failure (throttling, 5xx, timeout, dispatch failure) when the error is created.
    #[error("{service}.{operation} failed ({code}): {message}")]
    Aws {
        /// The service as the SDK call site names it (`ec2`, `elbv2`, ...).
        service: &'static str,
        /// The API call (`RunInstances`).
        operation: &'static str,
        /// AWS's error code, `HTTP<status>` without one, or the kind of failure (`Timeout`).
        code: String,
        /// AWS's message, or the SDK's description of the failure.
        message: String,
        /// Whether a retry may succeed; decides [`Error::error_type`].
        retryable: bool,
    },

    /// A stored item does not have the shape this code writes: a bug or a manual edit.
    #[error("stored record {key} is malformed: {problem}")]
    CorruptRecord {
        /// Which record.
        key: String,
        /// What does not fit.
        problem: String,
    },

    /// An incoming event does not have the shape AWS documents for its source.
    #[error("malformed event: {0}")]
    MalformedEvent(String),

    /// What the step needs is not there yet (a node still recovering, a DNS name not yet
    /// reported): the state machine retries with backoff.
    #[error("not ready: {0}")]
    NotReady(String),

    /// The step cannot succeed by retrying (a script refused, nodes in two groups): a person
    /// has to look; the message says at what.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// [`Error::Validation`]: the API answers it with a 400 naming field, problem and fix.
    pub fn validation(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::Validation {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// [`Error::NotReady`]: retried with backoff by the state machine.
    pub fn not_ready(why: impl Into<String>) -> Self {
        Self::NotReady(why.into())
    }

    /// [`Error::Refused`]: terminal, a person has to look.
    pub fn refused(why: impl Into<String>) -> Self {
        Self::Refused(why.into())
    }

    /// [`Error::Encode`] from a `serde_json` failure.
    pub fn encode(what: &'static str, problem: serde_json::Error) -> Self {
        Self::Encode {
            what,
            problem: problem.to_string(),
        }
    }

    /// Whether retrying may succeed (transient AWS failures, lost races, not ready yet).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Aws { retryable, .. } => *retryable,
            Self::Conflict(_) | Self::NotReady(_) => true,
            Self::MissingConfig { .. }
            | Self::InvalidConfig { .. }
            | Self::Validation { .. }
            | Self::NotFound { .. }
            | Self::CorruptRecord { .. }
            | Self::Superseded(_)
            | Self::Gone(_)
            | Self::ClusterDeleting { .. }
            | Self::Encode { .. }
            | Self::MalformedEvent(_)
            | Self::Refused(_) => false,
        }
    }

    /// The Lambda `errorType` the state machine matches on.
    pub fn error_type(&self) -> &'static str {
        if matches!(self, Self::Superseded(_)) {
            ERROR_TYPE_SUPERSEDED
        } else if self.is_retryable() {
            ERROR_TYPE_RETRYABLE
        } else {
            ERROR_TYPE_TERMINAL
        }
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// Error codes AWS services use for throttling and transient server trouble.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionInProgressException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InsufficientInstanceCapacity",
];

/// The service's error code (`ConditionalCheckFailedException`, `InvalidInstanceID.NotFound`)
/// of any SDK error, when the service answered with one.
pub fn sdk_error_code<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> Option<&str>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code())
}

/// Turn any SDK error into [`Error::Aws`], deciding once whether it is worth retrying.
pub fn from_sdk<E>(
    service: &'static str,
    operation: &'static str,
    err: aws_sdk_dynamodb::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Error
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    let (code, message, retryable) = match &err {
        SdkError::ServiceError(service_err) => {
            let inner = service_err.err();
            let status = service_err.raw().status();
            let code = inner
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP{}", status.as_u16()));
            let message = inner.message().unwrap_or_default().to_string();
            // A 5xx or 429 without a code the SDK knows (an empty 503 from a load balancer
            // in front of the service) is as transient as a named throttling error.
            let retryable = RETRYABLE_CODES.contains(&code.as_str())
                || status.is_server_error()
                || status.as_u16() == 429;
            (code, message, retryable)
        }
        SdkError::TimeoutError(_) => ("Timeout".into(), format!("{err:?}"), true),
        SdkError::DispatchFailure(_) => ("DispatchFailure".into(), format!("{err:?}"), true),
        SdkError::ResponseError(_) => ("ResponseError".into(), format!("{err:?}"), true),
        _ => ("ConstructionFailure".into(), format!("{err:?}"), false),
    };
    Error::Aws {
        service,
        operation,
        code,
        message,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_map_to_the_retry_error_type() {
        let throttled = Error::Aws {
            service: "ec2",
            operation: "RunInstances",
            code: "RequestLimitExceeded".into(),
            message: "slow down".into(),
            retryable: true,
        };
        assert_eq!(throttled.error_type(), ERROR_TYPE_RETRYABLE);
        let bad = Error::validation("web.count", "0 is below 1", "ask for 1 to 20 instances");
        assert_eq!(bad.error_type(), ERROR_TYPE_TERMINAL);
        assert_eq!(
            bad.to_string(),
            "invalid web.count: 0 is below 1; ask for 1 to 20 instances"
        );
    }

    #[tokio::test]
    async fn a_bare_503_is_worth_retrying() {
        use aws_smithy_mocks::mock;
        let unavailable = mock!(aws_sdk_dynamodb::Client::get_item).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                503u16.try_into().expect("status"),
                aws_smithy_types::body::SdkBody::empty(),
            )
        });
        let client = crate::mocked_client!(aws_sdk_dynamodb, [&unavailable]);
        let err = client
            .get_item()
            .table_name("t")
            .send()
            .await
            .expect_err("503");
        let error = from_sdk("dynamodb", "GetItem", err);
        assert!(
            matches!(&error, Error::Aws { retryable: true, code, .. } if code == "HTTP503"),
            "{error:?}"
        );
        assert_eq!(error.error_type(), ERROR_TYPE_RETRYABLE);
    }

    #[test]
    fn diagnostic_carries_the_stable_error_type() {
        let diag: lambda_runtime::Diagnostic = Error::Conflict("lease held".into()).into();
        assert_eq!(diag.error_type, ERROR_TYPE_RETRYABLE);
        assert_eq!(diag.error_message, "conflict: lease held");
    }
}
