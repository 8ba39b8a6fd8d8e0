//! The backup routes and the restore of a create, on mocked DynamoDB, S3 and Step
//! Functions clients.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use serde_json::json;

use super::*;
use crate::aws::workflow::Workflow;
use crate::config::ClusterLimits;
use crate::domain::backup::{BackupId, BackupRecord, BackupState, BackupTrigger, format_epoch};
use crate::domain::cluster::epoch_seconds;
use crate::mocked_client;

const SOURCE: &str = "c-00000000000a";

fn ctx(dynamodb: aws_sdk_dynamodb::Client, sfn: aws_sdk_sfn::Client) -> ApiContext {
    let store = ClusterStore::new(dynamodb, "table");
    ApiContext {
        runs: Runs::new(
            store.clone(),
            Workflow::new(sfn, "arn:aws:states:us-east-1:1:stateMachine:w"),
        ),
        store,
        network: StackNetwork::new(mocked_client!(aws_sdk_ec2, []), "vpc-stack"),
        limits: ClusterLimits { max_clusters: 99 },
        backups: None,
    }
}

fn call(method: &str, path: &str, body: Option<serde_json::Value>) -> ApiRequest {
    ApiRequest {
        method: method.into(),
        path: path.into(),
        query: vec![],
        headers: vec![],
        body: body.map(|b| b.to_string().into_bytes()),
        request_id: "req-1".into(),
    }
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.into())
}

/// A backup record item as the store writes it.
fn backup_item(
    cluster: &str,
    id: &str,
    state: BackupState,
    completed: Option<i64>,
) -> std::collections::HashMap<String, AttributeValue> {
    let mut r = BackupRecord::pending(
        cluster,
        BackupId::parse(id).unwrap(),
        BackupTrigger::Schedule,
        0,
    );
    r.state = state;
    r.completed_at = completed.map(format_epoch);
    std::collections::HashMap::from([
        ("pk".into(), s(&format!("BACKUPS#{cluster}"))),
        ("sk".into(), s(&format!("BACKUP#{id}"))),
        ("state".into(), s(state.as_str())),
        ("rev".into(), AttributeValue::N("2".into())),
        ("data".into(), s(&serde_json::to_string(&r).unwrap())),
    ])
}

fn meta(id: &str, phase: &str) -> std::collections::HashMap<String, AttributeValue> {
    let mut item = std::collections::HashMap::from([
        ("pk".to_string(), s(&format!("CLUSTER#{id}"))),
        ("sk".to_string(), s("META")),
        ("id".to_string(), s(id)),
        ("name".to_string(), s("shop")),
        ("phase".to_string(), s(phase)),
        ("created_at".to_string(), s("2026-11-23T10:00:00Z")),
    ]);
    item.insert(
        "spec".into(),
        s(r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#),
    );
    item.insert("generation".into(), AttributeValue::N("1".into()));
    item.insert("version".into(), AttributeValue::N("1".into()));
    item.insert("updated_at".into(), s("2026-11-23T10:00:00Z"));
    item
}

/// Query answers by partition: `pk` -> items.
fn partitions(
    answers: Vec<(
        String,
        Vec<std::collections::HashMap<String, AttributeValue>>,
    )>,
) -> Rule {
    mock!(aws_sdk_dynamodb::Client::query).then_compute_output(move |r| {
        let pk = r
            .expression_attribute_values()
            .and_then(|v| v.get(":pk"))
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let items = answers
            .iter()
            .find(|(p, _)| *p == pk)
            .map(|(_, items)| items.clone())
            .unwrap_or_default();
        QueryOutput::builder()
            .set_items(Some(items))
            .count(0)
            .build()
    })
}

#[tokio::test]
async fn a_deleted_clusters_backups_are_listed_newest_first() {
    let query = partitions(vec![(
        format!("BACKUPS#{SOURCE}"),
        vec![
            backup_item(
                SOURCE,
                "20261130T000000Z-00000001",
                BackupState::Completed,
                Some(1),
            ),
            backup_item(
                SOURCE,
                "20261201T000000Z-00000002",
                BackupState::Failed,
                None,
            ),
        ],
    )]);
    let ctx = ctx(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query]),
        mocked_client!(aws_sdk_sfn, []),
    );
    let response = handle(
        &ctx,
        call("GET", &format!("/clusters/{SOURCE}/backups"), None),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let ids: Vec<&str> = response.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["20261201T000000Z-00000002", "20261130T000000Z-00000001"]
    );
    assert_eq!(response.body["backups"][0]["state"], "FAILED");
    assert_eq!(response.body["phase"], serde_json::Value::Null);
    // Neither cluster nor backups: 404.
    let none = handle(&ctx, call("GET", "/clusters/c-00000000000b/backups", None)).await;
    assert_eq!(none.status, 404, "{}", none.body);
    let wrong = handle(
        &ctx,
        call("PUT", &format!("/clusters/{SOURCE}/backups"), None),
    )
    .await;
    assert_eq!(wrong.status, 405);
}

