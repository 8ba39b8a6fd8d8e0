use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_smithy_mocks::{RuleMode, mock};

use super::*;
use crate::domain::backup::{BackupTrigger, format_epoch};
use crate::mocked_client as mock_client;

const CLUSTER: &str = "c-0123456789ab";

fn record(state: BackupState, revision: u64) -> BackupRecord {
    let mut r = BackupRecord::pending(
        CLUSTER,
        BackupId::parse("20261201T063000Z-0a1b2c3d").unwrap(),
        BackupTrigger::Api,
        0,
    );
    r.state = state;
    r.revision = revision;
    r
}

#[tokio::test]
async fn a_backup_moves_only_from_the_revision_it_was_read_at_and_never_out_of_a_final_state() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let put =
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                log.lock().unwrap().push(r.clone());
                true
            })
            .sequence()
            .output(|| PutItemOutput::builder().build())
            .error(|| {
                PutItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            })
            .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put]);
    let store = ClusterStore::new(client, "t");
    let mut running = record(BackupState::Running, 3);
    running.command_id = Some("cmd-1".into());
    assert!(store.update_backup(&running).await.unwrap());
    assert!(
        !store.update_backup(&running).await.unwrap(),
        "a lost race is false, not an error"
    );
    let requests = seen.lock().unwrap();
    let first = &requests[0];
    assert_eq!(
        first.condition_expression(),
        Some("rev = :rev AND #state IN (:pending, :running)")
    );
    let values = first.expression_attribute_values().unwrap();
    assert_eq!(values[":rev"].as_n().unwrap(), "3");
    assert_eq!(values[":pending"].as_s().unwrap(), "PENDING");
    assert_eq!(values[":running"].as_s().unwrap(), "RUNNING");
    let item = first.item().unwrap();
    assert_eq!(item["pk"].as_s().unwrap(), "BACKUPS#c-0123456789ab");
    assert_eq!(
        item["sk"].as_s().unwrap(),
        "BACKUP#20261201T063000Z-0a1b2c3d"
    );
    assert_eq!(item["rev"].as_n().unwrap(), "4");
    assert_eq!(item["state"].as_s().unwrap(), "RUNNING");
    let data: serde_json::Value = serde_json::from_str(item["data"].as_s().unwrap()).unwrap();
    assert_eq!(data["commandId"], "cmd-1");
}

#[tokio::test]
async fn a_new_backup_is_created_only_once() {
    let put =
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("attribute_not_exists(pk)")
                    && r.item().unwrap()["rev"].as_n().unwrap() == "1"
                    && r.item().unwrap()["state"].as_s().unwrap() == "PENDING"
            })
            .sequence()
            .output(|| PutItemOutput::builder().build())
            .error(|| {
                PutItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            })
            .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put]);
    let store = ClusterStore::new(client, "t");
    let pending = record(BackupState::Pending, 0);
    assert!(store.create_backup(&pending).await.unwrap());
    assert!(!store.create_backup(&pending).await.unwrap());
}

#[tokio::test]
async fn the_history_reads_records_with_their_revisions_and_the_archive() {
    let stored = |id: &str, state: BackupState, rev: u64| {
        let mut r = record(state, 0);
        r.id = BackupId::parse(id).unwrap();
        backup_item(&r, rev).unwrap()
    };
    let archive = Item::from([
        ("pk".into(), s("BACKUPS#c-0123456789ab")),
        ("sk".into(), s("ARCHIVE")),
        ("restorable_until".into(), s("2026-12-01T06:35:00Z")),
        ("until_epoch".into(), n(1)),
        ("server_uuid".into(), s("u-1")),
        ("sent_epoch".into(), n(1_795_000_000)),
        ("pending_command".into(), s("cmd-9")),
    ]);
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.expression_attribute_values().unwrap()[":pk"]
                .as_s()
                .unwrap()
                == "BACKUPS#c-0123456789ab"
        })
        .then_output(move || {
            QueryOutput::builder()
                .items(stored("20261201T120000Z-00000002", BackupState::Running, 5))
                .items(stored(
                    "20261201T000000Z-00000001",
                    BackupState::Completed,
                    2,
                ))
                .items(archive.clone())
                .build()
        });
    let client = mock_client!(aws_sdk_dynamodb, [&query]);
    let history = ClusterStore::new(client, "t")
        .backup_history(CLUSTER)
        .await
        .unwrap();
    let ids: Vec<_> = history
        .records
        .iter()
        .map(|r| (r.id.to_string(), r.revision))
        .collect();
    assert_eq!(
        ids,
        [
            ("20261201T000000Z-00000001".to_string(), 2),
            ("20261201T120000Z-00000002".to_string(), 5)
        ]
    );
    let archive = history.archive.unwrap();
    assert_eq!(
        archive.restorable_until.as_deref(),
        Some("2026-12-01T06:35:00Z")
    );
    assert_eq!(archive.last_sent_at, Some(format_epoch(1_795_000_000)));
    assert_eq!(
        history.archive_pending,
        Some(PendingArchive {
            command_id: "cmd-9".into(),
            sent_epoch: 1_795_000_000
        })
    );
}

