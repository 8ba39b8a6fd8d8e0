//! Provisioning end to end in the local cloud: create through the API, the workflow
//! converges to READY, idempotency on every level, bad requests, and a clean DELETE.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_tests::{
    NOT_TERMINATED, cluster_instances, delete_and_wait, deployed_with_agent,
    deployed_with_agent_and, send_json, wait_for_phase,
};
use reqwest::Method;

const CREATE: &str = r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;

#[tokio::test]
async fn create_converges_to_ready_idempotently_and_delete_leaves_nothing() {
    let (cloud, stack, _agent) = deployed_with_agent("provisioning").await;
    let api = stack.api_url.clone().expect("ApiId output");
    let sdk = cloud.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = stack.outputs["TableName"].clone();

    // Bad requests: 4xx with a JSON message naming the field, never a 5xx.
    for (body, field) in [
        (
            r#"{"name":"shop","web":{"count":0,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
            "web.count",
        ),
        (
            r#"{"name":"shop","web":{"count":2,"instanceType":"large"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
            "web.instanceType",
        ),
        (r#"{"name":"shop","web":{"count":2"#, "body"),
    ] {
        let (status, error) =
            send_json(Method::POST, &format!("{api}/clusters"), Some(body), &[]).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let (status, error) = send_json(
        Method::GET,
        &format!("{api}/clusters/c-0123456789ab"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 404, "{error}");

    // Create twice with one Idempotency-Key: one cluster.
    let key = [("idempotency-key", "e2e-create-1")];
    let (status, first) =
        send_json(Method::POST, &format!("{api}/clusters"), Some(CREATE), &key).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().expect("id").to_string();
    let (status, second) =
        send_json(Method::POST, &format!("{api}/clusters"), Some(CREATE), &key).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["id"], first["id"]);
    // The same name without the key is a conflict, not a second cluster.
    let (status, conflict) =
        send_json(Method::POST, &format!("{api}/clusters"), Some(CREATE), &[]).await;
    assert_eq!(status, 409, "{conflict}");

    let cluster = wait_for_phase(&api, &id, &["READY", "FAILED"], Duration::from_secs(180)).await;
    assert_eq!(cluster["phase"], "READY", "{cluster:#}");

    // EC2: exactly five running instances with the cluster's tags, over at least 2 zones.
    let running = cluster_instances(&ec2, &id, &["pending", "running"]).await;
    assert_eq!(running.len(), 5, "{running:?}");
    let zones: BTreeSet<String> = running
        .iter()
        .filter_map(|i| {
            i.placement()
                .and_then(|p| p.availability_zone())
                .map(str::to_string)
        })
        .collect();
    assert!(zones.len() >= 2, "instances in {zones:?}");

    // The web target group holds the two web instances.
    let target_group = cluster["targetGroupArn"]
        .as_str()
        .expect("target group")
        .to_string();
    let health = elbv2
        .describe_target_health()
        .target_group_arn(&target_group)
        .send()
        .await
        .expect("DescribeTargetHealth");
    let web_ids: BTreeSet<String> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == "web")
        .filter_map(|n| n["instanceId"].as_str().map(str::to_string))
        .collect();
    let registered: BTreeSet<String> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
        .collect();
    assert_eq!(web_ids.len(), 2);
    assert_eq!(registered, web_ids);

    // The API shows spec, five nodes with tier/state/zone, conditions and the action log.
    assert_eq!(
        cluster["nodes"].as_array().map(Vec::len),
        Some(5),
        "{cluster:#}"
    );
    assert_eq!(
        cluster["conditions"]["webTargetsHealthy"], "2/2",
        "{cluster:#}"
    );
    assert_eq!(cluster["spec"]["db"]["count"], 3);
    let actions: Vec<&str> = cluster["recentActions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "RunInstances").count(),
        5,
        "{actions:?}"
    );
    assert!(
        actions.contains(&"RegisterTargets") && actions.contains(&"Ready"),
        "{actions:?}"
    );

    // The cluster's admin password exists in Secrets Manager, and nowhere else: not in any
    // DynamoDB item, not in the API's answer, not in any function's log.
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let secret_name = format!("ha-orchestrator/{id}/cluster-admin");
    let password = secrets
        .get_secret_value()
        .secret_id(&secret_name)
        .send()
        .await
        .expect("the cluster's admin secret exists")
        .secret_string()
        .expect("a string secret")
        .to_string();
    assert!(password.len() >= 32, "a strong generated password");
    let scan = dynamodb
        .scan()
        .table_name(&table)
        .send()
        .await
        .expect("Scan");
    assert!(
        !format!("{:?}", scan.items()).contains(&password),
        "the password is in DynamoDB"
    );
    assert!(
        !cluster.to_string().contains(&password),
        "the password is in the API answer"
    );
    assert!(
        !cloud.function_logs().contains(&password),
        "the password is in a function log"
    );

    // A launch task run again (a crash and retry) launches nothing.
    let token = dynamodb
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CLUSTER#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("META".into()),
        )
        .send()
        .await
        .expect("GetItem")
        .item()
        .and_then(|i| i.get("lease_token"))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("lease token");
    let again = cloud
        .invoke(
            &stack,
            "ProvisionFunction",
            &serde_json::json!({"task": "launch", "ctx": {"clusterId": id, "generation": 1, "reason": "create"}, "leaseToken": token}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.function_error, None, "{:?}", again.payload);
    assert!(
        again.payload["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("launched 0"),
        "{:?}",
        again.payload
    );
    assert_eq!(
        cluster_instances(&ec2, &id, &["pending", "running"])
            .await
            .len(),
        5
    );

    // DELETE: no instance running, no target registered, nothing left but a tombstone.
    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
    assert!(
        cluster_instances(&ec2, &id, &NOT_TERMINATED)
            .await
            .is_empty()
    );
    let groups = elbv2
        .describe_target_groups()
        .names(format!("ha-{id}"))
        .send()
        .await;
    assert!(
        groups.map(|g| g.target_groups().is_empty()).unwrap_or(true),
        "the cluster's target group is still there"
    );
    let secret = secrets
        .describe_secret()
        .secret_id(&secret_name)
        .send()
        .await;
    assert!(
        secret.is_err() || secret.as_ref().is_ok_and(|s| s.deleted_date().is_some()),
        "the cluster's secret outlived it: {secret:?}"
    );
    let items = dynamodb
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CLUSTER#{id}")),
        )
        .send()
        .await
        .expect("Query");
    let sort_keys: Vec<&str> = items
        .items()
        .iter()
        .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str))
        .collect();
    assert_eq!(sort_keys, ["META"], "only the tombstone remains");
    let log = dynamodb
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ACTIONS#{id}")),
        )
        .send()
        .await
        .expect("Query");
    assert!(
        log.items().is_empty(),
        "the action log outlived the cluster"
    );
    let (status, list) = send_json(Method::GET, &format!("{api}/clusters"), None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        list["clusters"],
        serde_json::json!([]),
        "deleted clusters leave the listing"
    );
    // The name is free again.
    let (status, reused) = send_json(
        Method::POST,
        &format!("{api}/clusters"),
        Some(CREATE),
        &[("idempotency-key", "e2e-create-2")],
    )
    .await;
    assert_eq!(status, 202, "{reused}");
}

