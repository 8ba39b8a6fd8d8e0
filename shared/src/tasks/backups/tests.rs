use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::{Command, CommandInvocationStatus};
use aws_smithy_mocks::{Rule, RuleMode, mock};

use super::*;
use crate::aws::commands::CommandSettings;
use crate::aws::store::PendingArchive;
use crate::domain::backup::ArchiveState;
use crate::domain::cluster::Node;
use crate::mocked_client;

const ID: &str = "c-0123456789ab";
const NOW: i64 = 1_796_112_000; // 2026-12-01T08:00:00Z

fn node(slot: &str, role: &str) -> Node {
    Node {
        slot: slot.into(),
        tier: Tier::Db,
        instance_id: Some(format!("i-{slot}")),
        state: NodeState::Running,
        availability_zone: None,
        subnet_id: None,
        role: Some(role.into()),
        target_health: None,
        host: None,
        member_state: Some("ONLINE".into()),
        group_name: None,
        launch_token: None,
        updated_at: "2026-11-24T00:00:00Z".into(),
    }
}

fn cluster() -> Cluster {
    let spec = crate::domain::spec::ClusterSpec::from_request_body(
        br#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#,
    )
    .unwrap();
    Cluster {
        id: ID.into(),
        phase: Phase::Ready,
        step: None,
        spec,
        generation: 2,
        version: 9,
        created_at: "2026-11-24T00:00:00Z".into(),
        updated_at: "2026-11-24T00:00:00Z".into(),
        last_error: None,
        target_group_arn: None,
        replacing: Vec::new(),
        nodes: vec![
            node("db-0", "PRIMARY"),
            node("db-1", "SECONDARY"),
            node("db-2", "SECONDARY"),
        ],
        actions: Vec::new(),
    }
}

/// A recent archive round, so the archive step stays quiet unless a test wants it.
fn quiet_archive() -> Option<ArchiveState> {
    Some(ArchiveState {
        restorable_until: None,
        server_uuid: None,
        last_command_id: None,
        last_sent_at: Some(format_epoch(NOW - 10)),
    })
}

/// What the mocks saw: every DynamoDB write and every SendCommand.
#[derive(Default)]
struct Seen {
    puts: Vec<aws_sdk_dynamodb::operation::put_item::PutItemInput>,
    updates: Vec<aws_sdk_dynamodb::operation::update_item::UpdateItemInput>,
    sends: Vec<aws_sdk_ssm::operation::send_command::SendCommandInput>,
}

type Shared = Arc<Mutex<Seen>>;

fn puts(seen: &Shared) -> Rule {
    let log = seen.clone();
    mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| {
            log.lock().unwrap().puts.push(r.clone());
            true
        })
        .then_output(|| PutItemOutput::builder().build())
}

fn updates(seen: &Shared) -> Rule {
    let log = seen.clone();
    mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |r| {
            log.lock().unwrap().updates.push(r.clone());
            true
        })
        .then_output(|| UpdateItemOutput::builder().build())
}

fn sends(seen: &Shared) -> Rule {
    let log = seen.clone();
    mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(move |r| {
            log.lock().unwrap().sends.push(r.clone());
            true
        })
        .then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id("cmd-new").build())
                .build()
        })
}

fn invocation(
    instance: &'static str,
    status: CommandInvocationStatus,
    code: i32,
    out: &'static str,
    err: &'static str,
) -> Rule {
    mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(move |r| r.instance_id() == Some(instance))
        .then_output(move || {
            GetCommandInvocationOutput::builder()
                .status(status.clone())
                .response_code(code)
                .standard_output_content(out)
                .standard_error_content(err)
                .build()
        })
}

fn no_such_key() -> GetObjectError {
    GetObjectError::generic(
        aws_smithy_types::error::ErrorMetadata::builder()
            .code("NoSuchKey")
            .build(),
    )
}

