//! Scaling end to end in the local cloud: a cluster's web alarm going to ALARM (published
//! as CloudWatch publishes it) adds one web node; a second alarm inside the cooldown changes
//! nothing; `PATCH /clusters/{id}` scales in, deregistering before terminating; counts
//! outside the bounds are refused with the bounds. An alarm that stays in ALARM keeps
//! stepping, one step per cooldown, up to the bound, through the stack's recheck schedule.

use std::time::Duration;

use e2e_tests::{
    action_lines, delete_and_wait, deployed_with_agent, deployed_with_agent_and, instance_state,
    send_json, wait_for_ready_at,
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

/// Plays the ALB's part for one target group: publishes its `RequestCountPerTarget` (the
/// metric the cluster's alarms watch) every 10 s, for the current minute and, at the start,
/// the two before, so the 3-minute high alarm sees a breach at once. fakecloud's ALB
/// publishes no metrics; CloudWatch itself refuses `AWS/` namespaces to customers, so this
/// only works against the local cloud, where it stands in for the ALB. fakecloud evaluates
/// alarms on DescribeAlarms (`fakecloud-cloudwatch` `alarm_eval.rs`): the alarms then
/// change state from these datapoints as CloudWatch's would.
async fn sustain_load(
    cloudwatch: aws_sdk_cloudwatch::Client,
    dimension: String,
    requests_per_target: f64,
) -> tokio::task::JoinHandle<()> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let publish = move |minutes_ago: u64| {
        let (cloudwatch, dimension) = (cloudwatch.clone(), dimension.clone());
        async move {
            let at = std::time::SystemTime::now() - Duration::from_secs(60 * minutes_ago);
            cloudwatch
                .put_metric_data()
                .namespace("AWS/ApplicationELB")
                .metric_data(
                    MetricDatum::builder()
                        .metric_name("RequestCountPerTarget")
                        .dimensions(
                            Dimension::builder()
                                .name("TargetGroup")
                                .value(dimension)
                                .build(),
                        )
                        .timestamp(DateTime::from(at))
                        .value(requests_per_target)
                        .unit(StandardUnit::Count)
                        .build(),
                )
                .send()
                .await
                .expect("PutMetricData");
        }
    };
    // The last three minutes before this returns, so the alarm is in ALARM from now on.
    for minutes_ago in [2, 1, 0] {
        publish(minutes_ago).await;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            publish(0).await;
        }
    })
}

/// The alarm's state as CloudWatch reports it now.
async fn alarm_state(cloudwatch: &aws_sdk_cloudwatch::Client, name: &str) -> String {
    let described = cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .expect("DescribeAlarms");
    described
        .metric_alarms()
        .first()
        .and_then(|a| a.state_value())
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| panic!("no alarm {name}"))
}

/// The action that started generation `generation`'s scaling run.
fn scale_request(cluster: &serde_json::Value, generation: u64) -> String {
    action_lines(cluster)
        .into_iter()
        .find(|a| {
            a.starts_with("ScaleRequested") && a.ends_with(&format!("generation {generation}"))
        })
        .unwrap_or_else(|| panic!("no ScaleRequested for g{generation}: {cluster:#}"))
}

/// READY at exactly `generation` with `web` web nodes.
async fn settled_at(api: &str, id: &str, generation: u64, web: u64) -> serde_json::Value {
    let cluster = wait_for_ready_at(api, id, generation).await;
    assert_eq!(cluster["phase"], "READY", "{cluster:#}");
    assert_eq!(cluster["generation"], generation, "{cluster:#}");
    assert_eq!(cluster["spec"]["web"]["count"], web, "{cluster:#}");
    assert_eq!(web_ids(&cluster).len() as u64, web, "{cluster:#}");
    cluster
}

/// The recheck is run by the stack's own schedule (`ScalingRecheckSchedule`, rate(1 minute);
/// fakecloud fires rate schedules), not invoked by the test: the rule, the Scheduled Event,
/// DescribeAlarms and the cooldown are all on the path. Without the recheck, the low half
/// ends at g1 (no alarm event is ever published for it) and the high half at g4.
#[tokio::test]
async fn an_alarm_that_stays_in_alarm_steps_again_after_each_cooldown_up_to_the_bound() {
    let (cloud, stack, _agent) =
        deployed_with_agent_and("scaling-sustained", &[("ScaleCooldownSeconds", "20")]).await;
    let api = stack.api_url.clone().expect("ApiId output");
    let id = e2e_tests::create_cluster(
        &api,
        r#"{"name":"sustained","web":{"count":4,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"},"scaling":{"minWeb":2,"maxWeb":4}}"#,
        "e2e-scale-sustained",
    )
    .await;
    let created = wait_for_ready_at(&api, &id, 1).await;
    assert_eq!(created["phase"], "READY", "{created:#}");
    let low = format!("ha-{id}-web-low");
    let high = format!("ha-{id}-web-high");
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&cloud.sdk_config().await);

    // No traffic: the low alarm is in ALARM (missing data counts as breaching) and stays
    // there, with no further state change and so no event. The recheck steps in once per
    // cooldown, down to the minimum, and then says why it stops.
    assert_eq!(alarm_state(&cloudwatch, &low).await, "ALARM");
    wait_for_ready_at(&api, &id, 2).await;
    let at_min = settled_at(&api, &id, 3, 2).await;
    for (generation, step) in [(2, "web 4 -> 3"), (3, "web 3 -> 2")] {
        let action = scale_request(&at_min, generation);
        assert!(
            action.contains(&format!("{step} by alarm {low}"))
                && action.contains("sustained breach"),
            "{action}"
        );
    }
    cloud
        .wait_for_log_line(
            &["alarm still in ALARM rechecked", &low, "at the bound"],
            Duration::from_secs(150),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A sustained load: the high alarm goes to ALARM (its one state-change event, published
    // as CloudWatch would) and stays there. The event adds one node; the recheck adds the
    // next after the cooldown, up to the maximum, where it stops and says so.
    let target_group = created["targetGroupArn"].as_str().expect("targetGroupArn");
    let dimension = target_group[target_group.find("targetgroup/").expect("arn")..].to_string();
    let load = sustain_load(cloudwatch.clone(), dimension, 5000.0).await;
    alarm(&cloud, &id, "high").await;
    // fakecloud evaluates on DescribeAlarms from the minute buckets; a publish just before a
    // minute boundary shows up one bucket short, so allow the next publishes to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while alarm_state(&cloudwatch, &high).await != "ALARM" {
        assert!(
            std::time::Instant::now() < deadline,
            "{high} never went to ALARM under load"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(alarm_state(&cloudwatch, &low).await, "OK");
    wait_for_ready_at(&api, &id, 4).await;
    let at_max = settled_at(&api, &id, 5, 4).await;
    let by_event = scale_request(&at_max, 4);
    assert!(
        by_event.contains(&format!("web 2 -> 3 by alarm {high}")),
        "{by_event}"
    );
    let sustained = scale_request(&at_max, 5);
    assert!(
        sustained.contains(&format!("web 3 -> 4 by alarm {high}"))
            && sustained.contains("sustained breach"),
        "{sustained}"
    );
    cloud
        .wait_for_log_line(
            &["alarm still in ALARM rechecked", &high, "at the bound"],
            Duration::from_secs(150),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, settled) = send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
    assert_eq!(
        settled["generation"], 5,
        "a step past the bound: {settled:#}"
    );
    load.abort();

    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
}
