//! The HTTP API, independent of how requests arrive (API Gateway through `lambda_http` in
//! production, plain values in tests). `openapi.yaml` documents every route and status.
//!
//! Contract: bad input is always a 4xx whose JSON body names the field and says what to
//! change; a failure on our side is a 5xx with a message that leaks no internals beyond the
//! failing AWS operation, and a request id to find the log line.

use serde_json::{Value, json};

use crate::aws::fleet::StackNetwork;
use crate::aws::store::{ClusterStore, Created, MAX_PAGE_SIZE, unique_u32};
use crate::aws::workflow::Workflow;
use crate::config::ClusterLimits;
use crate::domain::cluster::ClusterId;
use crate::domain::cluster::{Cluster, NodeState, Phase, Tier};
use crate::domain::runs::{RunReason, WorkflowInput};
use crate::domain::spec::ClusterSpec;
use crate::error::Error;

pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A request as the API sees it: method, path without stage prefix, decoded query pairs.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
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
    pub workflow: Workflow,
    /// Checks a create's subnets against the stack's VPC.
    pub network: StackNetwork,
    pub limits: ClusterLimits,
}

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
        ("DELETE", ["clusters", id]) => delete_cluster(ctx, id).await,
        ("PATCH", ["clusters", id]) => patch_cluster(ctx, id, &request).await,
        (_, ["clusters", _]) => Ok(method_not_allowed(
            &request.method,
            "/clusters/{id}",
            "GET, PATCH, DELETE",
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
                "no route for {} {}; the API serves /clusters, /clusters/{{id}} and /clusters/{{id}}/nodes/{{instanceId}}/replace (see openapi.yaml)",
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

/// `Idempotency-Key`: 1-128 visible ASCII characters.
fn idempotency_key(request: &ApiRequest) -> Result<Option<&str>, Error> {
    let Some(key) = request.header("idempotency-key") else {
        return Ok(None);
    };
    let ok = (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(key))
    } else {
        Err(Error::validation(
            "Idempotency-Key",
            "is not 1 to 128 visible ASCII characters",
            "send a UUID or another unique token of at most 128 characters",
        ))
    }
}

/// Cluster ids are `c-` and 12 hex digits. With an idempotency key the id derives from it
/// (FNV-1a, stable across deployments), so a retried create names the same cluster.
fn new_cluster_id(idempotency_key: Option<&str>) -> String {
    let bits = match idempotency_key {
        Some(key) => {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in b"idempotency:".iter().chain(key.as_bytes()) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            hash
        }
        None => (u64::from(unique_u32()) << 32) | u64::from(unique_u32()),
    };
    ClusterId::from_bits(bits).into()
}

fn valid_cluster_id(id: &str) -> bool {
    ClusterId::parse(id).is_some()
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "cluster",
        id: id.to_string(),
    }
}

async fn create_cluster(ctx: &ApiContext, request: &ApiRequest) -> Result<ApiResponse, Error> {
    let key = idempotency_key(request)?;
    let spec = ClusterSpec::from_request_body(request.body.as_deref().unwrap_or_default())?;
    let id = new_cluster_id(key);
    ctx.network.check_subnets(&spec.subnets).await?;
    ensure_room_for(ctx, &id).await?;
    match ctx.store.create_cluster(&id, &spec).await? {
        Created::New => {}
        Created::Existing(existing) if key.is_some() && existing == spec => {}
        Created::Existing(_) if key.is_some() => {
            return Err(Error::Conflict(
                "this Idempotency-Key was already used for a different request; send a new key for a new cluster".into(),
            ));
        }
        // A random id collided (astronomically unlikely): the caller may simply retry.
        Created::Existing(_) => {
            return Err(Error::Conflict(
                "cluster id collision; retry the request".into(),
            ));
        }
        Created::NameTaken(owner) => {
            return Err(Error::Conflict(format!(
                "a cluster named {:?} already exists ({owner}); choose another name or delete that cluster first",
                spec.name
            )));
        }
    }
    // Starting is idempotent by execution name, so a retried create restarts nothing.
    ctx.workflow
        .start(&WorkflowInput {
            cluster_id: id.clone(),
            generation: 1,
            reason: RunReason::Create,
        })
        .await?;
    let mut response = ApiResponse::json(
        202,
        json!({ "id": id, "name": spec.name, "phase": "PENDING", "statusUrl": format!("/clusters/{id}") }),
    );
    response
        .headers
        .push(("location", format!("/clusters/{id}")));
    Ok(response)
}

