//! Scaling end to end in the local cloud: a cluster's web alarm going to ALARM (published
//! as CloudWatch publishes it) adds one web node; a second alarm inside the cooldown changes
//! nothing; `PATCH /clusters/{id}` scales in, deregistering before terminating; counts
//! outside the bounds are refused with the bounds.

use std::time::Duration;

use e2e_tests::{
    action_lines, delete_and_wait, deployed_with_agent, instance_state, send_json,
    wait_for_ready_at,
};
use local_cloud::LocalCloud;
use reqwest::Method;

const CREATE: &str = r#"{"name":"scale","web":{"count":2,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#;

async fn alarm(cloud: &LocalCloud, id: &str, which: &str) {
    let name = format!("ha-{id}-web-{which}");
    cloud
        .publish_event(
            "aws.cloudwatch",
            "CloudWatch Alarm State Change",
            &serde_json::json!({
                "alarmName": name,
                "state": {"value": "ALARM", "reason": "Threshold Crossed", "timestamp": "2026-11-24T04:00:00.000+0000"},
                "previousState": {"value": "OK", "reason": "", "timestamp": "2026-11-24T03:55:00.000+0000"},
            }),
            &[format!("arn:aws:cloudwatch:us-east-1:000000000000:alarm:{name}")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The cluster's scaling alarms: (name, metric, TargetGroup dimension, threshold).
async fn scaling_alarms(cloud: &LocalCloud, id: &str) -> Vec<(String, String, String, f64)> {
    let described = aws_sdk_cloudwatch::Client::new(&cloud.sdk_config().await)
        .describe_alarms()
        .alarm_name_prefix(format!("ha-{id}-web-"))
        .send()
        .await
        .expect("DescribeAlarms");
    let mut alarms: Vec<_> = described
        .metric_alarms()
        .iter()
        .map(|a| {
            (
                a.alarm_name().unwrap_or_default().to_string(),
                a.metric_name().unwrap_or_default().to_string(),
                a.dimensions()
                    .iter()
                    .find(|d| d.name() == Some("TargetGroup"))
                    .and_then(|d| d.value())
                    .unwrap_or_default()
                    .to_string(),
                a.threshold().unwrap_or_default(),
            )
        })
        .collect();
    alarms.sort_by(|a, b| a.0.cmp(&b.0));
    alarms
}

fn web_ids(cluster: &serde_json::Value) -> Vec<String> {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == "web")
        .filter_map(|n| n["instanceId"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn alarms_and_patch_scale_the_web_tier_within_bounds_and_cooldown() {
    let (cloud, stack, _agent) = deployed_with_agent("scaling").await;
    let api = stack.api_url.clone().expect("ApiId output");
    let id = e2e_tests::create_cluster(&api, CREATE, "e2e-scale-1").await;
    let ready = wait_for_ready_at(&api, &id, 1).await;
    assert_eq!(ready["phase"], "READY", "{ready:#}");

    // The cluster has its two alarms on its target group's RequestCountPerTarget, with the
    // stack's default thresholds.
    let target_group = ready["targetGroupArn"].as_str().expect("targetGroupArn");
    let dimension = &target_group[target_group.find("targetgroup/").expect("arn")..];
    let metric = "RequestCountPerTarget".to_string();
    assert_eq!(
        scaling_alarms(&cloud, &id).await,
        vec![
            (
                format!("ha-{id}-web-high"),
                metric.clone(),
                dimension.to_string(),
                1000.0
            ),
            (
                format!("ha-{id}-web-low"),
                metric,
                dimension.to_string(),
                100.0
            ),
        ]
    );

    // The high alarm adds one web node.
    alarm(&cloud, &id, "high").await;
    let out = wait_for_ready_at(&api, &id, 2).await;
    assert_eq!(out["phase"], "READY", "{out:#}");
    assert_eq!(out["spec"]["web"]["count"], 3, "{out:#}");
    assert_eq!(web_ids(&out).len(), 3, "{out:#}");
    assert_eq!(out["conditions"]["webTargetsHealthy"], "3/3", "{out:#}");

    // Again inside the cooldown: nothing changes.
    alarm(&cloud, &id, "high").await;
    cloud
        .wait_for_log_line(
            &["alarm state change handled", "cooldown"],
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, same) = send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
    assert_eq!(same["generation"], 2, "{same:#}");
    assert_eq!(same["spec"]["web"]["count"], 3);

    // Out of bounds and malformed: refused with what to send.
    let patch = |body: &'static str| {
        let url = format!("{api}/clusters/{id}");
        async move { send_json(Method::PATCH, &url, Some(body), &[]).await }
    };
    let (status, low) = patch(r#"{"web":{"count":1}}"#).await;
    assert_eq!(status, 400, "{low}");
    assert_eq!(low["error"]["field"], "web.count", "{low}");
    assert!(low.to_string().contains("2 to 20"), "{low}");
    let (status, unknown) = patch(r#"{"web":{"count":2},"db":{"count":5}}"#).await;
    assert_eq!(status, 400, "{unknown}");
    assert_eq!(unknown["error"]["field"], "db", "{unknown}");

    // Scale in by hand: the newest slot is deregistered, drained, then terminated.
    let newest = out["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["slot"] == "web-2")
        .and_then(|n| n["instanceId"].as_str())
        .expect("web-2")
        .to_string();
    let (status, accepted) = patch(r#"{"web":{"count":2}}"#).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["web"], serde_json::json!({"from": 3, "to": 2}));
    let scaled_in = wait_for_ready_at(&api, &id, 3).await;
    assert_eq!(scaled_in["phase"], "READY", "{scaled_in:#}");
    assert_eq!(web_ids(&scaled_in).len(), 2);
    assert!(!web_ids(&scaled_in).contains(&newest));
    let actions = action_lines(&scaled_in);
    let deregistered = actions
        .iter()
        .position(|a| a.starts_with("DeregisterTargets") && a.contains(&newest));
    let terminated = actions
        .iter()
        .position(|a| a.starts_with("TerminateRetired") && a.contains(&newest));
    assert!(
        deregistered.is_some() && deregistered < terminated,
        "deregistration must come before termination: {actions:#?}"
    );
    let state = instance_state(
        &aws_sdk_ec2::Client::new(&cloud.sdk_config().await),
        &newest,
    )
    .await;
    assert!(
        ["shutting-down", "terminated"].contains(&state.as_str()),
        "{state}"
    );

    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
    assert_eq!(
        scaling_alarms(&cloud, &id).await,
        vec![],
        "alarms left after DELETE"
    );
}