#[tokio::test]
async fn an_on_demand_backup_is_recorded_pending_for_a_ready_cluster_only() {
    let query = partitions(vec![
        (format!("CLUSTER#{SOURCE}"), vec![meta(SOURCE, "READY")]),
        (
            "CLUSTER#c-00000000000b".into(),
            vec![meta("c-00000000000b", "SCALING")],
        ),
    ]);
    let written = Arc::new(Mutex::new(Vec::new()));
    let log = written.clone();
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| {
            log.lock().unwrap().push(r.clone());
            true
        })
        .then_output(|| PutItemOutput::builder().build());
    let ctx = ctx(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query, &put]),
        mocked_client!(aws_sdk_sfn, []),
    );
    let response = handle(
        &ctx,
        call("POST", &format!("/clusters/{SOURCE}/backups"), None),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    assert_eq!(response.body["state"], "PENDING");
    assert_eq!(response.body["trigger"], "api");
    let written = written.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(
        written[0].condition_expression(),
        Some("attribute_not_exists(pk)")
    );
    assert_eq!(
        written[0].item().unwrap()["pk"].as_s().unwrap(),
        &format!("BACKUPS#{SOURCE}")
    );
    let busy = handle(&ctx, call("POST", "/clusters/c-00000000000b/backups", None)).await;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert!(busy.body.to_string().contains("SCALING"), "{}", busy.body);
    let missing = handle(&ctx, call("POST", "/clusters/c-00000000000c/backups", None)).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
}

fn restore_body(restore: serde_json::Value) -> serde_json::Value {
    json!({
        "name": "copy",
        "web": {"count": 2, "instanceType": "t3.small"},
        "db": {"count": 3, "instanceType": "t3.small"},
        "restore": restore,
    })
}

#[tokio::test]
async fn a_restore_is_refused_before_anything_is_written_when_it_cannot_be_resolved() {
    let now = epoch_seconds();
    let query = partitions(vec![(
        format!("BACKUPS#{SOURCE}"),
        vec![
            backup_item(
                SOURCE,
                "20261130T000000Z-00000001",
                BackupState::Completed,
                Some(now - 7200),
            ),
            backup_item(
                SOURCE,
                "20261201T000000Z-00000002",
                BackupState::Running,
                None,
            ),
        ],
    )]);
    // No put, no transaction, no StartExecution rule: any write fails the test.
    let ctx = ctx(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query]),
        mocked_client!(aws_sdk_sfn, []),
    );
    let cases = [
        (
            json!({"fromCluster": "c-00000000000b"}),
            400,
            "no backups of cluster c-00000000000b in this stack",
        ),
        (json!({"fromCluster": "shop"}), 400, "restore.fromCluster"),
        (
            json!({"fromCluster": SOURCE, "backupId": "20261201T000000Z-00000002"}),
            409,
            "RUNNING",
        ),
        (
            json!({"fromCluster": SOURCE, "backupId": "20261201T000000Z-0000000f"}),
            404,
            "backup",
        ),
        (
            json!({"fromCluster": SOURCE, "pointInTime": format_epoch(now - 3 * 3600)}),
            400,
            "restorable from",
        ),
        (
            json!({"fromCluster": SOURCE, "backupId": "20261130T000000Z-00000001", "pointInTime": format_epoch(now)}),
            400,
            "names both",
        ),
    ];
    for (restore, status, text) in cases {
        let response = handle(
            &ctx,
            call("POST", "/clusters", Some(restore_body(restore.clone()))),
        )
        .await;
        assert_eq!(response.status, status, "{restore}: {}", response.body);
        assert!(
            response.body.to_string().contains(text),
            "{restore}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn a_point_in_time_restore_is_pinned_in_the_recorded_spec() {
    let now = epoch_seconds();
    let target = now - 1800;
    let query = partitions(vec![(
        format!("BACKUPS#{SOURCE}"),
        vec![
            backup_item(
                SOURCE,
                "20261130T000000Z-00000001",
                BackupState::Completed,
                Some(now - 7200),
            ),
            backup_item(
                SOURCE,
                "20261130T010000Z-00000002",
                BackupState::Completed,
                Some(now - 600),
            ),
            {
                let mut archive = std::collections::HashMap::new();
                archive.insert("pk".to_string(), s(&format!("BACKUPS#{SOURCE}")));
                archive.insert("sk".to_string(), s("ARCHIVE"));
                archive.insert("restorable_until".to_string(), s(&format_epoch(now - 60)));
                archive
            },
        ],
    )]);
    let transactions = Arc::new(Mutex::new(Vec::new()));
    let log = transactions.clone();
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |r| {
            log.lock().unwrap().push(r.clone());
            true
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
                .build()
        });
    let put =
        mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| PutItemOutput::builder().build());
    let started = mock!(aws_sdk_sfn::Client::start_execution).then_output(|| {
        aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
            .execution_arn("arn:aws:states:us-east-1:1:execution:w:run")
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap()
    });
    let ctx = ctx(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&query, &transact, &put]
        ),
        mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&started]),
    );
    let response = handle(
        &ctx,
        call(
            "POST",
            "/clusters",
            Some(restore_body(
                json!({"fromCluster": SOURCE, "pointInTime": format_epoch(target)}),
            )),
        ),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    // The backup completed before the time, and the time itself.
    let plan = json!({
        "sourceCluster": SOURCE,
        "backupId": "20261130T000000Z-00000001",
        "stopAt": format_epoch(target),
    });
    assert_eq!(response.body["restore"], plan);
    let transactions = transactions.lock().unwrap();
    let meta = transactions[0].transact_items()[0].put().unwrap().item();
    let spec: serde_json::Value = serde_json::from_str(meta["spec"].as_s().unwrap()).unwrap();
    assert_eq!(
        spec["restore"], plan,
        "the plan is recorded with the cluster"
    );
    assert_eq!(
        spec["backup"],
        json!({"schedule": "daily", "retentionDays": 7})
    );
}

