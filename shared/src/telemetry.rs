//! Structured logging: JSON lines on Lambda (CloudWatch Logs Insights can query the fields),
//! human-readable text elsewhere. `RUST_LOG` overrides the default `info` level.

use tracing_subscriber::EnvFilter;

/// Install the global log subscriber at cold start; a second call changes nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` so that a second call (tests, benchmarks) is harmless.
    let _ = if on_lambda {
        builder
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .without_time() // Lambda timestamps every line itself
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
