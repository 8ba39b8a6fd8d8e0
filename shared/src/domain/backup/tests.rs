use super::*;
use crate::error::Error;

const CLUSTER: &str = "c-0123456789ab";

fn id(text: &str) -> BackupId {
    BackupId::parse(text).unwrap()
}

#[test]
fn backup_ids_have_the_contract_form() {
    let made = BackupId::new(epoch_of("2026-12-01T06:30:00Z").unwrap(), 0x0a1b2c3d);
    assert_eq!(made.as_str(), "20261201T063000Z-0a1b2c3d");
    assert_eq!(BackupId::parse(made.as_str()), Some(made));
    for bad in [
        "",
        "20261201T063000Z",
        "20261201T063000Z-0A1B2C3D",
        "20261201T063000Z-0a1b2c3",
        "20261201T063000-0a1b2c3d",
        "20261301T063000Z-0a1b2c3d",
        "20260230T063000Z-0a1b2c3d",
        "20261201T246000Z-0a1b2c3d",
        "2026-12-01T06:30:00Z-0a1b2c3d",
        "../../x",
    ] {
        assert_eq!(BackupId::parse(bad), None, "{bad}");
    }
    // Sortable by time: the string order is the time order.
    assert!(id("20261130T235959Z-ffffffff") < id("20261201T000000Z-00000000"));
}

#[test]
fn times_are_utc_rfc3339() {
    assert_eq!(epoch_of("1970-01-01T00:01:00Z").unwrap(), 60);
    assert_eq!(
        epoch_of("2026-12-01T06:30:00.250Z").unwrap(),
        epoch_of("2026-12-01T06:30:00Z").unwrap()
    );
    assert!(epoch_of("2026-12-01T06:30:00+01:00").is_err());
    assert!(epoch_of("yesterday").is_err());
    assert_eq!(format_epoch(60), "1970-01-01T00:01:00Z");
}

fn at(text: &str) -> i64 {
    epoch_of(text).unwrap()
}

fn record(id_text: &str, state: BackupState, trigger: BackupTrigger) -> BackupRecord {
    let id = id(id_text);
    let stamp = &id_text[..16];
    let requested = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let mut r = BackupRecord::pending(CLUSTER, id, trigger, at(&requested));
    r.state = state;
    if state == BackupState::Completed {
        // Done five minutes after it was asked for.
        r.started_at = Some(requested.clone());
        r.completed_at = Some(format_epoch(at(&requested) + 300));
    }
    r
}

