//! Concurrency and crashed runs, in the local cloud:
//!
//! - the lease and its fencing token against the deployed table: a second holder is refused
//!   while the lease is live; once it has expired (its holder died) the lease is taken over
//!   with a higher token, and the dead holder's writes are refused; a run of a newer
//!   generation takes over at once and the older run's writes are refused;
//! - through the API: two scales at once, a scale racing a delete, and a create racing its
//!   delete each end in one consistent state (READY with exactly its nodes alive, or
//!   DELETED with nothing left).

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_tests::{cluster_instances, deployed_with_agent, send_json, wait_for_phase};
use orchestrator::aws::store::{ClusterStore, Fence};
use orchestrator::domain::cluster::{Node, NodeState, Tier, now_rfc3339};
use orchestrator::domain::spec::ClusterSpec;
use reqwest::Method;

const RACE: &str = r#"{"name":"race","web":{"count":2,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#;
const BRIEF: &str = r#"{"name":"brief","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#;

fn node(slot: &str) -> Node {
    Node {
        slot: slot.into(),
        tier: Tier::Web,
        instance_id: Some("i-0123456789abcdef0".into()),
        state: NodeState::Pending,
        availability_zone: None,
        subnet_id: None,
        role: None,
        target_health: None,
        host: None,
        member_state: None,
        group_name: None,
        launch_token: None,
        updated_at: now_rfc3339(),
    }
}

async fn alive_instances(ec2: &aws_sdk_ec2::Client, id: &str) -> BTreeSet<String> {
    cluster_instances(ec2, id, &["pending", "running"])
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

fn node_instances(cluster: &serde_json::Value) -> BTreeSet<String> {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["instanceId"].as_str().map(str::to_string))
        .collect()
}

/// Wait until no run is going on (READY, FAILED or DELETED) and no newer one is queued.
async fn quiet(api: &str, id: &str) -> serde_json::Value {
    loop {
        let settled = wait_for_phase(
            api,
            id,
            &["READY", "FAILED", "DELETED"],
            Duration::from_secs(400),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, again) = send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
        if again["phase"] == settled["phase"] && again["generation"] == settled["generation"] {
            return again;
        }
    }
}

#[tokio::test]
async fn leases_fence_stale_holders_and_racing_operations_end_consistent() {
    let (cloud, stack, _agent) = deployed_with_agent("concurrency").await;
    let sdk = cloud.sdk_config().await;
    let store = ClusterStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        stack.outputs["TableName"].clone(),
    );
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let api = stack.api_url.clone().expect("ApiId output");

    // 1. The lease, on a cluster record no workflow runs for.
    let spec = ClusterSpec::from_request_body(
        br#"{"name":"lease","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#,
    )
    .expect("spec");
    let id = "c-0000000000aa";
    store.create_cluster(id, &spec).await.expect("create");
    let first = store
        .acquire_lease(id, "run-a", 1)
        .await
        .expect("a takes it");
    let refused = store.acquire_lease(id, "run-b", 1).await.unwrap_err();
    assert!(
        refused.to_string().contains("held by another run"),
        "{refused}"
    );
    // run-a dies without releasing: its lease runs out (set in the past here, as 15
    // minutes of waiting would).
    aws_sdk_dynamodb::Client::new(&sdk)
        .update_item()
        .table_name(&stack.outputs["TableName"])
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CLUSTER#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("META".into()),
        )
        .update_expression("SET lease_expires = :past")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
        )
        .send()
        .await
        .expect("expire the lease");
    let second = store
        .acquire_lease(id, "run-b", 1)
        .await
        .expect("b takes over");
    assert!(
        second > first,
        "the takeover's token {second} must exceed {first}"
    );
    let stale = store
        .put_node(
            id,
            Fence {
                token: first,
                generation: 1,
            },
            &node("web-0"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            orchestrator::Error::Superseded(_) | orchestrator::Error::Conflict(_)
        ),
        "a dead holder's write must be refused: {stale:?}"
    );
    store
        .put_node(
            id,
            Fence {
                token: second,
                generation: 1,
            },
            &node("web-0"),
        )
        .await
        .expect("the live holder writes");
    // A newer generation (a DELETE while run-b works) takes over at once.
    let generation = store.request_delete(id).await.expect("delete requested");
    let third = store
        .acquire_lease(id, "run-c", generation)
        .await
        .expect("c takes over");
    assert!(third > second);
    let late = store
        .put_node(
            id,
            Fence {
                token: second,
                generation: 1,
            },
            &node("web-0"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            late,
            orchestrator::Error::Superseded(_) | orchestrator::Error::Conflict(_)
        ),
        "the older run's write must be refused: {late:?}"
    );

    // 2. Two scales at once: each is accepted or refused with a conflict; the cluster ends
    // READY at one of the asked counts with exactly its nodes alive.
    let race = e2e_tests::create_cluster(&api, RACE, "e2e-race-1").await;
    let ready = quiet(&api, &race).await;
    assert_eq!(ready["phase"], "READY", "{ready:#}");
    let url = format!("{api}/clusters/{race}");
    let (a, b) = tokio::join!(
        send_json(Method::PATCH, &url, Some(r#"{"web":{"count":3}}"#), &[]),
        send_json(Method::PATCH, &url, Some(r#"{"web":{"count":4}}"#), &[]),
    );
    for (status, body) in [&a, &b] {
        assert!([202, 409].contains(status), "{status} {body}");
    }
    let scaled = quiet(&api, &race).await;
    assert_eq!(scaled["phase"], "READY", "{scaled:#}");
    let count = scaled["spec"]["web"]["count"].as_u64().expect("count");
    assert!([3, 4].contains(&count), "{scaled:#}");
    assert_eq!(alive_instances(&ec2, &race).await, node_instances(&scaled));
    assert_eq!(node_instances(&scaled).len() as u64, count + 1);

    // 3. A scale racing a delete: the delete wins, nothing is left.
    let (scale, delete) = tokio::join!(
        send_json(Method::PATCH, &url, Some(r#"{"web":{"count":2}}"#), &[]),
        send_json(Method::DELETE, &url, None, &[]),
    );
    assert!([202, 409].contains(&scale.0), "{scale:?}");
    assert_eq!(delete.0, 202, "{delete:?}");
    let gone = quiet(&api, &race).await;
    assert_eq!(gone["phase"], "DELETED", "{gone:#}");
    assert!(alive_instances(&ec2, &race).await.is_empty());

    // 4. A create racing its own delete.
    let brief = e2e_tests::create_cluster(&api, BRIEF, "e2e-brief-1").await;
    let (status, deleting) = send_json(
        Method::DELETE,
        &format!("{api}/clusters/{brief}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 202, "{deleting}");
    let gone = quiet(&api, &brief).await;
    assert_eq!(gone["phase"], "DELETED", "{gone:#}");
    // The create's run may still have launched before it was superseded: the delete's
    // teardown finds and terminates what carries the tag.
    assert!(
        alive_instances(&ec2, &brief).await.is_empty(),
        "instances left after a create raced its delete"
    );
}