const MANIFEST: &str = r#"{"formatVersion":1,"backupId":"20261201T063000Z-0a1b2c3d","clusterId":"c-0123456789ab","method":"clone-local","mysqlVersion":"9.7.4","sourceHost":"ip-10-0-1-5","sourceServerUuid":"u","sourceRole":"SECONDARY","startedAt":"2026-12-01T06:30:01Z","completedAt":"2026-12-01T06:31:10Z","gtidExecuted":"a:1-42","binlogFile":"binlog.000003","binlogPosition":157,"dataBytes":73400320,"archive":{"key":"clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/data.tar.gz","compression":"gzip","bytes":5242880,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#;

/// The tick on these clients; command output is read from GetCommandInvocation (the
/// output bucket answers NoSuchKey, as for an empty stream).
fn backups(
    dynamodb: aws_sdk_dynamodb::Client,
    ssm: aws_sdk_ssm::Client,
    backup_s3: aws_sdk_s3::Client,
) -> Backups {
    let output_missing = mock!(aws_sdk_s3::Client::get_object).then_error(no_such_key);
    Backups {
        store: ClusterStore::new(dynamodb, "table"),
        commands: Commands::new(
            ssm,
            mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&output_missing]),
            CommandSettings {
                document_prefix: "ha".into(),
                output_bucket: "outputs".into(),
            },
        ),
        bucket: BackupBucket::new(backup_s3, "backups"),
        archive_seconds: DEFAULT_ARCHIVE_SECONDS,
        attempt_timeout_seconds: DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
    }
}

fn running(slot: u32, command: Option<&str>, started: i64) -> BackupRecord {
    let mut r = BackupRecord::pending(
        ID,
        BackupId::parse("20261201T063000Z-0a1b2c3d").unwrap(),
        BackupTrigger::Schedule,
        started,
    );
    r.state = BackupState::Running;
    r.slot = Some(slot);
    r.instance_id = Some(format!("i-db-{slot}"));
    r.command_id = command.map(str::to_string);
    r.started_at = Some(format_epoch(started));
    r.revision = 4;
    r
}

fn written_records(seen: &Shared) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .puts
        .iter()
        .filter(|p| {
            p.item().unwrap()["pk"]
                .as_s()
                .unwrap()
                .starts_with("BACKUPS#")
        })
        .map(|p| serde_json::from_str(p.item().unwrap()["data"].as_s().unwrap()).unwrap())
        .collect()
}

