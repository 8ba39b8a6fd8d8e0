//! Launch scenarios on mocked EC2, DynamoDB and Secrets Manager: what a converged cluster
//! costs (no mutating call), and a launch token EC2 refuses.

use super::*;
use crate::aws::fleet::{FleetSettings, TAG_CLUSTER, TAG_SLOT};
use crate::aws::targets::TargetSettings;
use crate::domain::cluster::{Node, NodeState};
use crate::domain::spec::{ClusterSpec, TierSpec};
use crate::mocked_client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{RuleMode, mock};

const ID: &str = "c-0123456789ab";

fn spec() -> ClusterSpec {
    ClusterSpec {
        name: "shop".into(),
        web: TierSpec {
            count: 2,
            instance_type: "t3.small".into(),
        },
        db: TierSpec {
            count: 3,
            instance_type: "r6i.large".into(),
        },
        subnets: vec![],
        scaling: None,
        backup: Default::default(),
        restore: None,
    }
}

fn zone(i: usize) -> String {
    format!("us-east-1{}", ["a", "b", "c"][i % 3])
}

/// The cluster as recorded and as EC2 reports it, fully converged: every slot has a
/// running instance and its record says so.
fn converged() -> (
    Vec<std::collections::HashMap<String, AttributeValue>>,
    Vec<aws_sdk_ec2::types::Instance>,
) {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let meta = std::collections::HashMap::from([
        ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
        ("sk".to_string(), s("META")),
        ("id".to_string(), s(ID)),
        ("name".to_string(), s("shop")),
        ("phase".to_string(), s("PROVISIONING")),
        (
            "spec".to_string(),
            s(&serde_json::to_string(&spec()).unwrap()),
        ),
        ("generation".to_string(), n(1)),
        ("version".to_string(), n(7)),
        ("lease_token".to_string(), n(3)),
        ("created_at".to_string(), s("2026-11-23T12:00:00Z")),
        ("updated_at".to_string(), s("2026-11-23T12:00:00Z")),
    ]);
    let mut items = vec![meta];
    let mut instances = Vec::new();
    for (i, slot) in crate::domain::plan::desired_slots(&spec())
        .into_iter()
        .enumerate()
    {
        let instance_id = format!("i-{i:017x}");
        let node = Node {
            slot: slot.name(),
            tier: slot.tier,
            instance_id: Some(instance_id.clone()),
            state: NodeState::Running,
            availability_zone: Some(zone(i)),
            subnet_id: Some(format!("subnet-0000000{i}")),
            role: None,
            host: None,
            member_state: None,
            group_name: None,
            launch_token: None,
            target_health: None,
            updated_at: "2026-11-23T12:01:00Z".into(),
        };
        items.push(std::collections::HashMap::from([
            ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
            ("sk".to_string(), s(&format!("NODE#{}", slot.name()))),
            (
                "data".to_string(),
                s(&serde_json::to_string(&node).unwrap()),
            ),
        ]));
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        instances.push(
            aws_sdk_ec2::types::Instance::builder()
                .instance_id(instance_id)
                .state(
                    aws_sdk_ec2::types::InstanceState::builder()
                        .name(aws_sdk_ec2::types::InstanceStateName::Running)
                        .build(),
                )
                .subnet_id(format!("subnet-0000000{i}"))
                .placement(
                    aws_sdk_ec2::types::Placement::builder()
                        .availability_zone(zone(i))
                        .build(),
                )
                .tags(tag(TAG_CLUSTER, ID))
                .tags(tag(TAG_SLOT, &slot.name()))
                .build(),
        );
    }
    (items, instances)
}

/// The cluster's partition, as the store queries it.
fn cluster_partition(
    items: Vec<std::collections::HashMap<String, AttributeValue>>,
) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.expression_attribute_values()
                .and_then(|v| v.get(":pk"))
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk.starts_with("CLUSTER#"))
        })
        .then_output(move || {
            aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                .set_items(Some(items.clone()))
                .build()
        })
}

