//! Fixtures the healing tests share: a cluster, its nodes, and a [`Healer`] on mocked
//! clients.

use crate::aws::commands::{CommandSettings, Commands};
use crate::aws::fleet::Instances;
use crate::aws::health_metrics::TargetHealthMetrics;
use crate::aws::store::ClusterStore;
use crate::aws::targets::{TargetSettings, WebTargets};
use crate::aws::workflow::Workflow;
use crate::domain::cluster::{Cluster, Node, NodeState, Tier};
use crate::mocked_client;
use crate::tasks::healing::{Healer, HealthPolicy};
use crate::tasks::runs::Runs;
use crate::tasks::survey::MembershipSurvey;
use aws_smithy_mocks::{Rule, mock};

/// The cluster every healing test is about.
pub(super) const ID: &str = "c-0123456789ab";
/// Its web target group.
pub(super) const TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/ha-c-0123456789ab/1";

/// A running node in `slot`, its instance `i-<slot>`.
pub(super) fn node(slot: &str, tier: Tier) -> Node {
    Node {
        slot: slot.into(),
        tier,
        instance_id: Some(format!("i-{slot}")),
        state: NodeState::Running,
        availability_zone: Some("us-east-1a".into()),
        subnet_id: None,
        role: None,
        target_health: None,
        host: None,
        member_state: None,
        group_name: None,
        launch_token: None,
        updated_at: "2026-11-24T00:00:00Z".into(),
    }
}

/// A READY cluster of [`ID`] with web nodes in `web` slots and one database node.
pub(super) fn cluster(web: &[&str]) -> Cluster {
    let spec = crate::domain::spec::ClusterSpec::from_request_body(
        br#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#,
    )
    .unwrap();
    let mut nodes: Vec<Node> = web.iter().map(|slot| node(slot, Tier::Web)).collect();
    nodes.push(node("db-0", Tier::Db));
    Cluster {
        id: ID.into(),
        phase: crate::domain::cluster::Phase::Ready,
        step: Some("finish".into()),
        spec,
        generation: 2,
        version: 9,
        created_at: "2026-11-24T00:00:00Z".into(),
        updated_at: "2026-11-24T00:00:00Z".into(),
        last_error: None,
        target_group_arn: Some(TG.into()),
        replacing: Vec::new(),
        nodes,
        actions: Vec::new(),
    }
}

/// A [`Healer`] on these DynamoDB, Step Functions and ELBv2 clients; every other client
/// has no rule, so a call to it fails the test.
pub(super) fn healer_with(
    dynamodb: aws_sdk_dynamodb::Client,
    sfn: aws_sdk_sfn::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
) -> Healer {
    let store = ClusterStore::new(dynamodb, "table");
    let workflow = Workflow::new(sfn, "arn:aws:states:us-east-1:1:stateMachine:cluster");
    Healer {
        store: store.clone(),
        runs: Runs::new(store.clone(), workflow.clone()),
        instances: Instances::new(mocked_client!(aws_sdk_ec2, [])),
        targets: WebTargets::new(
            elbv2,
            TargetSettings {
                vpc_id: "vpc-1".into(),
                listener_arn: "arn:listener".into(),
                status_target_group_arn: "arn:status".into(),
                web_port: 80,
                health_check_path: "/healthz".into(),
            },
        ),
        metrics: TargetHealthMetrics::new(mocked_client!(aws_sdk_cloudwatch, []), "arn:listener"),
        survey: MembershipSurvey {
            runs: Runs::new(store.clone(), workflow),
            store,
            commands: Commands::new(
                mocked_client!(aws_sdk_ssm, []),
                mocked_client!(aws_sdk_s3, []),
                CommandSettings {
                    document_prefix: "ha".into(),
                    output_bucket: "bucket".into(),
                },
            ),
        },
        policy: HealthPolicy::default(),
    }
}

/// A [`Healer`] on these DynamoDB and Step Functions clients (no load balancer call).
pub(super) fn healer_on(dynamodb: aws_sdk_dynamodb::Client, sfn: aws_sdk_sfn::Client) -> Healer {
    healer_with(
        dynamodb,
        sfn,
        mocked_client!(aws_sdk_elasticloadbalancingv2, []),
    )
}

/// StartExecution of the healing run of `cluster_id` at `generation`, answered as started.
pub(super) fn started(cluster_id: &str, generation: u64) -> Rule {
    let name = format!("{cluster_id}-g{generation}-heal");
    mock!(aws_sdk_sfn::Client::start_execution)
        .match_requests(move |r| r.name() == Some(name.as_str()))
        .then_output(|| {
            aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
                .execution_arn("arn:aws:states:us-east-1:1:execution:cluster:run")
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .unwrap()
        })
}