/// Refuse a create the stack's load balancer could not take (see [`ClusterLimits`])
/// before anything is recorded, instead of failing half-way at CreateTargetGroup. A retry
/// of a create that was accepted (same Idempotency-Key) is not a new cluster and passes.
/// Two creates racing for the last place can both pass; the second then fails at
/// CreateTargetGroup with `TooManyTargetGroups`, and its run tears down what it made.
async fn ensure_room_for(ctx: &ApiContext, id: &str) -> Result<(), Error> {
    let live = ctx.store.count_live_clusters().await?;
    if live < ctx.limits.max_clusters || ctx.store.get_cluster(id).await?.is_some() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "this stack holds {live} clusters, its limit of {max}: each cluster takes a target group and a listener rule on the stack's load balancer, which holds at most 100 target groups (AWS does not raise that quota); delete a cluster you no longer need, or deploy another stack for more clusters{lowered}",
        max = ctx.limits.max_clusters,
        lowered = if ctx.limits.max_clusters < ClusterLimits::LOAD_BALANCER_CAPACITY {
            format!(
                " (the stack's MaxClusters parameter sets {}; up to {} fit)",
                ctx.limits.max_clusters,
                ClusterLimits::LOAD_BALANCER_CAPACITY
            )
        } else {
            String::new()
        },
    )))
}

async fn get_cluster(ctx: &ApiContext, id: &str) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let mut cluster = ctx
        .store
        .get_cluster(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    cluster.actions = ctx.store.recent_actions(id).await?;
    Ok(ApiResponse::json(200, cluster_view(&cluster)))
}

async fn delete_cluster(ctx: &ApiContext, id: &str) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let generation = ctx.store.request_delete(id).await?;
    ctx.workflow
        .start(&WorkflowInput {
            cluster_id: id.to_string(),
            generation,
            reason: RunReason::Delete,
        })
        .await?;
    Ok(ApiResponse::json(
        202,
        json!({ "id": id, "phase": "DELETING", "statusUrl": format!("/clusters/{id}") }),
    ))
}

/// `PATCH /clusters/{id}` `{"web": {"count": N}}`: scale the web tier by hand, within the
/// cluster's bounds (no cooldown: a person decided).
async fn patch_cluster(
    ctx: &ApiContext,
    id: &str,
    request: &ApiRequest,
) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let count = crate::domain::spec::ClusterSpec::patched_web_count(
        request.body.as_deref().unwrap_or_default(),
    )?;
    match ctx
        .store
        .request_scale(id, crate::aws::store::ScaleTarget::Count(count), None)
        .await?
    {
        crate::aws::store::Scaled::Unchanged(why) => {
            // A resend of a scale that was recorded but whose run may not have started (the
            // first answer was an error after the write): make sure the run is under way.
            // Starting is idempotent by execution name, so a run already going is untouched.
            if let Some(cluster) = ctx.store.get_cluster(id).await?
                && cluster.phase == Phase::Scaling
            {
                ctx.workflow
                    .start(&WorkflowInput {
                        cluster_id: id.to_string(),
                        generation: cluster.generation,
                        reason: RunReason::Scale,
                    })
                    .await?;
            }
            Ok(ApiResponse::json(
                200,
                json!({ "id": id, "unchanged": why }),
            ))
        }
        crate::aws::store::Scaled::Started {
            generation,
            from,
            to,
        } => {
            ctx.workflow
                .start_explained(
                    &ctx.store,
                    WorkflowInput {
                        cluster_id: id.to_string(),
                        generation,
                        reason: RunReason::Scale,
                    },
                    "ScaleRequested",
                    &format!("web {from} -> {to} by the API"),
                )
                .await?;
            Ok(ApiResponse::json(
                202,
                json!({
                    "id": id,
                    "phase": "SCALING",
                    "generation": generation,
                    "web": { "from": from, "to": to },
                    "statusUrl": format!("/clusters/{id}"),
                }),
            ))
        }
    }
}

