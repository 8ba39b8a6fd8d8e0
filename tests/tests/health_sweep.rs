//! The scheduled health sweep end to end in the local cloud: while no web target is healthy
//! the cluster's listener rule sends its host to the maintenance page, and back once one is,
//! and no web node is replaced (the health check queries the database: with no healthy peer
//! the fault is not shown to be the node's; shared/src/tasks/healing); a database member that
//! left its group while its instance runs is found by the membership survey and rejoined.
//!
//! fakecloud's ALB health-checks every instance target at 127.0.0.1:<port>, where the
//! harness's web stand-in answers; `WebStandIn::set_healthy(false)` makes the web tier fail
//! its health checks as a broken nginx would. The stack is deployed with a 4 s
//! `UnhealthyReplaceSeconds` so the test needs no five-minute wait.

use std::time::Duration;

use e2e_tests::{
    action_lines, delete_and_wait, deployed_with_agent_and, send_json, wait_for_ready_at,
};
use local_cloud::{LocalCloud, Stack};
use reqwest::Method;

const CREATE: &str = r#"{"name":"sweep","web":{"count":1,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;
const UNHEALTHY_REPLACE_SECONDS: u64 = 4;

async fn sweep(cloud: &LocalCloud, stack: &Stack) {
    let tick = e2e_tests::invoke_sweep(cloud, stack).await;
    assert_eq!(tick.function_error, None, "{:?}", tick.payload);
}

async fn get_cluster(api: &str, id: &str) -> serde_json::Value {
    let (status, cluster) =
        send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
    assert_eq!(status, 200, "{cluster}");
    cluster
}

fn web_instance(cluster: &serde_json::Value) -> String {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["slot"] == "web-0")
        .and_then(|n| n["instanceId"].as_str())
        .unwrap_or_else(|| panic!("no web-0 instance in {cluster:#}"))
        .to_string()
}

