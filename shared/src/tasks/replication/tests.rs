//! Converge scenarios on mocked DynamoDB, SSM and EC2: which command a set of inspect
//! reports leads to, and when a reboot from complete outage may force.

use super::*;
use crate::aws::store::ClusterStore;
use crate::domain::cluster::{Node, NodeState};
use crate::domain::report::NodeReport;
use crate::mocked_client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(super) const ID: &str = "c-0123456789ab";
/// The hosts of the three live database nodes (resource names) and of the lost one
/// their slot replaced.
const HOSTS: [&str; 3] = [
    "i-00000000000000000.ec2.internal",
    "i-00000000000000001.ec2.internal",
    "i-00000000000000002.ec2.internal",
];
const LOST: &str = "i-0000000000000dead.ec2.internal";
const LOST_ID: &str = "i-0000000000000dead";

fn node_report(state: &str, role: &str, group: &str, gtid: &str) -> NodeReport {
    NodeReport {
        member_state: state.into(),
        role: role.into(),
        group_name: group.into(),
        cluster_name: "shop".into(),
        gtid_executed: gtid.into(),
        members: Vec::new(),
        metadata_members: Vec::new(),
        restored_backup: None,
    }
}

/// The cluster's partition as the store queries it: META and three running database
/// nodes, `db-i` on `HOSTS[i]`.
fn cluster_partition(restore: Option<serde_json::Value>) -> Rule {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let mut spec = serde_json::json!({
        "name": "shop",
        "web": {"count": 0, "instanceType": "t3.small"},
        "db": {"count": 3, "instanceType": "r6i.large"},
    });
    if let Some(plan) = restore {
        spec["restore"] = plan;
    }
    let mut items = vec![HashMap::from([
        ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
        ("sk".to_string(), s("META")),
        ("id".to_string(), s(ID)),
        ("name".to_string(), s("shop")),
        ("phase".to_string(), s("HEALING")),
        ("spec".to_string(), s(&spec.to_string())),
        ("generation".to_string(), n(1)),
        ("version".to_string(), n(7)),
        ("lease_token".to_string(), n(3)),
        ("created_at".to_string(), s("2026-11-23T12:00:00Z")),
        ("updated_at".to_string(), s("2026-11-23T12:00:00Z")),
    ])];
    for (i, host) in HOSTS.iter().enumerate() {
        let node = Node {
            slot: format!("db-{i}"),
            tier: Tier::Db,
            instance_id: Some(format!("i-{i:017x}")),
            state: NodeState::Running,
            availability_zone: None,
            subnet_id: None,
            role: None,
            target_health: None,
            host: Some((*host).to_string()),
            member_state: None,
            group_name: None,
            launch_token: None,
            updated_at: "2026-11-23T12:01:00Z".into(),
        };
        items.push(HashMap::from([
            ("pk".to_string(), s(&format!("CLUSTER#{ID}"))),
            ("sk".to_string(), s(&format!("NODE#db-{i}"))),
            (
                "data".to_string(),
                s(&serde_json::to_string(&node).unwrap()),
            ),
        ]));
    }
    mock!(aws_sdk_dynamodb::Client::query).then_output(move || {
        aws_sdk_dynamodb::operation::query::QueryOutput::builder()
            .set_items(Some(items.clone()))
            .build()
    })
}

/// One converge step from `reports` (db-i's, in slot order), EC2 answering with
/// `ec2`'s rules: the documents and parameters of every command it sent.
async fn converge_sends(
    reports: Vec<NodeReport>,
    ec2: aws_sdk_ec2::Client,
) -> Vec<(String, HashMap<String, Vec<String>>)> {
    let (outcome, sent) = converge_outcome(reports, ec2).await;
    outcome.unwrap();
    sent
}

/// What a converge step answered, and the commands it sent.
async fn converge_outcome(
    reports: Vec<NodeReport>,
    ec2: aws_sdk_ec2::Client,
) -> (Result<()>, Vec<(String, HashMap<String, Vec<String>>)>) {
    converge_outcome_of(None, reports, ec2).await
}