fn actions(seen: &Shared) -> Vec<String> {
    seen.lock()
        .unwrap()
        .puts
        .iter()
        .filter(|p| {
            p.item().unwrap()["pk"]
                .as_s()
                .unwrap()
                .starts_with("ACTIONS#")
        })
        .map(|p| {
            let data: serde_json::Value =
                serde_json::from_str(p.item().unwrap()["data"].as_s().unwrap()).unwrap();
            format!(
                "{}: {}",
                data["action"].as_str().unwrap(),
                data["detail"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_running_backup_is_judged_from_its_invocation() {
    let record = running(1, Some("cmd-1"), NOW - 60);
    let inv = |status, code| Invocation {
        instance_id: "i-db-1".into(),
        status,
        response_code: code,
        status_details: "detail".into(),
    };
    assert_eq!(
        judge(&record, Some(&inv(CommandStatus::InProgress, -1)), NOW),
        Verdict::Wait
    );
    assert_eq!(
        judge(&record, None, NOW),
        Verdict::Wait,
        "just sent: SSM may not know it yet"
    );
    assert_eq!(
        judge(&record, Some(&inv(CommandStatus::Success, 0)), NOW),
        Verdict::Succeeded
    );
    assert_eq!(
        judge(&record, Some(&inv(CommandStatus::Failed, 3)), NOW),
        Verdict::Refused
    );
    assert!(matches!(
        judge(&record, Some(&inv(CommandStatus::Failed, 1)), NOW),
        Verdict::Failed(m) if m.contains("exit code 1")
    ));
    assert!(matches!(
        judge(&record, Some(&inv(CommandStatus::TimedOut, -1)), NOW),
        Verdict::Failed(_)
    ));
    // Too old: still running after the timeout, or never known to SSM.
    let old = running(1, Some("cmd-1"), NOW - DEFAULT_ATTEMPT_TIMEOUT_SECONDS - 1);
    assert!(matches!(
        judge(&old, Some(&inv(CommandStatus::InProgress, -1)), NOW),
        Verdict::Failed(m) if m.contains("no result")
    ));
    assert!(matches!(judge(&old, None, NOW), Verdict::Failed(_)));
    // Claimed, command never recorded: waits the grace, then fails (never sent again).
    let unsent = running(1, None, NOW - 60);
    assert_eq!(judge(&unsent, None, NOW), Verdict::Wait);
    let lost = running(1, None, NOW - SEND_GRACE_SECONDS - 1);
    assert!(matches!(judge(&lost, None, NOW), Verdict::Failed(m) if m.contains("never recorded")));
}

#[test]
fn backups_run_on_a_secondary_never_first_on_the_seed() {
    let mut c = cluster();
    // db-0 is the PRIMARY: both secondaries come first, db-1 before db-2.
    assert_eq!(
        candidates(&c, &[]),
        [
            (1, "i-db-1".into()),
            (2, "i-db-2".into()),
            (0, "i-db-0".into())
        ]
    );
    assert_eq!(
        candidates(&c, &[1]),
        [(2, "i-db-2".into()), (0, "i-db-0".into())]
    );
    // A recovering secondary goes after an ONLINE one; a terminated node is no candidate.
    c.nodes[1].member_state = Some("RECOVERING".into());
    c.nodes[2].state = NodeState::Terminated;
    assert_eq!(
        candidates(&c, &[]),
        [(1, "i-db-1".into()), (0, "i-db-0".into())]
    );
}

#[test]
fn a_scheduled_id_is_the_same_within_a_minute_and_per_cluster() {
    let a = scheduled_id(ID, NOW + 5);
    assert_eq!(a, scheduled_id(ID, NOW + 59));
    assert_ne!(a, scheduled_id(ID, NOW + 60));
    assert_ne!(a, scheduled_id("c-ffffffffffff", NOW + 5));
    assert!(a.as_str().starts_with("20261201T080000Z-"), "{a}");
}

#[tokio::test]
async fn a_successful_backup_completes_from_its_checked_manifest() {
    let seen = Shared::default();
    let (put, update) = (puts(&seen), updates(&seen));
    let ok = invocation("i-db-1", CommandInvocationStatus::Success, 0, MANIFEST, "");
    let manifest = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("backups")
                && r.key()
                    == Some(
                        "clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/manifest.json",
                    )
        })
        .then_output(|| {
            GetObjectOutput::builder()
                .body(aws_sdk_s3::primitives::ByteStream::from_static(
                    MANIFEST.as_bytes(),
                ))
                .build()
        });
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&ok]),
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&manifest]),
    );
    let history = BackupHistory {
        records: vec![running(1, Some("cmd-1"), NOW - 120)],
        archive: quiet_archive(),
        archive_pending: None,
    };
    let events = tick
        .handle_cluster(&cluster(), &history, NOW)
        .await
        .unwrap();
    assert_eq!(
        events,
        [(
            ID.into(),
            "20261201T063000Z-0a1b2c3d".into(),
            "backup-completed".into()
        )]
    );
    let records = written_records(&seen);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["state"], "COMPLETED");
    assert_eq!(records[0]["bytes"], 5_242_880);
    assert_eq!(records[0]["gtidExecuted"], "a:1-42");
    let put = seen.lock().unwrap().puts[0].clone();
    assert_eq!(
        put.expression_attribute_values().unwrap()[":rev"]
            .as_n()
            .unwrap(),
        "4",
        "moved from the revision it was read at"
    );
    assert!(
        actions(&seen)[0]
            .starts_with("backup-completed: backup 20261201T063000Z-0a1b2c3d completed on db-1")
    );
    assert!(
        seen.lock().unwrap().sends.is_empty(),
        "the completed backup of two minutes ago keeps the daily schedule quiet"
    );
}

