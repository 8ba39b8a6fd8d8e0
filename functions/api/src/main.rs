//! `api`: the HTTP API behind API Gateway (HTTP API, IAM auth). Routing and validation live
//! in `orchestrator::tasks::api`; this binary only converts between `lambda_http` and those types.

use lambda_http::{Body, Request, RequestExt, Response, run, service_fn};
use orchestrator::aws::fleet::StackNetwork;
use orchestrator::aws::store::ClusterStore;
use orchestrator::aws::workflow::Workflow;
use orchestrator::config::{ClusterLimits, StoreSettings, WorkflowSettings, required};
use orchestrator::startup::require;
use orchestrator::tasks::api::{ApiContext, ApiRequest, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    orchestrator::telemetry::init();
    let store = require("read configuration", StoreSettings::from_env())?;
    let workflow = require("read configuration", WorkflowSettings::from_env())?;
    let limits = require("read configuration", ClusterLimits::from_env())?;
    let vpc_id = require("read configuration", required("VPC_ID"))?;
    let sdk = require(
        "configure the AWS SDK",
        orchestrator::aws::sdk::load_sdk_config().await,
    )?;
    let ctx = ApiContext {
        store: ClusterStore::new(aws_sdk_dynamodb::Client::new(&sdk), store.table_name),
        workflow: Workflow::new(aws_sdk_sfn::Client::new(&sdk), workflow.state_machine_arn),
        network: StackNetwork::new(aws_sdk_ec2::Client::new(&sdk), vpc_id),
        limits,
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