/// [`converge_outcome`] for a cluster whose spec carries the restore plan `restore`.
async fn converge_outcome_of(
    restore: Option<serde_json::Value>,
    reports: Vec<NodeReport>,
    ec2: aws_sdk_ec2::Client,
) -> (Result<()>, Vec<(String, HashMap<String, Vec<String>>)>) {
    let query = cluster_partition(restore);
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
    });
    // No step sent before in this run, and the command is not (yet) recorded when the
    // send checks on it at once.
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(|| {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
            .build()
    });
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(move |r| {
            seen.lock().unwrap().push((
                r.document_name().unwrap_or_default().to_string(),
                r.parameters().cloned().unwrap_or_default(),
            ));
            true
        })
        .then_output(|| {
            aws_sdk_ssm::operation::send_command::SendCommandOutput::builder()
                .command(
                    aws_sdk_ssm::types::Command::builder()
                        .command_id("cmd-1")
                        .build(),
                )
                .build()
        });
    let store = ClusterStore::new(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&query, &update, &get, &transact, &put]
        ),
        "table",
    );
    let commands = Commands::new(
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]),
        mocked_client!(aws_sdk_s3, []),
        crate::aws::commands::CommandSettings {
            document_prefix: "stack".into(),
            output_bucket: "bucket".into(),
        },
    );
    let replicator = replicator(store, commands, mocked_client!(aws_sdk_sfn, []), ec2);
    let outputs: Vec<serde_json::Value> = reports
        .iter()
        .enumerate()
        .map(|(i, report)| {
            serde_json::json!({
                "instanceId": format!("i-{i:017x}"),
                "slot": format!("db-{i}"),
                "stdout": format!("{}\n", serde_json::to_string(report).unwrap()),
            })
        })
        .collect();
    let request: TaskRequest = serde_json::from_value(serde_json::json!({
        "task": "db-converge",
        "ctx": {"clusterId": ID, "generation": 1, "reason": "heal"},
        "leaseToken": 3,
        "taskToken": "token-1",
        "previous": {"done": false, "wait": false, "step": "db-inspect", "detail": "", "outputs": outputs},
    }))
    .unwrap();
    let outcome = replicator.run(request).await.map(drop);
    let sent = sent.lock().unwrap().clone();
    (outcome, sent)
}

/// A replicator on mocked clients: `sfn` answers the waiting tokens (and would start
/// the surveys' runs), `ec2` confirms members gone before a forced reboot.
pub(super) fn replicator(
    store: ClusterStore,
    commands: Commands,
    sfn: aws_sdk_sfn::Client,
    ec2: aws_sdk_ec2::Client,
) -> Replicator {
    Replicator {
        backup_bucket: Some("backups-bucket".into()),
        survey: crate::tasks::survey::MembershipSurvey {
            store: store.clone(),
            commands: commands.clone(),
            runs: crate::tasks::runs::Runs::new(
                store.clone(),
                crate::aws::workflow::Workflow::new(sfn.clone(), "arn:sm"),
            ),
        },
        store,
        commands,
        task_tokens: TaskTokens::new(sfn),
        instances: Instances::new(ec2),
    }
}

fn parameter(sent: &HashMap<String, Vec<String>>, name: &str) -> String {
    sent.get(name)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

/// Every DescribeInstances filter a test's EC2 received: (name, values).
type Filters = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// EC2 answering DescribeInstances with `instances`, or with an error when `None`;
/// every request's filters are kept in `filters`.
fn ec2_answering(
    instances: Option<Vec<(&'static str, aws_sdk_ec2::types::InstanceStateName)>>,
    filters: Filters,
) -> (aws_sdk_ec2::Client, Rule) {
    let rule = mock!(aws_sdk_ec2::Client::describe_instances).match_requests(move |r| {
        for filter in r.filters() {
            filters.lock().unwrap().push((
                filter.name().unwrap_or_default().to_string(),
                filter.values().to_vec(),
            ));
        }
        true
    });
    let rule = match instances {
        Some(instances) => rule.then_output(move || {
            let instances = instances
                .iter()
                .map(|(id, state)| {
                    aws_sdk_ec2::types::Instance::builder()
                        .instance_id(*id)
                        .state(
                            aws_sdk_ec2::types::InstanceState::builder()
                                .name(state.clone())
                                .build(),
                        )
                        .build()
                })
                .collect();
            aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
                .reservations(
                    aws_sdk_ec2::types::Reservation::builder()
                        .set_instances(Some(instances))
                        .build(),
                )
                .build()
        }),
        None => rule.then_error(|| {
            aws_sdk_ec2::operation::describe_instances::DescribeInstancesError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("not authorized to perform: ec2:DescribeInstances")
                    .build(),
            )
        }),
    };
    (
        mocked_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]),
        rule,
    )
}