#[tokio::test]
async fn a_success_without_a_manifest_fails_the_backup() {
    let seen = Shared::default();
    let (put, update) = (puts(&seen), updates(&seen));
    let ok = invocation("i-db-1", CommandInvocationStatus::Success, 0, "done", "");
    let missing = mock!(aws_sdk_s3::Client::get_object).then_error(no_such_key);
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&ok]),
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&missing]),
    );
    let mut c = cluster();
    // Not READY: nothing new starts, the running one is still resolved.
    c.phase = Phase::Healing;
    let history = BackupHistory {
        records: vec![running(1, Some("cmd-1"), NOW - 120)],
        archive: None,
        archive_pending: None,
    };
    tick.handle_cluster(&c, &history, NOW).await.unwrap();
    let records = written_records(&seen);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["state"], "FAILED");
    assert!(
        records[0]["failure"]
            .as_str()
            .unwrap()
            .contains("no manifest")
    );
    assert!(actions(&seen)[0].starts_with("backup-failed:"));
    assert!(seen.lock().unwrap().sends.is_empty());
}

#[tokio::test]
async fn a_refusal_moves_the_same_backup_to_the_next_node_at_once() {
    let seen = Shared::default();
    let (put, update, send) = (puts(&seen), updates(&seen), sends(&seen));
    let refused = invocation(
        "i-db-1",
        CommandInvocationStatus::Failed,
        3,
        "",
        "refusing: this node is the PRIMARY while another member is ONLINE",
    );
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&refused, &send]),
        mocked_client!(aws_sdk_s3, []),
    );
    let history = BackupHistory {
        records: vec![running(1, Some("cmd-1"), NOW - 120)],
        archive: quiet_archive(),
        archive_pending: None,
    };
    tick.handle_cluster(&cluster(), &history, NOW)
        .await
        .unwrap();
    let seen_now = seen.lock().unwrap();
    assert_eq!(seen_now.sends.len(), 1, "one command for the next node");
    let send = &seen_now.sends[0];
    assert_eq!(send.document_name(), Some("ha-DbBackup"));
    assert_eq!(send.instance_ids(), ["i-db-2".to_string()]);
    let params = send.parameters().unwrap();
    assert_eq!(params["backupId"], ["20261201T063000Z-0a1b2c3d"]);
    assert_eq!(params["clusterId"], [ID]);
    assert_eq!(params["bucket"], ["backups"]);
    // The script reads the admin password on the node, from the cluster's secret: the
    // document requires its name (an e2e run on real hosts failed without it).
    assert_eq!(
        params["adminSecretId"],
        [crate::aws::secrets::admin_secret_name(ID)]
    );
    drop(seen_now);
    let records = written_records(&seen);
    // The claim on db-2 (no command yet), then the command id.
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["state"], "RUNNING");
    assert_eq!(records[0]["slot"], 2);
    assert!(records[0].get("commandId").is_none());
    assert_eq!(records[0]["refusedSlots"], serde_json::json!([1]));
    assert_eq!(records[1]["commandId"], "cmd-new");
    let log = actions(&seen);
    assert!(
        log[0].starts_with("backup-refused:") && log[0].contains("PRIMARY"),
        "{log:?}"
    );
    assert!(log[1].starts_with("backup-started:"), "{log:?}");
}

