//! `alb-target`: the Lambda target of the cluster's ALB. It answers ALB health checks; the
//! status and maintenance pages come with the healing issue.

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use orchestrator::config::StoreSettings;
use orchestrator::startup::require;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orchestrator::telemetry::init();
    require("read configuration", StoreSettings::from_env())?;
    run(service_fn(handle)).await
}

async fn handle(
    event: LambdaEvent<AlbTargetGroupRequest>,
) -> Result<AlbTargetGroupResponse, Diagnostic> {
    let path = event.payload.path.as_deref().unwrap_or("/");
    let (status, body) = match path {
        "/_health" => (200, r#"{"status":"ok"}"#.to_string()),
        other => (
            404,
            serde_json::json!({ "error": format!("{other} is not served by the orchestrator target; try /_health") })
                .to_string(),
        ),
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut response = AlbTargetGroupResponse::default();
    response.status_code = status;
    response.status_description = Some(format!(
        "{status} {}",
        if status == 200 { "OK" } else { "Not Found" }
    ));
    response.headers = headers;
    response.body = Some(Body::Text(body));
    response.is_base64_encoded = false;
    Ok(response)
}