/// A complete outage after db-lost's instance was replaced by db-2's: every live node
/// OFFLINE with the metadata, db-1 the most complete; the metadata still lists LOST.
fn complete_outage() -> Vec<NodeReport> {
    let metadata: Vec<String> = [HOSTS[0], HOSTS[1], LOST]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut reports = vec![
        node_report("OFFLINE", "", "", "u:1-9"),
        node_report("OFFLINE", "", "", "u:1-12"),
        node_report("OFFLINE", "", "", ""),
    ];
    reports[2].cluster_name.clear();
    for report in &mut reports[..2] {
        report.metadata_members = metadata.clone();
    }
    reports
}

#[tokio::test]
async fn a_lost_member_the_group_expelled_is_removed_from_the_metadata() {
    // LOST was the primary's peer; Group Replication expelled it within seconds, so the
    // group lists only the three live nodes, but the metadata still lists it.
    let group: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
    let mut metadata = group.clone();
    metadata.insert(1, LOST.to_string());
    let mut reports = vec![
        node_report("ONLINE", "PRIMARY", "g", "u:1-9"),
        node_report("ONLINE", "SECONDARY", "g", "u:1-9"),
        node_report("ONLINE", "SECONDARY", "g", "u:1-9"),
    ];
    for report in &mut reports {
        report.members = group.clone();
        report.metadata_members = metadata.clone();
    }
    let filters = Arc::new(Mutex::new(Vec::new()));
    let (ec2, describe) = ec2_answering(Some(vec![]), filters);
    let sent = converge_sends(reports, ec2).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "stack-DbRemoveInstance");
    assert_eq!(parameter(&sent[0].1, "node"), LOST);
    assert_eq!(describe.num_calls(), 0, "a removal asks EC2 nothing");
}

#[tokio::test]
async fn a_reboot_forces_only_once_ec2_confirms_the_absent_member_gone() {
    use aws_sdk_ec2::types::InstanceStateName;
    // EC2 lists no instance behind LOST any more, or lists it terminated or
    // shutting down: force.
    for answer in [
        vec![],
        vec![(LOST_ID, InstanceStateName::Terminated)],
        vec![(LOST_ID, InstanceStateName::ShuttingDown)],
    ] {
        let filters = Arc::new(Mutex::new(Vec::new()));
        let (ec2, describe) = ec2_answering(Some(answer.clone()), filters.clone());
        let sent = converge_sends(complete_outage(), ec2).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "stack-DbRebootCluster");
        assert_eq!(parameter(&sent[0].1, "clusterName"), "shop");
        assert_eq!(parameter(&sent[0].1, "force"), "true", "{answer:?}");
        assert_eq!(describe.num_calls(), 1);
        // Looked up by the instance id its resource name carries.
        assert_eq!(
            filters.lock().unwrap().clone(),
            vec![("instance-id".to_string(), vec![LOST_ID.to_string()])]
        );
    }
}

#[tokio::test]
async fn a_forced_reboot_is_refused_when_a_live_member_has_transactions_the_seed_lacks() {
    // db-1 is the most complete by count, but db-0 holds a transaction it never saw
    // (an errant one): force would skip the Shell's GTID check and lose it.
    let mut reports = complete_outage();
    reports[0].gtid_executed = "u:1-9,e:1".into();
    let filters = Arc::new(Mutex::new(Vec::new()));
    let (ec2, _describe) = ec2_answering(Some(vec![]), filters);
    let (outcome, sent) = converge_outcome(reports, ec2).await;
    assert!(sent.is_empty(), "{sent:?}");
    let error = outcome.expect_err("refused").to_string();
    assert!(
        error.contains("has transactions the reboot seed") && error.contains("e:1"),
        "{error}"
    );
}