#[tokio::test]
async fn a_terminal_error_fails_the_cluster_with_its_phase_and_delete_still_cleans_up() {
    // The stack names an AMI parameter that does not exist: only the launch step can tell.
    let (_cloud, stack, _agent) =
        deployed_with_agent_and("failing", &[("AmiParameter", "/ha-test/missing-ami")]).await;
    let api = stack.api_url.clone().expect("ApiId output");
    // A subnet that does not exist is refused up front, naming it (EC2 is asked).
    let unknown_subnet = r#"{"name":"broken","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"},"subnets":["subnet-0000000000dead00"]}"#;
    let (status, refused) = send_json(
        Method::POST,
        &format!("{api}/clusters"),
        Some(unknown_subnet),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused.to_string().contains("subnet-0000000000dead00"),
        "{refused}"
    );
    let body = r#"{"name":"broken","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#;
    let (status, created) =
        send_json(Method::POST, &format!("{api}/clusters"), Some(body), &[]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let failed = wait_for_phase(&api, &id, &["FAILED", "READY"], Duration::from_secs(120)).await;
    assert_eq!(failed["phase"], "FAILED", "{failed:#}");
    assert_eq!(failed["lastError"]["phase"], "launch", "{failed:#}");
    let message = failed["lastError"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/ha-test/missing-ami") && message.contains("AmiParameter"),
        "{message}"
    );
    let actions: Vec<&str> = failed["recentActions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(actions.contains(&"Failed"), "{actions:?}");
    assert!(!actions.contains(&"RunInstances"), "{actions:?}");

    delete_and_wait(&api, &id, Duration::from_secs(120)).await;
    let (status, again) =
        send_json(Method::DELETE, &format!("{api}/clusters/{id}"), None, &[]).await;
    assert_eq!(status, 410, "{again}");
}

#[tokio::test]
async fn a_delete_racing_the_create_wins_and_leaves_nothing() {
    let (cloud, stack, _agent) = deployed_with_agent("racing").await;
    let api = stack.api_url.clone().expect("ApiId output");
    let ec2 = aws_sdk_ec2::Client::new(&cloud.sdk_config().await);
    let (status, created) =
        send_json(Method::POST, &format!("{api}/clusters"), Some(CREATE), &[]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    // Delete while the create run holds the cluster's lease.
    wait_for_phase(
        &api,
        &id,
        &["PROVISIONING", "READY"],
        Duration::from_secs(60),
    )
    .await;
    delete_and_wait(&api, &id, Duration::from_secs(120)).await;
    assert!(
        cluster_instances(&ec2, &id, &NOT_TERMINATED)
            .await
            .is_empty(),
        "instances outlived the deleted cluster"
    );
    // A task of the superseded create run, arriving late, is refused: fencing.
    let late = cloud
        .invoke(
            &stack,
            "ProvisionFunction",
            &serde_json::json!({"task": "check-running", "ctx": {"clusterId": id, "generation": 1, "reason": "create"}, "leaseToken": 1}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        late.payload["errorType"],
        orchestrator::error::ERROR_TYPE_SUPERSEDED,
        "{:?}",
        late.payload
    );
}
