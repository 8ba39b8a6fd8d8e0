//! Healing end to end in the local cloud: EC2 state-change events, published as EC2
//! publishes them, replace a lost web node, a lost database SECONDARY and the lost PRIMARY;
//! a duplicated event changes nothing; the sweep finds a loss whose event never came; an
//! operator replaces live nodes; the group stays one group throughout.
//!
//! fakecloud's EC2 runs nothing and emits no events: the test terminates the instance
//! through the API, publishes the event, and lets the stand-in SSM agent play what Group
//! Replication does when a member dies (`SsmAgent::lose_member`).

use std::time::Duration;

use e2e_tests::{delete_and_wait, instance_state, lose_instance, send_json, wait_for_ready_at};
use reqwest::Method;

const CREATE: &str = r#"{"name":"heal","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;

fn node<'a>(cluster: &'a serde_json::Value, slot: &str) -> &'a serde_json::Value {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["slot"] == slot)
        .unwrap_or_else(|| panic!("no {slot} in {cluster:#}"))
}

fn field(node: &serde_json::Value, name: &str) -> String {
    node[name].as_str().unwrap_or_default().to_string()
}

fn one_group(cluster: &serde_json::Value) {
    let db: Vec<&serde_json::Value> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == "db")
        .collect();
    assert_eq!(db.len(), 3, "{cluster:#}");
    let group = field(db[0], "groupName");
    assert!(!group.is_empty(), "{cluster:#}");
    for n in &db {
        assert_eq!(field(n, "groupName"), group, "two groups: {cluster:#}");
        assert_eq!(field(n, "memberState"), "ONLINE", "{cluster:#}");
    }
    let primaries = db.iter().filter(|n| n["role"] == "PRIMARY").count();
    let secondaries = db.iter().filter(|n| n["role"] == "SECONDARY").count();
    assert_eq!((primaries, secondaries), (1, 2), "{cluster:#}");
}