fn manifest() -> Manifest {
    Manifest::parse(
        br#"{"formatVersion":1,"backupId":"20261201T063000Z-0a1b2c3d","clusterId":"c-0123456789ab",
        "method":"clone-local","mysqlVersion":"9.7.4","sourceHost":"ip-10-0-1-5","sourceServerUuid":"3e11fa47-71ca-11e1-9e33-c80aa9429562",
        "sourceRole":"SECONDARY","startedAt":"2026-12-01T06:30:01Z","completedAt":"2026-12-01T06:31:10Z",
        "gtidExecuted":"aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa:1-42","binlogFile":"binlog.000003","binlogPosition":157,
        "dataBytes":73400320,"archive":{"key":"clusters/c-0123456789ab/backups/20261201T063000Z-0a1b2c3d/data.tar.gz",
        "compression":"gzip","bytes":5242880,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#,
    )
    .unwrap()
}

#[test]
fn a_manifest_is_checked_against_its_record() {
    let backup = id("20261201T063000Z-0a1b2c3d");
    let good = manifest();
    good.check(CLUSTER, &backup).unwrap();
    let record = BackupRecord::pending(CLUSTER, backup.clone(), BackupTrigger::Api, 0);
    let done = record.completed_from(&good);
    assert_eq!(done.state, BackupState::Completed);
    assert_eq!(done.bytes, Some(5_242_880));
    assert_eq!(
        done.gtid_executed.as_deref(),
        Some("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa:1-42")
    );
    assert_eq!(done.mysql_version.as_deref(), Some("9.7.4"));
    assert_eq!(done.completed_at.as_deref(), Some("2026-12-01T06:31:10Z"));

    let broken: [fn(&mut Manifest); 8] = [
        |m| m.format_version = 2,
        |m| m.backup_id = "20261201T063000Z-ffffffff".into(),
        |m| m.cluster_id = "c-ffffffffffff".into(),
        |m| m.archive.bytes = 0,
        |m| m.archive.sha256 = "9F86D081".into(),
        |m| m.archive.key = "clusters/c-ffffffffffff/backups/x/data.tar.gz".into(),
        |m| m.gtid_executed = " ".into(),
        |m| m.completed_at = "soon".into(),
    ];
    for (i, breaks) in broken.iter().enumerate() {
        let mut m = good.clone();
        breaks(&mut m);
        assert!(m.check(CLUSTER, &backup).is_err(), "case {i}: {m:?}");
    }
    assert!(Manifest::parse(b"{\"formatVersion\":1}").is_err());
}

#[test]
fn a_scheduled_backup_is_due_one_interval_after_the_last_attempt() {
    let daily = BackupPolicy::default();
    let now = at("2026-12-02T06:29:00Z");
    assert!(due(&daily, &[], now), "a cluster without backups is due");
    let last = record(
        "20261201T063000Z-00000001",
        BackupState::Completed,
        BackupTrigger::Schedule,
    );
    assert!(!due(&daily, std::slice::from_ref(&last), now));
    assert!(due(
        &daily,
        std::slice::from_ref(&last),
        at("2026-12-02T06:30:00Z")
    ));
    // A failed attempt counts as an attempt: retried at the next slot, not every minute.
    let failed = record(
        "20261202T063000Z-00000002",
        BackupState::Failed,
        BackupTrigger::Schedule,
    );
    let both = [last.clone(), failed];
    assert!(!due(&daily, &both, at("2026-12-02T06:31:00Z")));
    assert!(due(&daily, &both, at("2026-12-03T06:30:00Z")));
    // An on-demand backup does not move the schedule, but one in flight holds it.
    let api = record(
        "20261202T000000Z-00000003",
        BackupState::Completed,
        BackupTrigger::Api,
    );
    assert!(due(
        &daily,
        &[last.clone(), api],
        at("2026-12-02T06:30:00Z")
    ));
    let running = record(
        "20261202T000000Z-00000004",
        BackupState::Running,
        BackupTrigger::Api,
    );
    assert!(!due(
        &daily,
        &[last.clone(), running],
        at("2026-12-02T06:30:00Z")
    ));
    let hourly = BackupPolicy {
        schedule: BackupSchedule::parse("hourly").unwrap(),
        retention_days: 1,
    };
    assert!(due(
        &hourly,
        std::slice::from_ref(&last),
        at("2026-12-01T07:30:00Z")
    ));
    assert!(!due(
        &hourly,
        std::slice::from_ref(&last),
        at("2026-12-01T07:29:59Z")
    ));
}

#[test]
fn backups_past_retention_expire_but_the_newest_completed_is_kept() {
    let week = BackupPolicy::default();
    let old = record(
        "20261101T000000Z-00000001",
        BackupState::Completed,
        BackupTrigger::Schedule,
    );
    let old_failed = record(
        "20261102T000000Z-00000002",
        BackupState::Failed,
        BackupTrigger::Schedule,
    );
    let recent = record(
        "20261130T000000Z-00000003",
        BackupState::Completed,
        BackupTrigger::Schedule,
    );
    let stuck = record(
        "20261101T000000Z-00000004",
        BackupState::Running,
        BackupTrigger::Api,
    );
    let records = [old.clone(), old_failed.clone(), recent.clone(), stuck];
    let now = at("2026-12-01T00:00:00Z");
    let gone: Vec<&str> = expired(&week, &records, now)
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(gone, [old.id.as_str(), old_failed.id.as_str()]);
    // The only completed backup stays, however old.
    let alone = [old.clone()];
    assert!(expired(&week, &alone, now).is_empty());
    // Binlogs are needed from the oldest kept completed backup's start.
    let kept = [&recent];
    assert_eq!(binlogs_needed_from(&kept), Some(at("2026-11-30T00:00:00Z")));
}

#[test]
fn a_point_in_time_picks_the_latest_backup_before_it_within_the_window() {
    let first = record(
        "20261201T000000Z-00000001",
        BackupState::Completed,
        BackupTrigger::Schedule,
    );
    let second = record(
        "20261201T120000Z-00000002",
        BackupState::Completed,
        BackupTrigger::Schedule,
    );
    let failed = record(
        "20261201T130000Z-00000003",
        BackupState::Failed,
        BackupTrigger::Schedule,
    );
    let records = [first.clone(), second.clone(), failed];
    let until = Some("2026-12-01T14:00:00Z");
    let now = at("2026-12-01T15:00:00Z");
    let pick = |t: &str| backup_for_point_in_time(CLUSTER, &records, until, at(t), now);
    // first completes at 00:05, second at 12:05.
    assert_eq!(pick("2026-12-01T06:00:00Z").unwrap().id, first.id);
    assert_eq!(pick("2026-12-01T12:05:00Z").unwrap().id, second.id);
    assert_eq!(pick("2026-12-01T14:00:00Z").unwrap().id, second.id);
    for (t, problem) in [
        ("2026-12-01T14:00:01Z", "outside"),
        ("2026-12-01T00:04:59Z", "outside"),
        ("2026-12-01T15:00:01Z", "future"),
    ] {
        match pick(t) {
            Err(Error::Validation {
                field,
                problem: p,
                fix,
            }) => {
                assert_eq!(field, "restore.pointInTime");
                assert!(p.contains(problem), "{t}: {p}");
                assert!(
                    fix.contains("restorable from 2026-12-01T00:05:00Z to 2026-12-01T14:00:00Z"),
                    "{t}: {fix}"
                );
            }
            other => panic!("{t}: expected a validation error, got {other:?}"),
        }
    }
    // Without an archive the window is the backups themselves.
    let none = backup_for_point_in_time(CLUSTER, &records, None, at("2026-12-01T06:00:00Z"), now);
    assert!(none.is_err());
    assert!(
        backup_for_point_in_time(CLUSTER, &[], until, at("2026-12-01T06:00:00Z"), now).is_err()
    );
}

#[test]
fn a_backup_by_id_must_exist_and_be_completed() {
    let done = record(
        "20261201T000000Z-00000001",
        BackupState::Completed,
        BackupTrigger::Api,
    );
    let running = record(
        "20261201T010000Z-00000002",
        BackupState::Running,
        BackupTrigger::Api,
    );
    let records = [done.clone(), running.clone()];
    assert_eq!(backup_by_id(&records, &done.id).unwrap().id, done.id);
    assert!(matches!(
        backup_by_id(&records, &running.id),
        Err(Error::Conflict(m)) if m.contains("RUNNING")
    ));
    assert!(matches!(
        backup_by_id(&records, &id("20261201T020000Z-00000003")),
        Err(Error::NotFound { kind: "backup", .. })
    ));
    assert_eq!(latest_completed(&records).unwrap().id, done.id);
}

#[test]
fn the_archive_report_is_the_last_line_of_the_output() {
    let out = "shipping binlog.000003\n{\"role\":\"PRIMARY\",\"serverUuid\":\"u\",\"shipped\":[\"binlog.000003\"],\"consistentAt\":\"2026-12-01T06:30:00Z\"}\n";
    let report = ArchiveReport::from_output(out).unwrap();
    assert_eq!(
        report.primary_consistent_at(),
        Some(at("2026-12-01T06:30:00Z"))
    );
    let secondary =
        ArchiveReport::from_output("{\"role\":\"SECONDARY\",\"skipped\":true}").unwrap();
    assert_eq!(secondary.primary_consistent_at(), None);
    assert_eq!(ArchiveReport::from_output("no json here"), None);
}

#[test]
fn schedules_and_records_round_trip_through_json() {
    for (text, hours) in [("hourly", 1), ("daily", 24), ("6h", 6), ("168h", 168)] {
        let s = BackupSchedule::parse(text).unwrap();
        assert_eq!(s.hours(), hours);
        assert_eq!(s.to_string(), text);
    }
    assert_eq!(BackupSchedule::parse("24h").unwrap().to_string(), "daily");
    let r = record(
        "20261201T000000Z-00000001",
        BackupState::Completed,
        BackupTrigger::Api,
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["state"], "COMPLETED");
    assert_eq!(json["trigger"], "api");
    assert_eq!(json["id"], "20261201T000000Z-00000001");
    let back: BackupRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}
