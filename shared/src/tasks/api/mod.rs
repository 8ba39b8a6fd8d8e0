//! The HTTP API, independent of how requests arrive (API Gateway through `lambda_http` in
//! production, plain values in tests). `openapi.yaml` documents every route and status.
//!
//! Contract: bad input is always a 4xx whose JSON body names the field and says what to
//! change; a failure on our side is a 5xx with a message that leaks no internals beyond the
//! failing AWS operation, and a request id to find the log line.
//!
//! This file routes a request to its handler and turns errors into answers; the handlers
//! are in `clusters.rs`, one per route, and the tests in `tests.rs`.

use serde_json::{Value, json};

use crate::aws::backups::BackupBucket;
use crate::aws::fleet::StackNetwork;
use crate::aws::store::ClusterStore;
use crate::config::ClusterLimits;
use crate::error::Error;
use crate::tasks::runs::Runs;

mod backups;
mod clusters;

pub use clusters::cluster_view;
use clusters::{
    create_cluster, delete_cluster, get_cluster, list_clusters, patch_cluster, replace_node,
};

/// The page size of `GET /clusters` when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A request as the API sees it: method, path without stage prefix, decoded query pairs.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    /// The HTTP method, uppercase.
    pub method: String,
    /// The path without the stage prefix.
    pub path: String,
    /// The decoded query string pairs.
    pub query: Vec<(String, String)>,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body's bytes, if any.
    pub body: Option<Vec<u8>>,
    /// The request id an error answer names, to find the log line.
    pub request_id: String,
}

impl ApiRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The API's answer, independent of how it is sent (`lambda_http` in production).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
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
    /// The clusters the API reads and records requests in.
    pub store: ClusterStore,
    /// Starts the run a create, delete, scale or replacement asks for.
    pub runs: Runs,
    /// Checks a create's subnets against the stack's VPC.
    pub network: StackNetwork,
    /// How many clusters the stack's load balancer takes.
    pub limits: ClusterLimits,
    /// The backup bucket (`BACKUP_BUCKET`), for `DELETE ...?purgeBackups=true`; without it
    /// that request fails with what to set, and nothing else needs it.
    pub backups: Option<BackupBucket>,
}

/// Answer one request: route it, and turn an error into its status and JSON body.
#[tracing::instrument(skip_all, fields(method = %request.method, path = %request.path, request_id = %request.request_id))]
pub async fn handle(ctx: &ApiContext, request: ApiRequest) -> ApiResponse {
    let path = request.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["clusters"]) => list_clusters(ctx, &request).await,
        ("POST", ["clusters"]) => create_cluster(ctx, &request).await,
        (_, ["clusters"]) => Ok(method_not_allowed(
            &request.method,
            "/clusters",
            "GET, POST",
        )),
        ("GET", ["clusters", id]) => get_cluster(ctx, id).await,
        ("DELETE", ["clusters", id]) => delete_cluster(ctx, id, &request).await,
        ("PATCH", ["clusters", id]) => patch_cluster(ctx, id, &request).await,
        (_, ["clusters", _]) => Ok(method_not_allowed(
            &request.method,
            "/clusters/{id}",
            "GET, PATCH, DELETE",
        )),
        ("GET", ["clusters", id, "backups"]) => backups::list_backups(ctx, id).await,
        ("POST", ["clusters", id, "backups"]) => backups::create_backup(ctx, id).await,
        (_, ["clusters", _, "backups"]) => Ok(method_not_allowed(
            &request.method,
            "/clusters/{id}/backups",
            "GET, POST",
        )),
        ("POST", ["clusters", id, "nodes", instance, "replace"]) => {
            replace_node(ctx, id, instance).await
        }
        (_, ["clusters", _, "nodes", _, "replace"]) => Ok(method_not_allowed(
            &request.method,
            "/clusters/{id}/nodes/{instanceId}/replace",
            "POST",
        )),
        _ => Ok(ApiResponse::error(
            404,
            "NotFound",
            format!(
                "no route for {} {}; the API serves /clusters, /clusters/{{id}}, /clusters/{{id}}/backups and /clusters/{{id}}/nodes/{{instanceId}}/replace (see openapi.yaml)",
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
        Error::Conflict(_) | Error::ClusterDeleting { .. } => {
            ApiResponse::error(409, "Conflict", error.to_string())
        }
        Error::Gone(_) => ApiResponse::error(410, "Gone", error.to_string()),
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
mod backup_tests;
#[cfg(test)]
mod tests;