/// The stack's three subnets, one per zone.
fn three_subnets() -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
        let subnet = |i: usize| {
            aws_sdk_ec2::types::Subnet::builder()
                .subnet_id(format!("subnet-0000000{i}"))
                .availability_zone(zone(i))
                .build()
        };
        aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput::builder()
            .subnets(subnet(0))
            .subnets(subnet(1))
            .subnets(subnet(2))
            .build()
    })
}

/// DescribeInstances answering `instances` in one reservation.
fn instances_described(instances: Vec<aws_sdk_ec2::types::Instance>) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
        aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
            .reservations(
                aws_sdk_ec2::types::Reservation::builder()
                    .set_instances(Some(instances.clone()))
                    .build(),
            )
            .build()
    })
}

/// A provisioner on mocked clients; the services a launch does not use answer nothing.
fn provisioner(
    dynamodb: aws_sdk_dynamodb::Client,
    ec2: aws_sdk_ec2::Client,
    secretsmanager: aws_sdk_secretsmanager::Client,
) -> Provisioner {
    Provisioner {
        store: ClusterStore::new(dynamodb, "table"),
        fleet: Fleet::new(
            ec2,
            mocked_client!(
                aws_sdk_ssm,
                [&mock!(aws_sdk_ssm::Client::get_parameter).then_output(|| {
                    aws_sdk_ssm::operation::get_parameter::GetParameterOutput::builder()
                        .parameter(
                            aws_sdk_ssm::types::Parameter::builder()
                                .value("ami-1")
                                .build(),
                        )
                        .build()
                })]
            ),
            FleetSettings {
                web_launch_template: "lt-web".into(),
                db_launch_template: "lt-db".into(),
                ami_parameter: "/ami".into(),
                default_subnets: (0..3).map(|i| format!("subnet-0000000{i}")).collect(),
            },
        ),
        secrets: crate::aws::secrets::ClusterSecrets::new(secretsmanager),
        targets: WebTargets::new(
            mocked_client!(aws_sdk_elasticloadbalancingv2, []),
            TargetSettings {
                vpc_id: "vpc-1".into(),
                listener_arn: "arn:listener".into(),
                status_target_group_arn: "arn:status".into(),
                web_port: 80,
                health_check_path: "/healthz".into(),
            },
        ),
        alarms: crate::aws::alarms::ScalingAlarms::new(
            mocked_client!(aws_sdk_cloudwatch, []),
            crate::aws::alarms::AlarmSettings {
                scale_out_requests_per_target: 1000.0,
                scale_in_requests_per_target: 100.0,
            },
        ),
        command_output: crate::aws::commands::CommandOutput::new(
            mocked_client!(aws_sdk_s3, []),
            "bucket",
        ),
    }
}

#[tokio::test]
async fn a_converged_cluster_launch_makes_no_mutating_call() {
    let (items, instances) = converged();
    let query = cluster_partition(items);
    let actions = mock!(aws_sdk_dynamodb::Client::query)
        .then_output(|| aws_sdk_dynamodb::operation::query::QueryOutput::builder().build());
    // Renewing the lease and recording the step is the only write allowed.
    let renew = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| {
            r.condition_expression()
                == Some("lease_token = :token AND generation = :fence_generation")
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
        });
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(|| {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
            .build()
    });
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let subnets = three_subnets();
    let describe = instances_described(instances);
    let run = mock!(aws_sdk_ec2::Client::run_instances).then_output(|| {
        aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder().build()
    });
    let terminate = mock!(aws_sdk_ec2::Client::terminate_instances).then_output(|| {
        aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput::builder().build()
    });
    let existing_secret =
        mock!(aws_sdk_secretsmanager::Client::describe_secret).then_output(|| {
            aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput::builder()
                .build()
        });
    let create_secret = mock!(aws_sdk_secretsmanager::Client::create_secret).then_output(|| {
        aws_sdk_secretsmanager::operation::create_secret::CreateSecretOutput::builder().build()
    });
    let provisioner = provisioner(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&query, &actions, &renew, &put, &transact]
        ),
        mocked_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&subnets, &describe, &run, &terminate]
        ),
        mocked_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&existing_secret, &create_secret]
        ),
    );
    let request: TaskRequest = serde_json::from_value(serde_json::json!({
        "task": "launch",
        "ctx": {"clusterId": ID, "generation": 1, "reason": "create"},
        "leaseToken": 3
    }))
    .unwrap();
    let outcome = provisioner.run(request).await.unwrap();
    assert_eq!(outcome.detail, "launched 0, kept 5, surplus 0");
    assert_eq!(run.num_calls(), 0, "RunInstances on a converged cluster");
    assert_eq!(
        terminate.num_calls(),
        0,
        "TerminateInstances on a converged cluster"
    );
    assert_eq!(put.num_calls(), 0, "action writes on a converged cluster");
    assert_eq!(
        transact.num_calls(),
        0,
        "node writes on a converged cluster"
    );
    assert_eq!(renew.num_calls(), 1);
    assert_eq!(actions.num_calls(), 0, "a task read the action log");
    assert_eq!(
        create_secret.num_calls(),
        0,
        "CreateSecret on a converged cluster"
    );
}

