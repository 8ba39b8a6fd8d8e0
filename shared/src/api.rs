//! The HTTP API, independent of how requests arrive (API Gateway through `lambda_http` in
//! production, plain values in tests). `openapi.yaml` documents every route and status.
//!
//! Contract: bad input is always a 4xx whose JSON body names the field and says what to
//! change; a failure on our side is a 5xx with a message that leaks no internals beyond the
//! failing AWS operation, and a request id to find the log line.

use serde_json::{Value, json};

use crate::error::Error;
use crate::store::{ClusterStore, MAX_PAGE_SIZE};

pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A request as the API sees it: method, path without stage prefix, decoded query pairs.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// Extra headers beyond `content-type: application/json`.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            json!({ "error": { "code": code, "message": message.into() } }),
        )
    }
}

/// What the API needs to answer: built once per cold start.
#[derive(Debug, Clone)]
pub struct ApiContext {
    pub store: ClusterStore,
}

#[tracing::instrument(skip_all, fields(method = %request.method, path = %request.path, request_id = %request.request_id))]
pub async fn handle(ctx: &ApiContext, request: ApiRequest) -> ApiResponse {
    let path = request.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["clusters"]) => list_clusters(ctx, &request).await,
        (_, ["clusters"]) => Ok(method_not_allowed(&request.method, "/clusters", "GET")),
        _ => Ok(ApiResponse::error(
            404,
            "NotFound",
            format!(
                "no route for {} {}; the API serves /clusters (see openapi.yaml)",
                request.method, request.path
            ),
        )),
    };
    match result {
        Ok(response) => response,
        Err(error) => error_response(&error, &request.request_id),
    }
}

fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiResponse {
    let mut response = ApiResponse::error(
        405,
        "MethodNotAllowed",
        format!("{method} is not allowed on {path}; use {allowed}"),
    );
    response.headers.push(("allow", allowed.to_string()));
    response
}

async fn list_clusters(ctx: &ApiContext, request: &ApiRequest) -> Result<ApiResponse, Error> {
    let mut limit = DEFAULT_PAGE_SIZE;
    let mut next = None;
    for (key, value) in &request.query {
        match key.as_str() {
            "limit" => limit = parse_limit(value)?,
            "next" => next = Some(value.as_str()),
            other => {
                return Err(Error::validation(
                    other,
                    "is not a query parameter of GET /clusters",
                    "use only `limit` (1-100) and `next` (the cursor of the previous page)",
                ));
            }
        }
    }
    let page = ctx.store.list_clusters(limit, next).await?;
    Ok(ApiResponse::json(
        200,
        json!({ "clusters": page.items, "next": page.next }),
    ))
}

fn parse_limit(value: &str) -> Result<u32, Error> {
    let fix = format!("use a whole number from 1 to {MAX_PAGE_SIZE}");
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Ok(n) => Err(Error::validation(
            "limit",
            format!("{n} is out of range"),
            fix,
        )),
        Err(_) => Err(Error::validation(
            "limit",
            format!("{value:?} is not a number"),
            fix,
        )),
    }
}

/// Map a library error to the API's answer. Only validation, not-found and conflicts carry
/// their text to the caller; anything else is logged in full and answered generically.
fn error_response(error: &Error, request_id: &str) -> ApiResponse {
    match error {
        Error::Validation {
            field,
            problem,
            fix,
        } => ApiResponse::json(
            400,
            json!({ "error": {
                "code": "ValidationError",
                "message": error.to_string(),
                "field": field,
                "problem": problem,
                "fix": fix,
            }}),
        ),
        Error::NotFound { .. } => ApiResponse::error(404, "NotFound", error.to_string()),
        Error::Conflict(_) => ApiResponse::error(409, "Conflict", error.to_string()),
        _ => {
            tracing::error!(error = %error, error_type = error.error_type(), "request failed");
            let status = if error.is_retryable() { 503 } else { 500 };
            ApiResponse::error(
                status,
                if error.is_retryable() {
                    "ServiceUnavailable"
                } else {
                    "InternalError"
                },
                format!(
                    "the orchestrator could not complete the request{}; request id {request_id}",
                    if error.is_retryable() {
                        ", retry in a few seconds"
                    } else {
                        ""
                    }
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_smithy_mocks::mock;

    fn request(method: &str, path: &str, query: &[(&str, &str)]) -> ApiRequest {
        ApiRequest {
            method: method.into(),
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
            request_id: "req-1".into(),
        }
    }

    fn ctx_with(client: aws_sdk_dynamodb::Client) -> ApiContext {
        ApiContext {
            store: ClusterStore::new(client, "table"),
        }
    }

    #[tokio::test]
    async fn empty_table_lists_no_clusters() {
        let query = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|req| req.limit() == Some(DEFAULT_PAGE_SIZE as i32))
            .then_output(|| QueryOutput::builder().build());
        let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, [&query]));
        let response = handle(&ctx, request("GET", "/clusters", &[])).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, json!({ "clusters": [], "next": null }));
    }

    #[tokio::test]
    async fn bad_limit_is_a_400_naming_the_field_and_the_fix() {
        let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, []));
        for bad in ["0", "101", "ten", "-1"] {
            let response = handle(&ctx, request("GET", "/clusters", &[("limit", bad)])).await;
            assert_eq!(response.status, 400, "limit={bad}");
            assert_eq!(response.body["error"]["field"], "limit");
            let fix = response.body["error"]["fix"].as_str().unwrap();
            assert!(fix.contains("1 to 100"), "{fix}");
        }
    }

    #[tokio::test]
    async fn unknown_query_parameter_is_refused() {
        let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, []));
        let response = handle(&ctx, request("GET", "/clusters", &[("page", "2")])).await;
        assert_eq!(response.status, 400);
        assert_eq!(response.body["error"]["field"], "page");
    }

    #[tokio::test]
    async fn unknown_route_and_wrong_method_are_4xx_json() {
        let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, []));
        let response = handle(&ctx, request("GET", "/nope", &[])).await;
        assert_eq!(response.status, 404);
        assert_eq!(response.body["error"]["code"], "NotFound");
        let response = handle(&ctx, request("PUT", "/clusters", &[])).await;
        assert_eq!(response.status, 405);
        assert_eq!(response.headers, vec![("allow", "GET".to_string())]);
    }

    #[tokio::test]
    async fn throttled_store_is_a_503_that_hides_internals() {
        let query = mock!(aws_sdk_dynamodb::Client::query).then_error(|| {
            aws_sdk_dynamodb::operation::query::QueryError::ProvisionedThroughputExceededException(
                aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                    .message("table arn:aws:dynamodb:secret-detail")
                    // As the SDK's deserializer does: the code travels in the error metadata.
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("ProvisionedThroughputExceededException")
                            .message("table arn:aws:dynamodb:secret-detail")
                            .build(),
                    )
                    .build(),
            )
        });
        let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, [&query]));
        let response = handle(&ctx, request("GET", "/clusters", &[])).await;
        assert_eq!(response.status, 503);
        let text = response.body.to_string();
        assert!(!text.contains("secret-detail"), "{text}");
        assert!(text.contains("req-1"), "{text}");
    }
}
