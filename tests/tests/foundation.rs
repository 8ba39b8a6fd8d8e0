//! Foundation, end to end: template.yaml deployed into the local cloud with `sam deploy`,
//! and the real `api` binary answering through the local API Gateway.

use e2e_tests::{deployed, get_json};

#[tokio::test]
async fn deployed_stack_serves_the_cluster_list_and_refuses_bad_requests() {
    let (cloud, stack) = deployed("foundation").await;

    // The resources the design needs are there.
    for (logical_id, resource_type) in [
        ("ClusterTable", "AWS::DynamoDB::Table"),
        ("ClusterWorkflow", "AWS::StepFunctions::StateMachine"),
        ("ApiFunction", "AWS::Lambda::Function"),
        ("ProvisionFunction", "AWS::Lambda::Function"),
        ("ReplicationFunction", "AWS::Lambda::Function"),
        ("InstanceEventsFunction", "AWS::Lambda::Function"),
        ("ScalingFunction", "AWS::Lambda::Function"),
        ("AlbTargetFunction", "AWS::Lambda::Function"),
    ] {
        let found = stack
            .resources
            .iter()
            .find(|r| r.logical_id == logical_id)
            .unwrap_or_else(|| {
                panic!("{logical_id} missing from the stack: {:?}", stack.resources)
            });
        assert_eq!(found.resource_type, resource_type);
        assert_eq!(found.status, "CREATE_COMPLETE", "{logical_id}");
    }
    let api = stack.api_url.clone().expect("the stack exports ApiId");

    // An empty table lists no clusters, answered by the real binary through API Gateway.
    let (status, body) = get_json(&format!("{api}/clusters")).await;
    assert_eq!(
        status,
        200,
        "{body}\nfunction logs:\n{}",
        cloud.function_logs()
    );
    assert_eq!(body, serde_json::json!({ "clusters": [], "next": null }));

    // A bad request is a 4xx whose JSON names the field and the fix.
    let (status, body) = get_json(&format!("{api}/clusters?limit=0")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "ValidationError");
    assert_eq!(body["error"]["field"], "limit");
    assert!(
        body["error"]["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("1 to 100"),
        "{body}"
    );

    // An unknown cluster route is a JSON 404 from the function, not a gateway error page.
    let (status, body) = get_json(&format!("{api}/clusters/c-does-not-exist/nodes")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "NotFound");

    // The api function logged structured JSON lines (it runs as on Lambda).
    let logs = cloud.function_logs();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "no JSON log line from the functions:\n{logs}"
    );
}
