//! Test support: SDK clients whose every call is answered by `aws-smithy-mocks` rules.
//!
//! `aws_smithy_mocks::mock_client!` needs each SDK crate's `test-util` feature. Enabling a
//! feature only for tests would give the SDK two feature sets in one workspace and compile it
//! twice per CI run, so this macro builds the same client from public config calls instead.

/// `mocked_client!(aws_sdk_dynamodb, [&rule_a, &rule_b])` or with an explicit
/// `aws_smithy_mocks::RuleMode` as the second argument. Retries are off so a test sees
/// exactly the calls the code makes.
#[macro_export]
macro_rules! mocked_client {
    ($krate:ident, [$($rule:expr),* $(,)?]) => {
        $crate::mocked_client!($krate, ::aws_smithy_mocks::RuleMode::Sequential, [$($rule),*])
    };
    ($krate:ident, $mode:expr, [$($rule:expr),* $(,)?]) => {{
        #[allow(unused_mut)]
        let mut interceptor = ::aws_smithy_mocks::MockResponseInterceptor::new().rule_mode($mode);
        $( interceptor = interceptor.with_rule($rule); )*
        let config = $krate::config::Builder::new()
            .behavior_version($krate::config::BehaviorVersion::latest())
            .region($krate::config::Region::new("us-east-1"))
            .credentials_provider($krate::config::Credentials::new(
                "AKIDTEST", "test-secret", None, None, "mocked",
            ))
            .retry_config($krate::config::retry::RetryConfig::disabled())
            .http_client(::aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            .build();
        $krate::Client::from_conf(config)
    }};
}

/// DynamoDB's answer to a write whose condition failed, with the error code the SDK and
/// [`crate::error::sdk_error_code`] read: the lost race every conditional-write test needs.
pub fn conditional_check_failed() -> aws_sdk_dynamodb::types::error::ConditionalCheckFailedException
{
    aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder()
        .meta(
            aws_smithy_types::error::ErrorMetadata::builder()
                .code("ConditionalCheckFailedException")
                .build(),
        )
        .build()
}