/// Wait until the target group reports `instance_id` in `state`.
async fn wait_for_target(
    elbv2: &aws_sdk_elasticloadbalancingv2::Client,
    target_group_arn: &str,
    instance_id: &str,
    state: &str,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let health = elbv2
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .expect("DescribeTargetHealth");
        let now = health
            .target_health_descriptions()
            .iter()
            .find(|d| d.target().and_then(|t| t.id()) == Some(instance_id))
            .and_then(|d| d.target_health()?.state())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if now == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{instance_id} is {now:?}, not {state}, after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The weights (cluster target group, status target group) of the cluster's rule.
async fn rule_weights(
    elbv2: &aws_sdk_elasticloadbalancingv2::Client,
    listener_arn: &str,
    target_group_arn: &str,
    status_target_group_arn: &str,
) -> (i32, i32) {
    let rules = elbv2
        .describe_rules()
        .listener_arn(listener_arn)
        .send()
        .await
        .expect("DescribeRules");
    let forward = rules
        .rules()
        .iter()
        .flat_map(|r| r.actions())
        .filter_map(|a| a.forward_config())
        .find(|f| {
            f.target_groups()
                .iter()
                .any(|t| t.target_group_arn() == Some(target_group_arn))
        })
        .unwrap_or_else(|| panic!("no rule forwards to {target_group_arn}: {rules:#?}"));
    let weight = |arn: &str| {
        forward
            .target_groups()
            .iter()
            .find(|t| t.target_group_arn() == Some(arn))
            .and_then(|t| t.weight())
            .unwrap_or_else(|| panic!("{arn} has no weight in {forward:#?}"))
    };
    (weight(target_group_arn), weight(status_target_group_arn))
}

fn count(cluster: &serde_json::Value, action: &str) -> usize {
    action_lines(cluster)
        .iter()
        .filter(|line| line.starts_with(&format!("{action} ")))
        .count()
}

#[tokio::test]
async fn the_sweep_serves_maintenance_and_replaces_nothing_while_no_web_target_passes_and_rejoins_a_member()
 {
    let (cloud, stack, agent) = deployed_with_agent_and(
        "sweep",
        &[
            (
                "UnhealthyReplaceSeconds",
                &UNHEALTHY_REPLACE_SECONDS.to_string(),
            ),
            ("ReplaceWindowSeconds", "3600"),
            ("MembershipSurveySeconds", "0"),
        ],
    )
    .await;
    let api = stack.api_url.clone().expect("ApiId output");
    let listener_arn = stack
        .physical_id("HttpListener")
        .expect("listener")
        .to_string();
    let status_tg = stack
        .physical_id("StatusTargetGroup")
        .expect("status target group")
        .to_string();
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&cloud.sdk_config().await);

    let id = e2e_tests::create_cluster(&api, CREATE, "e2e-sweep-1").await;
    let ready = wait_for_ready_at(&api, &id, 1).await;
    assert_eq!(ready["phase"], "READY", "{ready:#}");
    let tg = ready["targetGroupArn"]
        .as_str()
        .expect("targetGroupArn")
        .to_string();
    let first = web_instance(&ready);

    // 1. All healthy: the sweep changes nothing; the rule serves the web targets.
    sweep(&cloud, &stack).await;
    assert_eq!(
        rule_weights(&elbv2, &listener_arn, &tg, &status_tg).await,
        (1, 0)
    );
    assert_eq!(get_cluster(&api, &id).await["generation"], 1);

    // 2. The web tier fails its health checks. The first sweep that sees it routes the host
    // to the maintenance page (no healthy target left); it replaces nothing.
    cloud.web().set_healthy(false);
    wait_for_target(&elbv2, &tg, &first, "unhealthy").await;
    sweep(&cloud, &stack).await;
    let seen = get_cluster(&api, &id).await;
    assert_eq!(seen["generation"], 1, "{seen:#}");
    assert_eq!(count(&seen, "MaintenanceOn"), 1, "{seen:#}");
    assert_eq!(
        rule_weights(&elbv2, &listener_arn, &tg, &status_tg).await,
        (0, 1)
    );

    // 3. Still failing long past the threshold, and no web target passes: the health check
    // queries the database, so a failure on every node points at what they share, and a new
    // node would fail the same way. The sweep fails open: no replacement, however many
    // sweeps see it (shared/src/tasks/healing, `may_replace_unhealthy`; replacing a node while
    // a peer passes is covered by the healing unit tests: this harness's web stand-in
    // answers for every target at once).
    tokio::time::sleep(Duration::from_secs(UNHEALTHY_REPLACE_SECONDS + 1)).await;
    for _ in 0..3 {
        sweep(&cloud, &stack).await;
    }
    let held = get_cluster(&api, &id).await;
    assert_eq!(held["phase"], "READY", "{held:#}");
    assert_eq!(
        held["generation"], 1,
        "replaced with no healthy peer: {held:#}"
    );
    assert_eq!(web_instance(&held), first);
    assert_eq!(count(&held, "TargetUnhealthy"), 0, "{held:#}");
    assert_eq!(count(&held, "MaintenanceOn"), 1, "{held:#}");
    assert!(
        action_lines(&held)
            .iter()
            .any(|l| l.starts_with("MaintenanceOn ") && l.contains("no web node is replaced")),
        "{held:#}"
    );
    assert_eq!(
        rule_weights(&elbv2, &listener_arn, &tg, &status_tg).await,
        (0, 1)
    );

    // 4. The node passes again (the shared cause is gone): the next sweep takes the
    // maintenance page away; the node was kept.
    cloud.web().set_healthy(true);
    wait_for_target(&elbv2, &tg, &first, "healthy").await;
    sweep(&cloud, &stack).await;
    let serving = get_cluster(&api, &id).await;
    assert_eq!(count(&serving, "MaintenanceOff"), 1, "{serving:#}");
    assert_eq!(serving["generation"], 1, "{serving:#}");
    assert_eq!(
        rule_weights(&elbv2, &listener_arn, &tg, &status_tg).await,
        (1, 0)
    );
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    // 6. The membership survey: a SECONDARY's instance keeps running but the member
    // leaves the group (mysqld restarted without Group Replication). The sweep's survey
    // finds it and a converge run rejoins it; the node keeps its instance.
    let before = get_cluster(&api, &id).await;
    let secondary = db_node(&before, "SECONDARY");
    let (slot, host, instance) = (
        secondary["slot"].as_str().expect("slot").to_string(),
        secondary["host"].as_str().expect("host").to_string(),
        secondary["instanceId"]
            .as_str()
            .expect("instance")
            .to_string(),
    );
    agent
        .take_member_offline(&id, &host)
        .unwrap_or_else(|e| panic!("take {host} offline: {e}"));
    let surveys_before = surveys(&agent, &id);
    sweep(&cloud, &stack).await;
    let rejoined = wait_for_ready_at(&api, &id, 2).await;
    assert_eq!(rejoined["phase"], "READY", "{rejoined:#}");
    assert!(surveys(&agent, &id) > surveys_before, "no survey was sent");
    let lines = action_lines(&rejoined);
    assert!(
        lines.iter().any(|l| l.starts_with("MemberOutOfGroup ")
            && l.contains(&format!("{slot} reports OFFLINE"))),
        "{lines:#?}"
    );
    let node = rejoined["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["slot"] == slot.as_str())
        .expect("the node");
    assert_eq!(
        node["instanceId"],
        instance.as_str(),
        "rejoined, not replaced"
    );
    assert_eq!(node["memberState"], "ONLINE", "{rejoined:#}");
    let rejoins: Vec<_> = agent
        .ran()
        .into_iter()
        .filter(|r| r.cluster_id == id && r.document == "DbAddInstance")
        .filter(|r| r.parameters.iter().any(|(k, v)| k == "node" && *v == host))
        .collect();
    assert_eq!(
        rejoins.len(),
        2,
        "one add at create, one rejoin: {rejoins:#?}"
    );
    // The rejoined member first reports RECOVERING: the run waits and inspects again
    // rather than failing or declaring the group whole.
    let ran = agent.ran();
    let rejoin_at = ran
        .iter()
        .rposition(|r| r.cluster_id == id && r.document == "DbAddInstance")
        .expect("the rejoin ran");
    let mut inspections: Vec<&str> = ran[rejoin_at..]
        .iter()
        .filter(|r| r.cluster_id == id && r.document == "DbReport")
        .map(|r| r.command_id.as_str())
        .collect();
    inspections.dedup();
    assert!(
        inspections.len() >= 2,
        "one inspection saw RECOVERING, a later one ONLINE: {inspections:?}"
    );
    // A whole group: the next survey changes nothing.
    sweep(&cloud, &stack).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(get_cluster(&api, &id).await["generation"], 2);
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    delete_and_wait(&api, &id, Duration::from_secs(240)).await;
}

fn db_node<'a>(cluster: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["tier"] == "db" && n["role"] == role)
        .unwrap_or_else(|| panic!("no {role} in {cluster:#}"))
}

/// DbReport commands the sweep's surveys sent to the cluster (runs send them too, but no
/// run is going on when this is counted).
fn surveys(agent: &local_cloud::agent::SsmAgent, id: &str) -> usize {
    let mut commands: Vec<String> = agent
        .ran()
        .into_iter()
        .filter(|r| r.cluster_id == id && r.document == "DbReport")
        .map(|r| r.command_id)
        .collect();
    commands.sort();
    commands.dedup();
    commands.len()
}
