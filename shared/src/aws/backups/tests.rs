use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::Object;
use aws_smithy_mocks::{RuleMode, mock};

use super::*;
use crate::mocked_client;

const CLUSTER: &str = "c-0123456789ab";

fn backup() -> BackupId {
    BackupId::parse("20261201T063000Z-0a1b2c3d").unwrap()
}

const MANIFEST: &str = r#"{"formatVersion":1,"backupId":"20261201T063000Z-0a1b2c3d","clusterId":"c-0123456789ab","method":"clone-local","mysqlVersion":"9.7.4","sourceHost":"ip-10-0-1-5","sourceServerUuid":"u","sourceRole":"SECONDARY","startedAt":"2026-12-01T06:30:01Z","completedAt":"2026-12-01T06:31:10Z","gtidExecuted":"a:1-42","binlogFile":"binlog.000003","binlogPosition":157,"dataBytes":73400320,"archive":{"key":"clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/data.tar.gz","compression":"gzip","bytes":5242880,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#;

#[tokio::test]
async fn the_manifest_is_read_from_the_contract_key_and_absent_is_none() {
    let found = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("backups")
                && r.key()
                    == Some(
                        "clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/manifest.json",
                    )
        })
        .sequence()
        .output(|| {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(MANIFEST.as_bytes()))
                .build()
        })
        .error(|| {
            GetObjectError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("NoSuchKey")
                    .build(),
            )
        })
        .error(|| {
            GetObjectError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .build(),
            )
        })
        .build();
    let bucket = BackupBucket::new(
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&found]),
        "backups",
    );
    let manifest = bucket.manifest(CLUSTER, &backup()).await.unwrap().unwrap();
    assert_eq!(manifest.archive.bytes, 5_242_880);
    manifest.check(CLUSTER, &backup()).unwrap();
    assert_eq!(bucket.manifest(CLUSTER, &backup()).await.unwrap(), None);
    assert!(
        bucket.manifest(CLUSTER, &backup()).await.is_err(),
        "a denial is an error"
    );
}

fn listing(prefix: &'static str, objects: Vec<(&'static str, i64)>) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_s3::Client::list_objects_v2)
        .match_requests(move |r| r.prefix() == Some(prefix))
        .then_output(move || {
            let mut out = ListObjectsV2Output::builder();
            for (key, secs) in &objects {
                out = out.contents(
                    Object::builder()
                        .key(*key)
                        .last_modified(DateTime::from_secs(*secs))
                        .build(),
                );
            }
            out.build()
        })
}

fn deletions() -> (aws_smithy_mocks::Rule, Arc<Mutex<Vec<String>>>) {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let log = deleted.clone();
    let rule = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(move |r| {
            log.lock()
                .unwrap()
                .push(r.key().unwrap_or_default().to_string());
            true
        })
        .then_output(|| DeleteObjectOutput::builder().build());
    (rule, deleted)
}

#[tokio::test]
async fn only_binlogs_older_than_the_oldest_kept_backup_are_deleted() {
    let list = listing(
        "clusters/c-0123456789ab/binlogs/",
        vec![
            ("clusters/c-0123456789ab/binlogs/u/binlog.000001", 100),
            ("clusters/c-0123456789ab/binlogs/u/binlog.000002", 199),
            ("clusters/c-0123456789ab/binlogs/u/binlog.000003", 200),
            ("clusters/c-0123456789ab/binlogs/u/binlog.000004", 300),
        ],
    );
    let (delete, deleted) = deletions();
    let bucket = BackupBucket::new(
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete]),
        "backups",
    );
    assert_eq!(bucket.delete_binlogs_before(CLUSTER, 200).await.unwrap(), 2);
    assert_eq!(
        *deleted.lock().unwrap(),
        [
            "clusters/c-0123456789ab/binlogs/u/binlog.000001",
            "clusters/c-0123456789ab/binlogs/u/binlog.000002"
        ]
    );
}

#[tokio::test]
async fn a_backup_and_a_cluster_are_deleted_by_their_prefixes() {
    let one = listing(
        "clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/",
        vec![
            (
                "clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/data.tar.gz",
                1,
            ),
            (
                "clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/manifest.json",
                1,
            ),
        ],
    );
    let all = listing(
        "clusters/c-0123456789ab/",
        vec![("clusters/c-0123456789ab/binlogs/u/binlog.000001", 1)],
    );
    let (delete, deleted) = deletions();
    let bucket = BackupBucket::new(
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&one, &all, &delete]),
        "backups",
    );
    assert_eq!(bucket.delete_backup(CLUSTER, &backup()).await.unwrap(), 2);
    assert_eq!(bucket.purge_cluster(CLUSTER).await.unwrap(), 1);
    assert_eq!(deleted.lock().unwrap().len(), 3);
    assert!(
        deleted.lock().unwrap()[2].ends_with("binlog.000001"),
        "{:?}",
        deleted.lock().unwrap()
    );
}
