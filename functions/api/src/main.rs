//! `api`: the HTTP API behind API Gateway (HTTP API, IAM auth). Routing and validation live
//! in `orchestrator::tasks::api`; this binary only converts between `lambda_http` and those types.

use lambda_http::{Body, Request, RequestExt, Response, run, service_fn};
use orchestrator::config::ClusterLimits;
use orchestrator::startup::{ColdStart, require};
use orchestrator::tasks::api::{ApiContext, ApiRequest, handle};
use orchestrator::tasks::runs::Runs;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let start = ColdStart::begin().await?;
    let store = start.store()?;
    let ctx = ApiContext {
        runs: Runs::new(store.clone(), start.workflow()?),
        store,
        network: start.stack_network()?,
        limits: require("read configuration", ClusterLimits::from_env())?,
        backups: start.backups_bucket_if_set(),
    };
    run(service_fn(|request: Request| serve(&ctx, request))).await
}

async fn serve(ctx: &ApiContext, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    let api_request = ApiRequest {
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request
            .query_string_parameters_ref()
            .map(|params| {
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        headers: request
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect(),
        body: match request.body() {
            Body::Empty => None,
            Body::Text(text) => Some(text.as_bytes().to_vec()),
            Body::Binary(bytes) => Some(bytes.clone()),
            _ => None,
        },
        request_id: request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default(),
    };
    let answer = handle(ctx, api_request).await;
    let mut builder = Response::builder()
        .status(answer.status)
        .header("content-type", "application/json");
    for (name, value) in answer.headers {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Body::Text(answer.body.to_string()))?)
}