#[tokio::test]
async fn restorable_until_only_moves_forward() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |r| {
            log.lock().unwrap().push(r.clone());
            true
        })
        .sequence()
        .output(|| UpdateItemOutput::builder().build())
        .error(|| {
            UpdateItemError::ConditionalCheckFailedException(
                crate::testing::conditional_check_failed(),
            )
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&update]);
    let store = ClusterStore::new(client, "t");
    let moved = store
        .finish_archive_round(
            CLUSTER,
            "cmd-9",
            Some((1_795_000_000, "2026-11-19T08:26:40Z", "u-1")),
        )
        .await
        .unwrap();
    assert!(!moved, "the older time lost its condition");
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].condition_expression(),
        Some("pending_command = :command")
    );
    assert_eq!(
        requests[1].condition_expression(),
        Some("attribute_not_exists(until_epoch) OR until_epoch < :epoch")
    );
    assert_eq!(
        requests[1].expression_attribute_values().unwrap()[":epoch"]
            .as_n()
            .unwrap(),
        "1795000000"
    );
}

#[tokio::test]
async fn an_archive_round_is_claimed_once_per_interval() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| {
            r.condition_expression()
                == Some("attribute_not_exists(sent_epoch) OR sent_epoch <= :cutoff")
                && r.expression_attribute_values().unwrap()[":cutoff"]
                    .as_n()
                    .unwrap()
                    == "700"
        })
        .sequence()
        .output(|| UpdateItemOutput::builder().build())
        .error(|| {
            UpdateItemError::ConditionalCheckFailedException(
                crate::testing::conditional_check_failed(),
            )
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&update]);
    let store = ClusterStore::new(client, "t");
    assert!(store.claim_archive_round(CLUSTER, 1000, 300).await.unwrap());
    assert!(!store.claim_archive_round(CLUSTER, 1000, 300).await.unwrap());
}

#[tokio::test]
async fn purging_backups_deletes_the_backups_partition_only() {
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.expression_attribute_values().unwrap()[":pk"]
                .as_s()
                .unwrap()
                == "BACKUPS#c-0123456789ab"
        })
        .then_output(|| {
            QueryOutput::builder()
                .items(Item::from([
                    ("pk".into(), s("BACKUPS#c-0123456789ab")),
                    ("sk".into(), s("BACKUP#20261201T000000Z-00000001")),
                ]))
                .items(Item::from([
                    ("pk".into(), s("BACKUPS#c-0123456789ab")),
                    ("sk".into(), s("ARCHIVE")),
                ]))
                .build()
        });
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let log = deleted.clone();
    let delete = mock!(aws_sdk_dynamodb::Client::delete_item)
        .match_requests(move |r| {
            let key = r.key().unwrap();
            log.lock().unwrap().push(format!(
                "{}/{}",
                key["pk"].as_s().unwrap(),
                key["sk"].as_s().unwrap()
            ));
            true
        })
        .then_output(|| DeleteItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query, &delete]);
    let count = ClusterStore::new(client, "t")
        .purge_backups(CLUSTER)
        .await
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(
        *deleted.lock().unwrap(),
        [
            "BACKUPS#c-0123456789ab/BACKUP#20261201T000000Z-00000001",
            "BACKUPS#c-0123456789ab/ARCHIVE"
        ]
    );
}
