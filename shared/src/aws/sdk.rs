//! AWS clients, built once per cold start from the default provider chain (which honours
//! `AWS_ENDPOINT_URL`, so the same binary talks to AWS or to the local cloud).

use aws_config::{BehaviorVersion, SdkConfig};

/// The SDK configuration every function builds its clients from. With `HA_FAULTS` set (the
/// chaos tests only) its HTTP client injects faults; see [`crate::aws::faults`]. A malformed
/// `HA_FAULTS` stops the function at start rather than run without the faults asked for.
/// With the metering log target enabled, every request is logged ([`crate::aws::metering`]).
pub async fn load_sdk_config() -> crate::Result<SdkConfig> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let config = crate::aws::faults::with_faults(config)?;
    // Outermost, so every attempt is counted, injected faults included.
    Ok(crate::aws::metering::with_metering(config))
}

/// S3 with path-style addressing when an endpoint is overridden (a local cloud has no
/// per-bucket host names); virtual-hosted style, the AWS default, otherwise.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}
