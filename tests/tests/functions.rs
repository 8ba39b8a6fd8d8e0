//! Every function of the deployed stack, end to end in the local cloud: invoked with the
//! sample events of its triggers through the Lambda API, and reached through the stack's
//! real EventBridge rules by events published as AWS publishes them.

use std::time::Duration;

use e2e_tests::{deployed, sample_event};
use orchestrator::error::ERROR_TYPE_TERMINAL;

#[tokio::test]
async fn functions_answer_their_triggers_and_rules_route_events_to_them() {
    let (cloud, stack) = deployed("functions").await;

    // alb-target answers the ALB health check.
    let health = cloud
        .invoke(
            &stack,
            "AlbTargetFunction",
            &sample_event("alb-health-check.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(health.function_error, None, "{:?}", health.payload);
    assert_eq!(health.payload["statusCode"], 200, "{:?}", health.payload);

    // A workflow task for a cluster that does not exist fails with the terminal error
    // type the state machine's Catch matches: no retry can make the cluster exist.
    let refused = cloud
        .invoke(
            &stack,
            "ProvisionFunction",
            &sample_event("provision-task-launch.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // AWS labels this `Unhandled`; fakecloud 0.51 says `Handled`. Either way it is an error.
    assert!(refused.function_error.is_some(), "{:?}", refused.payload);
    assert_eq!(
        refused.payload["errorType"], ERROR_TYPE_TERMINAL,
        "{:?}",
        refused.payload
    );

    // Event handlers accept their events, and drop foreign ones without failing (a failure
    // would only make EventBridge retry an event that can never succeed).
    for (function, event) in [
        ("InstanceEventsFunction", "ec2-instance-terminated.json"),
        ("InstanceEventsFunction", "schedule-sweep.json"),
        ("InstanceEventsFunction", "alarm-high-request-count.json"),
        ("ScalingFunction", "alarm-high-request-count.json"),
        ("ScalingFunction", "ec2-instance-terminated.json"),
        ("ReplicationFunction", "ssm-command-success.json"),
    ] {
        let answer = cloud
            .invoke(&stack, function, &sample_event(event))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            answer.function_error, None,
            "{function} with {event}: {:?}",
            answer.payload
        );
    }
    cloud
        .wait_for_log_line(
            &["event dropped", "scaling handles CloudWatch alarm"],
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The stack's rule routes an EC2 state change, published as EC2 publishes it, to
    // instance-events, which ignores an instance that is no cluster's node.
    let instance_id = "i-0e2e000000000rule";
    cloud
        .publish_event(
            "aws.ec2",
            "EC2 Instance State-change Notification",
            &serde_json::json!({ "instance-id": instance_id, "state": "terminated" }),
            &[format!(
                "arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"
            )],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let line = cloud
        .wait_for_log_line(
            &["instance state change handled", instance_id],
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[e2e {}] instance-events logged: {line}",
        e2e_tests::since_start()
    );
    assert!(line.contains("UnknownInstance"), "{line}");

    // The rule's pattern lets only lost states through. Checked with EventBridge's own
    // TestEventPattern on the deployed pattern: fakecloud 0.51 also hands every event on
    // the bus to schedule rules (they have no pattern), so a delivery test cannot tell.
    let events = aws_sdk_eventbridge::Client::new(&cloud.sdk_config().await);
    let rule = stack
        .physical_id("InstanceEventsFunctionInstanceLostRule")
        .expect("the InstanceLost rule is deployed");
    let pattern = events
        .describe_rule()
        .name(rule)
        .send()
        .await
        .expect("DescribeRule")
        .event_pattern()
        .expect("the rule has a pattern")
        .to_string();
    for (state, delivered) in [
        ("terminated", true),
        ("stopped", true),
        ("shutting-down", true),
        ("running", false),
        ("pending", false),
    ] {
        let mut event = sample_event("ec2-instance-terminated.json");
        event["detail"]["state"] = state.into();
        let matched = events
            .test_event_pattern()
            .event_pattern(&pattern)
            .event(event.to_string())
            .send()
            .await
            .expect("TestEventPattern")
            .result();
        assert_eq!(matched, delivered, "InstanceLost rule and state {state}");
    }
}
