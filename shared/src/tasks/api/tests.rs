//! The API's answers on mocked DynamoDB, EC2 and Step Functions clients: validation
//! before any call, limits, errors that hide internals.

use super::clusters::{new_cluster_id, valid_cluster_id};
use super::*;
use crate::aws::workflow::Workflow;
use crate::config::ClusterLimits;
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
        headers: vec![],
        body: None,
        request_id: "req-1".into(),
    }
}

fn ctx_with(client: aws_sdk_dynamodb::Client) -> ApiContext {
    ctx_of(client, mocked_client!(aws_sdk_ec2, []), 99)
}

fn ctx_of(
    dynamodb: aws_sdk_dynamodb::Client,
    ec2: aws_sdk_ec2::Client,
    max_clusters: u32,
) -> ApiContext {
    let store = ClusterStore::new(dynamodb, "table");
    ApiContext {
        runs: Runs::new(
            store.clone(),
            Workflow::new(
                mocked_client!(aws_sdk_sfn, []),
                "arn:aws:states:us-east-1:1:stateMachine:w",
            ),
        ),
        store,
        network: StackNetwork::new(ec2, "vpc-stack"),
        limits: ClusterLimits { max_clusters },
        backups: None,
    }
}

fn create_request(body: serde_json::Value) -> ApiRequest {
    ApiRequest {
        body: Some(body.to_string().into_bytes()),
        ..request("POST", "/clusters", &[])
    }
}

#[tokio::test]
async fn a_create_beyond_the_load_balancer_is_a_409_before_anything_is_written() {
    // The COUNT query says the stack is full; nothing else may be called.
    let count = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| r.select() == Some(&aws_sdk_dynamodb::types::Select::Count))
        .then_output(|| QueryOutput::builder().count(2).build());
    let absent =
        mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build());
    let ctx = ctx_of(
        mocked_client!(
            aws_sdk_dynamodb,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&count, &absent]
        ),
        mocked_client!(aws_sdk_ec2, []),
        2,
    );
    let response = handle(
        &ctx,
        create_request(json!({"name": "shop", "web": {"count": 2, "instanceType": "t3.small"}, "db": {"count": 3, "instanceType": "t3.small"}})),
    )
    .await;
    assert_eq!(response.status, 409, "{}", response.body);
    let text = response.body.to_string();
    assert!(text.contains("100 target groups"), "{text}");
    assert!(text.contains("delete a cluster"), "{text}");
    assert!(text.contains("MaxClusters"), "{text}");
    assert_eq!(count.num_calls(), 1);
}

/// A create naming `subnets`, EC2 answering through `describe_subnets`; DynamoDB is
/// never reached.
async fn create_in_subnets(
    describe_subnets: &aws_smithy_mocks::Rule,
    subnets: &[&str],
) -> ApiResponse {
    let ctx = ctx_of(
        mocked_client!(aws_sdk_dynamodb, []),
        mocked_client!(aws_sdk_ec2, [describe_subnets]),
        99,
    );
    handle(
        &ctx,
        create_request(json!({
            "name": "shop",
            "web": {"count": 2, "instanceType": "t3.small"},
            "db": {"count": 3, "instanceType": "t3.small"},
            "subnets": subnets,
        })),
    )
    .await
}

#[tokio::test]
async fn a_subnet_outside_the_stack_vpc_is_a_400_naming_it() {
    let subnets = mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
        aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput::builder()
            .subnets(
                aws_sdk_ec2::types::Subnet::builder()
                    .subnet_id("subnet-0aaaaaaa")
                    .vpc_id("vpc-stack")
                    .build(),
            )
            .subnets(
                aws_sdk_ec2::types::Subnet::builder()
                    .subnet_id("subnet-0bbbbbbb")
                    .vpc_id("vpc-other")
                    .build(),
            )
            .build()
    });
    let response = create_in_subnets(&subnets, &["subnet-0aaaaaaa", "subnet-0bbbbbbb"]).await;
    assert_eq!(response.status, 400, "{}", response.body);
    let text = response.body.to_string();
    assert!(text.contains("subnet-0bbbbbbb is in vpc-other"), "{text}");
    assert!(text.contains("vpc-stack"), "{text}");
}

#[tokio::test]
async fn an_unknown_subnet_is_a_400() {
    let subnets = mock!(aws_sdk_ec2::Client::describe_subnets).then_error(|| {
        aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsError::generic(
            aws_smithy_types::error::ErrorMetadata::builder()
                .code("InvalidSubnetID.NotFound")
                .message("The subnet ID 'subnet-0ccccccc' does not exist")
                .build(),
        )
    });
    let response = create_in_subnets(&subnets, &["subnet-0ccccccc"]).await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.to_string().contains("subnet-0ccccccc"));
}

#[test]
fn idempotency_keys_name_the_same_cluster_every_time() {
    let a = new_cluster_id(Some("key-1"));
    assert_eq!(a, new_cluster_id(Some("key-1")));
    assert_ne!(a, new_cluster_id(Some("key-2")));
    assert!(valid_cluster_id(&a), "{a}");
    let random = new_cluster_id(None);
    assert!(valid_cluster_id(&random), "{random}");
    assert_ne!(random, new_cluster_id(None));
    for bad in ["c-XYZ", "c-0123456789abc", "0123456789ab", "c-0123456789AB"] {
        assert!(!valid_cluster_id(bad), "{bad}");
    }
}

#[tokio::test]
async fn malformed_creates_are_400s_before_any_call() {
    let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, []));
    let mut create = request("POST", "/clusters", &[]);
    create.body = Some(br#"{"name":"shop","web":{"count":0,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#.to_vec());
    let response = handle(&ctx, create.clone()).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"]["field"], "web.count");
    create.headers = vec![("idempotency-key".into(), "has space".into())];
    let response = handle(&ctx, create).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404s() {
    let query =
        mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build());
    let ctx = ctx_with(mocked_client!(aws_sdk_dynamodb, [&query]));
    let response = handle(&ctx, request("GET", "/clusters/c-0123456789ab", &[])).await;
    assert_eq!(response.status, 404);
    let response = handle(&ctx, request("GET", "/clusters/../../etc", &[])).await;
    assert_eq!(response.status, 404);
    let response = handle(&ctx, request("DELETE", "/clusters/not-an-id", &[])).await;
    assert_eq!(response.status, 404);
    assert_eq!(query.num_calls(), 1, "malformed ids never reach DynamoDB");
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
    assert_eq!(response.headers, vec![("allow", "GET, POST".to_string())]);
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