#[tokio::test]
async fn a_due_backup_starts_once_even_when_two_ticks_overlap() {
    // First tick: the scheduled record is created, claimed on db-1 and sent.
    let seen = Shared::default();
    let (put, update, send) = (puts(&seen), updates(&seen), sends(&seen));
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]),
        mocked_client!(aws_sdk_s3, []),
    );
    let history = BackupHistory {
        records: Vec::new(),
        archive: quiet_archive(),
        archive_pending: None,
    };
    tick.handle_cluster(&cluster(), &history, NOW)
        .await
        .unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.sends.len(), 1);
        assert_eq!(seen.sends[0].instance_ids(), ["i-db-1".to_string()]);
        assert_eq!(
            seen.puts[0].condition_expression(),
            Some("attribute_not_exists(pk)"),
            "the scheduled record is created conditionally"
        );
    }
    let records = written_records(&seen);
    assert_eq!(records[0]["trigger"], "schedule");
    assert_eq!(records[0]["id"], scheduled_id(ID, NOW).as_str());

    // Second, overlapping tick: its create loses (same id), so it sends nothing.
    let seen2 = Shared::default();
    let log = seen2.clone();
    let lost_create =
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                log.lock().unwrap().puts.push(r.clone());
                true
            })
            .then_error(|| {
                PutItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            });
    let (update2, send2) = (updates(&seen2), sends(&seen2));
    let tick = backups(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&lost_create, &update2]
        ),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send2]),
        mocked_client!(aws_sdk_s3, []),
    );
    tick.handle_cluster(&cluster(), &history, NOW + 30)
        .await
        .unwrap();
    assert!(seen2.lock().unwrap().sends.is_empty(), "no second command");
    assert_eq!(seen2.lock().unwrap().puts.len(), 1);
}

#[tokio::test]
async fn nothing_starts_while_a_backup_runs_or_before_it_is_due() {
    let seen = Shared::default();
    let (put, update, send) = (puts(&seen), updates(&seen), sends(&seen));
    let waiting = invocation("i-db-1", CommandInvocationStatus::InProgress, -1, "", "");
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&waiting, &send]),
        mocked_client!(aws_sdk_s3, []),
    );
    let history = BackupHistory {
        records: vec![running(1, Some("cmd-1"), NOW - 120)],
        archive: quiet_archive(),
        archive_pending: None,
    };
    tick.handle_cluster(&cluster(), &history, NOW)
        .await
        .unwrap();
    assert!(seen.lock().unwrap().sends.is_empty());
    assert!(seen.lock().unwrap().puts.is_empty());
}

#[tokio::test]
async fn the_primary_report_of_an_archive_round_moves_restorable_until_and_a_new_round_is_sent() {
    let seen = Shared::default();
    let (put, update, send) = (puts(&seen), updates(&seen), sends(&seen));
    let primary = invocation(
        "i-db-0",
        CommandInvocationStatus::Success,
        0,
        "{\"role\":\"PRIMARY\",\"serverUuid\":\"u-0\",\"shipped\":[\"binlog.000007\"],\"consistentAt\":\"2026-12-01T07:54:30Z\"}\n",
        "",
    );
    let s1 = invocation(
        "i-db-1",
        CommandInvocationStatus::Success,
        0,
        "{\"role\":\"SECONDARY\",\"skipped\":true}",
        "",
    );
    let s2 = invocation(
        "i-db-2",
        CommandInvocationStatus::Success,
        0,
        "{\"role\":\"SECONDARY\",\"skipped\":true}",
        "",
    );
    let tick = backups(
        mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &update]),
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&primary, &s1, &s2, &send]),
        mocked_client!(aws_sdk_s3, []),
    );
    // A completed backup from an hour ago keeps the schedule quiet.
    let mut done = running(1, Some("cmd-0"), NOW - 3600);
    done.state = BackupState::Completed;
    done.completed_at = Some(format_epoch(NOW - 3500));
    let history = BackupHistory {
        records: vec![done],
        archive: Some(ArchiveState {
            restorable_until: Some("2026-12-01T07:49:00Z".into()),
            server_uuid: Some("u-0".into()),
            last_command_id: Some("cmd-arch".into()),
            last_sent_at: Some(format_epoch(NOW - 300)),
        }),
        archive_pending: Some(PendingArchive {
            command_id: "cmd-arch".into(),
            sent_epoch: NOW - 300,
        }),
    };
    tick.handle_cluster(&cluster(), &history, NOW)
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let finish = seen
        .updates
        .iter()
        .find(|u| {
            u.update_expression()
                .is_some_and(|e| e.contains("restorable_until"))
        })
        .expect("restorableUntil written");
    let values = finish.expression_attribute_values().unwrap();
    assert_eq!(values[":until"].as_s().unwrap(), "2026-12-01T07:54:30Z");
    assert_eq!(values[":uuid"].as_s().unwrap(), "u-0");
    // The next round: claimed, sent to every database node, recorded.
    assert!(seen.updates.iter().any(|u| u.condition_expression()
        == Some("attribute_not_exists(sent_epoch) OR sent_epoch <= :cutoff")));
    assert_eq!(seen.sends.len(), 1);
    assert_eq!(seen.sends[0].document_name(), Some("ha-DbBinlogArchive"));
    assert_eq!(seen.sends[0].instance_ids().len(), 3);
    let params = seen.sends[0].parameters().unwrap();
    assert_eq!(
        params["adminSecretId"],
        [crate::aws::secrets::admin_secret_name(ID)]
    );
    assert_eq!(params["clusterId"], [ID]);
    assert!(seen.updates.iter().any(|u| {
        u.update_expression()
            .is_some_and(|e| e.contains("pending_command = :command"))
    }));
}