/// An operator's replacement of one node: a healing run launches its successor in the same
/// slot, registers it or adds it to the group, then retires the old instance.
async fn replace_node(ctx: &ApiContext, id: &str, instance: &str) -> Result<ApiResponse, Error> {
    if !valid_cluster_id(id) {
        return Err(not_found(id));
    }
    let cluster = ctx
        .store
        .get_cluster(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if matches!(cluster.phase, Phase::Deleting | Phase::Deleted) {
        return Err(Error::Conflict(format!(
            "cluster {id} is {}; nothing of it is replaced any more",
            cluster.phase.as_str()
        )));
    }
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.instance_id.as_deref() == Some(instance))
        .ok_or_else(|| Error::NotFound {
            kind: "node",
            id: format!("{instance} of cluster {id} (see GET /clusters/{id} for its nodes)"),
        })?;
    if node.role.as_deref() == Some("PRIMARY") {
        return Err(Error::Conflict(format!(
            "{instance} ({}) is the PRIMARY of the group; make another member primary first \
             (MySQL Shell: cluster.setPrimaryInstance), or stop the instance and let the group \
             fail over, then replace it",
            node.slot
        )));
    }
    let Some(generation) = ctx.store.request_heal(id, instance, true).await? else {
        return Err(Error::Conflict(format!(
            "{instance} is already being replaced or healed; follow GET /clusters/{id}"
        )));
    };
    ctx.workflow
        .start_explained(
            &ctx.store,
            WorkflowInput {
                cluster_id: id.to_string(),
                generation,
                reason: RunReason::Heal,
            },
            "ReplaceRequested",
            &format!("{instance} ({}) by the API", node.slot),
        )
        .await?;
    Ok(ApiResponse::json(
        202,
        json!({
            "id": id,
            "replacing": instance,
            "slot": node.slot,
            "generation": generation,
            "phase": "HEALING",
            "statusUrl": format!("/clusters/{id}"),
        }),
    ))
}

/// The cluster as `GET /clusters/{id}` shows it: the record plus conditions derived from
/// the nodes, so a reader sees at a glance what is still missing.
pub fn cluster_view(cluster: &Cluster) -> Value {
    let mut view = serde_json::to_value(cluster).unwrap_or_else(|_| json!({}));
    let count = |tier: Tier, pred: &dyn Fn(&crate::domain::cluster::Node) -> bool| {
        cluster
            .nodes
            .iter()
            .filter(|n| n.tier == tier && pred(n))
            .count()
    };
    let running = |n: &crate::domain::cluster::Node| {
        matches!(
            n.state,
            NodeState::Running | NodeState::Registered | NodeState::Healthy | NodeState::Unhealthy
        )
    };
    let web_running = count(Tier::Web, &running);
    let db_running = count(Tier::Db, &running);
    let web_healthy = count(Tier::Web, &|n| {
        n.target_health.as_deref() == Some("healthy")
    });
    view["conditions"] = json!({
        "webInstancesRunning": format!("{web_running}/{}", cluster.spec.web.count),
        "dbInstancesRunning": format!("{db_running}/{}", cluster.spec.db.count),
        "webTargetsHealthy": format!("{web_healthy}/{}", cluster.spec.web.count),
    });
    view["primary"] = cluster
        .nodes
        .iter()
        .find(|n| n.role.as_deref() == Some("PRIMARY"))
        .and_then(|n| n.instance_id.clone())
        .map(Value::String)
        .unwrap_or(Value::Null);
    view
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
        ApiContext {
            store: ClusterStore::new(dynamodb, "table"),
            workflow: Workflow::new(
                mocked_client!(aws_sdk_sfn, []),
                "arn:aws:states:us-east-1:1:stateMachine:w",
            ),
            network: StackNetwork::new(ec2, "vpc-stack"),
            limits: ClusterLimits { max_clusters },
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
}