#[tokio::test]
async fn a_reboot_does_not_force_while_the_member_may_still_run_or_ec2_cannot_say() {
    use aws_sdk_ec2::types::InstanceStateName;
    for answer in [
        Some(vec![(LOST_ID, InstanceStateName::Running)]),
        Some(vec![(LOST_ID, InstanceStateName::Stopped)]),
        // One terminated, one still pending under the same name: not gone.
        Some(vec![
            (LOST_ID, InstanceStateName::Terminated),
            (LOST_ID, InstanceStateName::Pending),
        ]),
        None,
    ] {
        let (ec2, describe) = ec2_answering(answer.clone(), Arc::default());
        let sent = converge_sends(complete_outage(), ec2).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "stack-DbRebootCluster");
        assert_eq!(parameter(&sent[0].1, "force"), "false", "{answer:?}");
        assert_eq!(describe.num_calls(), 1);
    }
}

#[tokio::test]
async fn a_reboot_with_every_member_live_neither_forces_nor_asks_ec2() {
    let mut reports = complete_outage();
    let metadata: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
    for report in &mut reports {
        report.metadata_members = metadata.clone();
    }
    let (ec2, describe) = ec2_answering(Some(vec![]), Arc::default());
    let sent = converge_sends(reports, ec2).await;
    assert_eq!(sent[0].0, "stack-DbRebootCluster");
    assert_eq!(parameter(&sent[0].1, "force"), "false");
    assert_eq!(describe.num_calls(), 0);
}

#[tokio::test]
async fn a_name_that_is_no_resource_name_is_looked_up_by_private_dns_name() {
    let filters = Arc::new(Mutex::new(Vec::new()));
    let (ec2, _) = ec2_answering(Some(vec![]), filters.clone());
    let gone = crate::aws::fleet::Instances::new(ec2.clone())
        .host_instance("ip-10-0-1-5.ec2.internal")
        .await
        .unwrap();
    assert_eq!(gone, crate::aws::fleet::HostInstance::Gone);
    assert_eq!(
        filters.lock().unwrap().clone(),
        vec![(
            "private-dns-name".to_string(),
            vec!["ip-10-0-1-5.ec2.internal".to_string()]
        )]
    );
}

#[tokio::test]
async fn a_restored_cluster_sends_the_restore_to_its_seed_before_creating_the_group() {
    let plan = serde_json::json!({
        "sourceCluster": "c-00000000beef",
        "backupId": "20261201T063000Z-0a1b2c3d",
        "stopAt": "2026-12-01T07:00:00Z",
    });
    // Fresh nodes: no group and no metadata (no cluster name) anywhere.
    let fresh = || NodeReport {
        cluster_name: String::new(),
        ..node_report("OFFLINE", "", "", "")
    };
    let (outcome, sent) = converge_outcome_of(
        Some(plan.clone()),
        vec![fresh(), fresh(), fresh()],
        mocked_client!(aws_sdk_ec2, []),
    )
    .await;
    outcome.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "stack-DbRestore");
    for (name, value) in [
        ("bucket", "backups-bucket"),
        ("sourceClusterId", "c-00000000beef"),
        ("backupId", "20261201T063000Z-0a1b2c3d"),
        ("stopAt", "2026-12-01T07:00:00Z"),
    ] {
        assert_eq!(parameter(&sent[0].1, name), value, "{sent:?}");
    }
    // The seed reports the backup restored: now the group is created on it.
    let mut seed = fresh();
    seed.restored_backup = Some("20261201T063000Z-0a1b2c3d".into());
    let (outcome, sent) = converge_outcome_of(
        Some(plan),
        vec![seed, fresh(), fresh()],
        mocked_client!(aws_sdk_ec2, []),
    )
    .await;
    outcome.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "stack-DbCreateCluster");
}