#[tokio::test]
async fn lost_nodes_are_replaced_once_and_the_group_stays_whole() {
    let (cloud, stack, agent) = e2e_tests::deployed_with_real_hosts("healing").await;
    let api = stack.api_url.clone().expect("ApiId output");
    let id = e2e_tests::create_cluster(&api, CREATE, "e2e-heal-1").await;
    let ready = wait_for_ready_at(&api, &id, 1).await;
    assert_eq!(ready["phase"], "READY", "{ready:#}");
    let sdk = cloud.sdk_config().await;
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);

    // 1. A web node: one replacement, registered; the lost target deregistered.
    let old_web = field(node(&ready, "web-0"), "instanceId");
    lose_instance(&cloud, &old_web).await;
    // The same event delivered twice (one id), and again: nothing more happens.
    let mut event = e2e_tests::sample_event("ec2-instance-terminated.json");
    event["id"] = "e2e-duplicated-delivery".into();
    event["detail"]["instance-id"] = old_web.clone().into();
    for _ in 0..2 {
        let answer = cloud
            .invoke(&stack, "InstanceEventsFunction", &event)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.function_error, None, "{:?}", answer.payload);
    }
    cloud
        .wait_for_log_line(
            &["instance state change handled", "Duplicate"],
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let healed = wait_for_ready_at(&api, &id, 2).await;
    assert_eq!(healed["phase"], "READY", "{healed:#}");
    assert_eq!(healed["generation"], 2, "one healing run: {healed:#}");
    let new_web = field(node(&healed, "web-0"), "instanceId");
    assert_ne!(new_web, old_web);
    let targets = elbv2
        .describe_target_health()
        .target_group_arn(healed["targetGroupArn"].as_str().expect("target group"))
        .send()
        .await
        .expect("DescribeTargetHealth");
    let registered: Vec<&str> = targets
        .target_health_descriptions()
        .iter()
        .filter_map(|t| t.target().and_then(|t| t.id()))
        .collect();
    assert!(registered.contains(&new_web.as_str()), "{registered:?}");
    assert!(!registered.contains(&old_web.as_str()), "{registered:?}");
    let lost_actions = healed["recentActions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "InstanceLost")
        .count();
    assert_eq!(lost_actions, 1, "{healed:#}");
    one_group(&healed);

    // 2. A database SECONDARY: removed from the group, its replacement added.
    let secondary = ["db-1", "db-2"]
        .into_iter()
        .find(|s| node(&healed, s)["role"] == "SECONDARY")
        .expect("a secondary");
    let old = node(&healed, secondary);
    let (old_id, old_host) = (field(old, "instanceId"), field(old, "host"));
    agent.lose_member(&id, &old_host).expect("lose member");
    lose_instance(&cloud, &old_id).await;
    let healed = wait_for_ready_at(&api, &id, 3).await;
    assert_eq!(healed["phase"], "READY", "{healed:#}");
    assert_ne!(field(node(&healed, secondary), "instanceId"), old_id);
    assert_eq!(node(&healed, secondary)["role"], "SECONDARY");
    one_group(&healed);
    let removed: Vec<_> = agent
        .ran()
        .into_iter()
        .filter(|r| r.cluster_id == id && r.document == "DbRemoveInstance")
        .collect();
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert!(
        removed[0]
            .parameters
            .contains(&("node".into(), old_host.clone()))
    );

    // 3. The PRIMARY: the group elects another; the orchestrator records it, removes the
    // lost member and adds the replacement as a SECONDARY.
    let primary = ["db-0", "db-1", "db-2"]
        .into_iter()
        .find(|s| node(&healed, s)["role"] == "PRIMARY")
        .expect("a primary");
    let old = node(&healed, primary);
    let (old_id, old_host) = (field(old, "instanceId"), field(old, "host"));
    agent.lose_member(&id, &old_host).expect("lose member");
    lose_instance(&cloud, &old_id).await;
    let healed = wait_for_ready_at(&api, &id, 4).await;
    assert_eq!(healed["phase"], "READY", "{healed:#}");
    assert_ne!(field(node(&healed, primary), "instanceId"), old_id);
    assert_eq!(node(&healed, primary)["role"], "SECONDARY", "{healed:#}");
    one_group(&healed);
    let new_primary = ["db-0", "db-1", "db-2"]
        .into_iter()
        .find(|s| node(&healed, s)["role"] == "PRIMARY")
        .expect("a primary");
    assert_ne!(new_primary, primary);
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    // 4. A loss whose event never arrives: the scheduled sweep finds it.
    let missed = field(node(&healed, "web-1"), "instanceId");
    aws_sdk_ec2::Client::new(&sdk)
        .terminate_instances()
        .instance_ids(&missed)
        .send()
        .await
        .expect("TerminateInstances");
    let tick = e2e_tests::invoke_sweep(&cloud, &stack).await;
    assert_eq!(tick.function_error, None, "{:?}", tick.payload);
    let healed = wait_for_ready_at(&api, &id, 5).await;
    assert_eq!(healed["phase"], "READY", "{healed:#}");
    assert_ne!(field(node(&healed, "web-1"), "instanceId"), missed);
    assert!(
        healed["recentActions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["action"] == "InstanceLost"
                && a["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("found by the sweep")),
        "{healed:#}"
    );

    // 5. An operator's replacement: the PRIMARY is refused with what to do; a web node
    // and a database SECONDARY get successors, and the old instances are retired.
    let replace = |instance: &str| format!("{api}/clusters/{id}/nodes/{instance}/replace");
    let old_primary = field(node(&healed, new_primary), "instanceId");
    let (status, refused) = send_json(Method::POST, &replace(&old_primary), None, &[]).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused.to_string().contains("setPrimaryInstance"),
        "{refused}"
    );
    let (status, unknown) =
        send_json(Method::POST, &replace("i-0000000000000000f"), None, &[]).await;
    assert_eq!(status, 404, "{unknown}");
    let mut generation = 5;
    for slot in ["web-1", primary] {
        let before = field(node(&healed, slot), "instanceId");
        let (status, accepted) = send_json(Method::POST, &replace(&before), None, &[]).await;
        assert_eq!(status, 202, "{accepted}");
        generation += 1;
        assert_eq!(accepted["generation"], generation, "{accepted}");
        let replaced = wait_for_ready_at(&api, &id, generation).await;
        assert_eq!(replaced["phase"], "READY", "{replaced:#}");
        assert_ne!(field(node(&replaced, slot), "instanceId"), before);
        one_group(&replaced);
        let state = instance_state(&aws_sdk_ec2::Client::new(&sdk), &before).await;
        assert!(
            ["shutting-down", "terminated"].contains(&state.as_str()),
            "{before} ({slot}) was not retired: {state}"
        );
    }

    // DELETE still cleans up.
    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
}
