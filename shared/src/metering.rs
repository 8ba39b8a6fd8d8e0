//! One debug line per AWS request a function sends (`aws call`, target
//! `orchestrator::metering`): service, operation, when it was sent, how long it took, the
//! answer's status and, for DynamoDB, how many items it read or wrote. Off unless the log
//! filter enables that target (`RUST_LOG=info,orchestrator::metering=debug`, the template's
//! `LogLevel`), and then it costs one log line per request.
//!
//! It is what `make bench` counts calls, DynamoDB units and reaction times from, and what an
//! operator can turn on in production to see what the orchestration costs (CloudWatch Logs
//! Insights: `filter message = "aws call" | stats count() by service, operation`). Each SDK
//! retry is its own line: that is what AWS bills and throttles.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::faults::{http_client_of, operation_name, signing_name};

/// The tracing target of the `aws call` lines.
pub const TARGET: &str = "orchestrator::metering";

/// Whether the log filter asks for the `aws call` lines.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// The configuration with its HTTP client metered when [`enabled`]; unchanged otherwise,
/// so production runs the SDK's own client unless someone asks for the lines.
pub fn with_metering(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    if !enabled() {
        return config;
    }
    let inner = http_client_of(&config);
    config
        .into_builder()
        .http_client(MeteredHttpClient::new(inner))
        .build()
}

/// The HTTP client of an SDK configuration, logging every request.
#[derive(Debug, Clone)]
pub struct MeteredHttpClient {
    inner: SharedHttpClient,
}

impl MeteredHttpClient {
    pub fn new(inner: SharedHttpClient) -> Self {
        Self { inner }
    }
}

impl HttpClient for MeteredHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(MeteredConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct MeteredConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for MeteredConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = signing_name(&request);
        let operation = operation_name(&request);
        let items = if service == "dynamodb" {
            dynamodb_items(&operation, request.body().bytes().unwrap_or_default())
        } else {
            0
        };
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let started = Instant::now();
        let sent = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let answer = sent.await;
            let status = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            tracing::debug!(
                target: TARGET,
                service = %service,
                operation = %operation,
                at_ms,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                status = %status,
                items,
                "aws call"
            );
            answer
        })
    }
}

/// How many items a DynamoDB request reads or writes: the entries of a transaction or a
/// batch, one for the single-item operations and for a Query or Scan (which read one page;
/// its size in 4 KB units is not known before the answer).
pub fn dynamodb_items(operation: &str, body: &[u8]) -> usize {
    let entries = |field: &str| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| match v.get(field)? {
                serde_json::Value::Array(list) => Some(list.len()),
                // BatchWriteItem / BatchGetItem: a map of table -> requests (or -> Keys).
                serde_json::Value::Object(tables) => Some(
                    tables
                        .values()
                        .map(|t| match t {
                            serde_json::Value::Array(list) => list.len(),
                            other => other
                                .get("Keys")
                                .and_then(|k| k.as_array())
                                .map_or(0, Vec::len),
                        })
                        .sum(),
                ),
                _ => None,
            })
            .unwrap_or(1)
    };
    match operation {
        "TransactWriteItems" | "TransactGetItems" => entries("TransactItems"),
        "BatchWriteItem" | "BatchGetItem" => entries("RequestItems"),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_and_batches_count_their_items() {
        let transaction = br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#;
        assert_eq!(dynamodb_items("TransactWriteItems", transaction), 3);
        let batch = br#"{"RequestItems":{"t":[{"PutRequest":{}},{"PutRequest":{}}]}}"#;
        assert_eq!(dynamodb_items("BatchWriteItem", batch), 2);
        let get = br#"{"RequestItems":{"t":{"Keys":[{},{},{},{}]}}}"#;
        assert_eq!(dynamodb_items("BatchGetItem", get), 4);
        assert_eq!(dynamodb_items("GetItem", b"{}"), 1);
        assert_eq!(dynamodb_items("TransactWriteItems", b"not json"), 1);
    }
}