#[tokio::test]
async fn a_token_ec2_refuses_as_mismatched_is_renewed_once_and_recorded_first() {
    // db-2's instance is gone from EC2 (lost); its record still names it.
    let (items, mut instances) = converged();
    instances.pop();
    let query = cluster_partition(items);
    let renew = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
    });
    // Node records go through a fenced transaction: keep every node written, in order.
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Node>::new()));
    let seen = written.clone();
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |r| {
            for item in r.transact_items() {
                if let Some(data) = item
                    .put()
                    .and_then(|p| p.item().get("data"))
                    .and_then(|d| d.as_s().ok())
                    && let Ok(node) = serde_json::from_str::<Node>(data)
                {
                    seen.lock().unwrap().push(node);
                }
            }
            true
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
                .build()
        });
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let subnets = three_subnets();
    let describe = instances_described(instances);
    let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sent = tokens.clone();
    let run = mock!(aws_sdk_ec2::Client::run_instances)
        .match_requests(move |r| {
            sent.lock()
                .unwrap()
                .push(r.client_token().unwrap_or_default().to_string());
            true
        })
        .sequence()
        .error(|| {
            aws_sdk_ec2::operation::run_instances::RunInstancesError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("IdempotentParameterMismatch")
                    .message("client token used with different parameters")
                    .build(),
            )
        })
        .output(|| {
            aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder()
                .instances(
                    aws_sdk_ec2::types::Instance::builder()
                        .instance_id("i-0000000000000new")
                        .build(),
                )
                .build()
        })
        .build();
    let existing_secret =
        mock!(aws_sdk_secretsmanager::Client::describe_secret).then_output(|| {
            aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput::builder()
                .build()
        });
    let provisioner = provisioner(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&query, &renew, &put, &transact]
        ),
        mocked_client!(aws_sdk_ec2, RuleMode::MatchAny, [&subnets, &describe, &run]),
        mocked_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&existing_secret]
        ),
    );
    let request: TaskRequest = serde_json::from_value(serde_json::json!({
        "task": "launch",
        "ctx": {"clusterId": ID, "generation": 1, "reason": "heal"},
        "leaseToken": 3
    }))
    .unwrap();
    let outcome = provisioner.run(request).await.unwrap();
    assert_eq!(outcome.detail, "launched 1, kept 4, surplus 0");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_ne!(tokens[0], tokens[1], "the refused token was sent again");
    let prefix = format!("{ID}-db-2-");
    assert!(tokens.iter().all(|t| t.starts_with(&prefix)), "{tokens:?}");
    // Each token was in the slot's record before RunInstances carried it, and the
    // record of the launched instance keeps the token that launched it.
    let written = written.lock().unwrap().clone();
    let db2: Vec<&Node> = written.iter().filter(|n| n.slot == "db-2").collect();
    let token_at = |i: usize| db2[i].launch_token.clone().unwrap_or_default();
    assert_eq!(db2.len(), 3, "reserve, renew, launched: {db2:?}");
    assert_eq!(token_at(0), tokens[0]);
    assert_eq!(token_at(1), tokens[1]);
    assert_eq!(db2[2].instance_id.as_deref(), Some("i-0000000000000new"));
    assert_eq!(token_at(2), tokens[1]);
}