#[tokio::test]
async fn purging_backups_of_an_already_deleted_cluster_deletes_objects_then_records() {
    // The cluster's tombstone: the delete's condition fails, the read finds it DELETED.
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
            crate::testing::conditional_check_failed(),
        )
    });
    let query = partitions(vec![
        (format!("CLUSTER#{SOURCE}"), vec![meta(SOURCE, "DELETED")]),
        (
            format!("BACKUPS#{SOURCE}"),
            vec![backup_item(
                SOURCE,
                "20261130T000000Z-00000001",
                BackupState::Completed,
                Some(1),
            )],
        ),
    ]);
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = order.clone();
    let delete_item = mock!(aws_sdk_dynamodb::Client::delete_item)
        .match_requests(move |r| {
            log.lock()
                .unwrap()
                .push(format!("ddb {}", r.key().unwrap()["sk"].as_s().unwrap()));
            true
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder().build()
        });
    let list = mock!(aws_sdk_s3::Client::list_objects_v2)
        .match_requests(|r| r.prefix() == Some("clusters/c-00000000000a/"))
        .then_output(|| {
            aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder()
                .contents(
                    aws_sdk_s3::types::Object::builder()
                        .key("clusters/c-00000000000a/backups/x/manifest.json")
                        .build(),
                )
                .build()
        });
    let log = order.clone();
    let delete_object = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(move |r| {
            log.lock().unwrap().push(format!("s3 {}", r.key().unwrap()));
            true
        })
        .then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        });
    let mut ctx = ctx(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&update, &query, &delete_item]
        ),
        mocked_client!(aws_sdk_sfn, []),
    );
    ctx.backups = Some(crate::aws::backups::BackupBucket::new(
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete_object]),
        "backups",
    ));
    let mut request = call("DELETE", &format!("/clusters/{SOURCE}"), None);
    request.query = vec![("purgeBackups".into(), "true".into())];
    let response = handle(&ctx, request).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["backupObjectsPurged"], 1);
    assert_eq!(
        *order.lock().unwrap(),
        [
            "s3 clusters/c-00000000000a/backups/x/manifest.json",
            "ddb BACKUP#20261130T000000Z-00000001"
        ]
    );
    // Without purgeBackups the tombstone answers as before (410), nothing is purged.
    let kept = handle(&ctx, call("DELETE", &format!("/clusters/{SOURCE}"), None)).await;
    assert_eq!(kept.status, 410, "{}", kept.body);
    assert_eq!(order.lock().unwrap().len(), 2);
    for (key, value) in [("purgeBackups", "yes"), ("force", "true")] {
        let mut bad = call("DELETE", &format!("/clusters/{SOURCE}"), None);
        bad.query = vec![(key.into(), value.into())];
        let response = handle(&ctx, bad).await;
        assert_eq!(response.status, 400, "{key}={value}: {}", response.body);
        assert_eq!(response.body["error"]["field"], key);
    }
}