#[tokio::test]
async fn expired_backups_are_deleted_objects_first_and_old_binlogs_with_them() {
    let seen = Shared::default();
    let (put, update) = (puts(&seen), updates(&seen));
    let deleted = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = deleted.clone();
    let delete_ddb = mock!(aws_sdk_dynamodb::Client::delete_item)
        .match_requests(move |r| {
            log.lock()
                .unwrap()
                .push(format!("ddb:{}", r.key().unwrap()["sk"].as_s().unwrap()));
            true
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder().build()
        });
    let list = mock!(aws_sdk_s3::Client::list_objects_v2).then_output(|| {
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder()
            .contents(
                aws_sdk_s3::types::Object::builder()
                    .key("clusters/c-0123456789ab/x")
                    .last_modified(aws_smithy_types::DateTime::from_secs(0))
                    .build(),
            )
            .build()
    });
    let log = deleted.clone();
    let delete_s3 = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(move |r| {
            log.lock().unwrap().push(format!("s3:{}", r.key().unwrap()));
            true
        })
        .then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        });
    let tick = backups(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&put, &update, &delete_ddb]
        ),
        mocked_client!(aws_sdk_ssm, []),
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete_s3]),
    );
    let completed = |id: &str, at: i64| {
        let mut r = running(1, Some("cmd"), at);
        r.id = BackupId::parse(id).unwrap();
        r.state = BackupState::Completed;
        r.completed_at = Some(format_epoch(at + 60));
        r
    };
    let history = BackupHistory {
        records: vec![
            completed("20261101T000000Z-00000001", NOW - 30 * 86_400),
            completed("20261201T070000Z-00000002", NOW - 3600),
        ],
        archive: quiet_archive(),
        archive_pending: None,
    };
    let mut c = cluster();
    c.phase = Phase::Deleted;
    tick.handle_cluster(&c, &history, NOW).await.unwrap();
    let deleted = deleted.lock().unwrap();
    assert_eq!(
        deleted[..2],
        [
            "s3:clusters/c-0123456789ab/x".to_string(),
            "ddb:BACKUP#20261101T000000Z-00000001".to_string()
        ],
        "the objects go before the record that finds them"
    );
    // Then the binlogs before the kept backup (the listing's object is from 1970).
    assert_eq!(deleted.len(), 3);
    assert!(actions(&seen)[0].starts_with("backup-expired: backup 20261101T000000Z-00000001"));
}
