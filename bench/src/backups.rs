//! Backup and restore throughput (issue 16) on real MySQL 9.7 servers, side by side with the
//! tool an operator would otherwise reach for, `mysqldump | gzip` and `mysql < dump`.
//!
//! A 3-node cluster of real hosts (`local_cloud::hosts`, as in `database.rs`) is loaded with
//! `--backup-mb` MiB; then, each `--backup-rounds` times: `db-backup.sh` on a SECONDARY
//! (it refuses the PRIMARY while another member is ONLINE) streams a clone-local copy,
//! gzip-compressed, to the local cloud's S3 (fakecloud, reached through the network's
//! gateway relay, `Network::serve_s3`, as `tests/tests/backups_db.rs` does); `db-restore.sh`
//! restores it into a fresh installed host; and the peer dumps the application schema on the
//! same secondary and loads it into another fresh host. Once, the first restored host seeds a
//! new cluster (`db-create-cluster.sh`) that a fresh node joins by clone
//! (`db-add-instance.sh`) until ONLINE: the restored cluster's database READY, without EC2.
//!
//! Numbers only; it fails only when it cannot measure. What they are not: every host is a
//! network namespace on this machine (one disk, CPUs shared with the benchmark and fakecloud),
//! and the backup's upload goes to a local S3, while the peer's dump stays on the host's disk
//! (the peer does less: no upload, no checksum, no manifest).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use local_cloud::hosts::{Host, Network};
use local_cloud::{LocalCloud, REGION, Tools};
use serde::Serialize;

use crate::real_hosts::{RealHosts, text};
use crate::stats::Summary;
use crate::{BenchError, Result};

/// With punctuation, as generated passwords have it (the packaged validate_password policy).
const ADMIN_PASSWORD: &str = "Adm1n.pass-word_K*7+,=^~";
const APP_PASSWORD: &str = "App~pass^w0rd=K+3,*.-_";
/// This part's hosts (its errors say "backups: ...").
const HOSTS: RealHosts = RealHosts {
    part: "backups",
    admin_password: ADMIN_PASSWORD,
    app_password: APP_PASSWORD,
};
const BUCKET: &str = "ha-bench-backups";
/// A ClusterId as the stack makes them (`c-` and 12 lowercase hex digits).
const CLUSTER_ID: &str = "c-0000bac4bac0";
/// `bench-bk`: a network name no test and no other part uses (its address block is
/// reserved when it comes up, see `local_cloud::hosts::AddressSpace`).
const NETWORK: &str = "bench-bk";
/// Where the peer's dump is written on a host.
const DUMP: &str = "var/tmp/bench-dump.sql.gz";
const MB: f64 = 1_000_000.0;

/// What `--only backups` is given.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// MiB loaded into the application schema before anything is measured.
    pub mb: usize,
    /// Backups, restores, dumps and loads measured (each).
    pub rounds: usize,
}

/// One method's operation, measured `seconds.n` times.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    pub operation: String,
    pub seconds: Summary,
    /// What the operation moved, uncompressed (clone: the manifest's dataBytes, the whole
    /// instance; dump: the SQL text), MB (10^6 bytes).
    pub data_mb: f64,
    /// What is stored (clone: the archive's bytes in S3; dump: the .sql.gz), MB.
    pub stored_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupFigures {
    pub rounds: usize,
    pub loaded_mib: usize,
    /// InnoDB data + indexes of the application schema after the load (MB).
    pub table_mb: f64,
    pub rows: Vec<Row>,
    /// restore + db-create-cluster.sh + a fresh node joined by clone ONLINE (s, once).
    pub usable_cluster_seconds: f64,
    /// Of which db-create-cluster.sh + the join (s).
    pub create_and_join_seconds: f64,
}

fn failed(what: impl std::fmt::Display) -> BenchError {
    HOSTS.failed(what)
}

/// A shell pipeline on `host` (bash, pipefail) that must succeed.
fn shell(host: &Host, command: &str) -> Result<String> {
    let script = format!("set -euo pipefail; {command}");
    let output = host
        .exec(&[], &["bash", "-c", &script], None)
        .map_err(failed)?;
    if !output.status.success() {
        return Err(failed(format!(
            "`{command}` on {} failed: {}",
            host.name,
            text(&output.stderr)
        )));
    }
    Ok(text(&output.stdout).trim().to_string())
}

fn last_json(stdout: &str) -> Result<serde_json::Value> {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| failed(format!("last line is not JSON ({e}): {stdout}")))
}

/// `count` members, all ONLINE, as `seen_from` sees the group.
fn wait_online(seen_from: &Host, count: usize) -> Result<()> {
    HOSTS.wait_until(
        &format!("{count} ONLINE members seen from {}", seen_from.name),
        Duration::from_secs(600),
        || {
            let states = seen_from
                .sql("SELECT MEMBER_STATE FROM performance_schema.replication_group_members")
                .ok()?;
            let states: Vec<&str> = states.lines().collect();
            (states.len() == count && states.iter().all(|s| *s == "ONLINE")).then_some(())
        },
    )
}

/// Every host has applied the same transactions.
fn wait_caught_up(hosts: &[&Host]) -> Result<()> {
    HOSTS.wait_until("equal GTID sets", Duration::from_secs(300), || {
        let sets: Option<std::collections::BTreeSet<String>> = hosts
            .iter()
            .map(|h| h.sql("SELECT @@gtid_executed").ok())
            .collect();
        (sets?.len() == 1).then_some(())
    })
}

fn is_primary(host: &Host) -> bool {
    host.sql(
        "SELECT MEMBER_ROLE FROM performance_schema.replication_group_members \
         WHERE MEMBER_ID = @@server_uuid",
    )
    .is_ok_and(|r| r == "PRIMARY")
}

/// A backup id of the contract: `<yyyymmddThhmmssZ>-<8 lowercase hex>`.
fn backup_id(round: usize) -> Result<String> {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .map_err(|e| failed(format!("date: {e}")))?;
    Ok(format!("{}-b0{round:06x}", text(&output.stdout).trim()))
}

fn bytes_of(value: &serde_json::Value, what: &str) -> Result<f64> {
    value
        .as_u64()
        .map(|v| v as f64)
        .ok_or_else(|| failed(format!("{what} is not a number")))
}

/// Creates the backup bucket in the local cloud's S3 (the stack's bucket on AWS).
fn create_bucket(cloud: &LocalCloud) -> Result<()> {
    // Called on a blocking thread of the benchmark's runtime (spawn_blocking): its handle
    // may block there.
    let runtime = tokio::runtime::Handle::current();
    runtime.block_on(async {
        let sdk = cloud.sdk_config().await;
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        client
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .map(drop)
            .map_err(|e| failed(format!("create bucket: {e:?}")))
    })
}

/// Measure everything (see the module's doc). Runs on a blocking thread.
pub fn measure(settings: Settings) -> Result<BackupFigures> {
    local_cloud::hosts::require_host_support().map_err(|e| BenchError::Setup(e.to_string()))?;
    let tools = Tools::locate().map_err(|e| BenchError::Setup(e.to_string()))?;
    let cloud = LocalCloud::start(&tools).map_err(|e| BenchError::Setup(e.to_string()))?;
    create_bucket(&cloud)?;
    let aws_env = cloud.aws_env();
    let var = |name: &str| {
        aws_env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| BenchError::Setup(format!("{name} not in the local cloud's env")))
    };
    let setup = Instant::now();
    let network = Network::up(NETWORK).map_err(failed)?;
    let _relay = network
        .serve_s3(
            &cloud.endpoint(),
            REGION,
            &var("AWS_ACCESS_KEY_ID")?,
            &var("AWS_SECRET_ACCESS_KEY")?,
        )
        .map_err(failed)?;
    let a = HOSTS.db_node(&network, "b-bk-a", 11)?;
    let b = HOSTS.db_node(&network, "b-bk-b", 12)?;
    let c = HOSTS.db_node(&network, "b-bk-c", 13)?;
    HOSTS.script(&a, "db-create-cluster.sh", &["bench-bk"])?;
    for node in [&b, &c] {
        HOSTS.script(&a, "db-add-instance.sh", &[&node.dns_name])?;
    }
    wait_online(&a, 3)?;
    if !is_primary(&a) {
        return Err(failed("the seed is not the PRIMARY"));
    }
    // 1 KiB rows of random hex text (HEX(RANDOM_BYTES(512))): gzip halves it, as it roughly
    // does text, where a repeated string would shrink to nothing and flatter the archive.
    // 8 MiB a transaction: under Group Replication's transaction size limit (150 MB).
    a.sql(
        "CREATE TABLE wordpress.bench_blob (id BIGINT AUTO_INCREMENT PRIMARY KEY, b VARCHAR(1024) NOT NULL)",
    )
    .map_err(failed)?;
    let total_rows = settings.mb * 1024;
    let mut loaded = 0;
    while loaded < total_rows {
        let rows = (total_rows - loaded).min(8192);
        a.sql(&format!(
            "SET SESSION cte_max_recursion_depth = {rows}; \
             INSERT INTO wordpress.bench_blob (b) \
             WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) \
             SELECT HEX(RANDOM_BYTES(512)) FROM s"
        ))
        .map_err(failed)?;
        loaded += rows;
    }
    // On the primary: ANALYZE TABLE writes to the binary log (refused on a secondary).
    let table_mb = a
        .sql(
            "ANALYZE TABLE wordpress.bench_blob; \
             SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'wordpress'",
        )
        .map_err(failed)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |b| b / MB);
    wait_caught_up(&[&a, &b, &c])?;
    eprintln!(
        "[bench] backups: 3 real MySQL 9.7 nodes formed a cluster and loaded {} MiB in {:.1} s",
        settings.mb,
        setup.elapsed().as_secs_f64()
    );

    let secondary = &c;
    let (mut backup_s, mut restore_s, mut dump_s, mut load_s) = (vec![], vec![], vec![], vec![]);
    let (mut data_mb, mut archive_mb, mut sql_mb, mut gz_mb) = (0.0, 0.0, 0.0, 0.0);
    let mut usable = None;
    let mut octet = 20;
    for round in 1..=settings.rounds {
        // The clone-local backup on a SECONDARY, to S3.
        let id = backup_id(round)?;
        let start = Instant::now();
        let manifest =
            last_json(&HOSTS.script(secondary, "db-backup.sh", &[BUCKET, CLUSTER_ID, &id])?)?;
        let seconds = start.elapsed().as_secs_f64();
        backup_s.push(seconds);
        data_mb = bytes_of(&manifest["dataBytes"], "dataBytes")? / MB;
        archive_mb = bytes_of(&manifest["archive"]["bytes"], "archive.bytes")? / MB;
        eprintln!(
            "[bench] backups: backup {round}/{}: {data_mb:.1} MB ({archive_mb:.1} MB gzip) in {seconds:.1} s",
            settings.rounds
        );

        // Its restore into a fresh installed host.
        let target = HOSTS.db_node(&network, &format!("b-bk-r{round}"), octet)?;
        octet += 1;
        let start = Instant::now();
        HOSTS.script(&target, "db-restore.sh", &[BUCKET, CLUSTER_ID, &id])?;
        let seconds = start.elapsed().as_secs_f64();
        restore_s.push(seconds);
        eprintln!(
            "[bench] backups: restore {round}/{}: {seconds:.1} s",
            settings.rounds
        );
        if usable.is_none() {
            // The restored node seeds a new cluster a fresh node joins by clone.
            let joiner = HOSTS.db_node(&network, "b-bk-j", octet)?;
            octet += 1;
            let start = Instant::now();
            HOSTS.script(&target, "db-create-cluster.sh", &["bench-restored"])?;
            let out = HOSTS.script(&target, "db-add-instance.sh", &[&joiner.dns_name])?;
            if !out.contains("added to cluster") {
                return Err(failed(format!("db-add-instance.sh did not add: {out}")));
            }
            wait_online(&target, 2)?;
            let create_and_join = start.elapsed().as_secs_f64();
            eprintln!(
                "[bench] backups: restored cluster usable (2 ONLINE) {:.1} s after the restore started",
                seconds + create_and_join
            );
            usable = Some((seconds + create_and_join, create_and_join));
        }
        drop(target);

        // The peer: a logical dump of the application schema on the same secondary, gzip.
        let start = Instant::now();
        shell(
            secondary,
            &format!(
                "mysqldump --user=root --single-transaction --triggers --routines --events \
                 --set-gtid-purged=OFF --databases wordpress | gzip > /{DUMP}"
            ),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        dump_s.push(seconds);
        gz_mb = shell(secondary, &format!("stat -c %s /{DUMP}"))?
            .parse::<f64>()
            .map_err(failed)?
            / MB;
        sql_mb = shell(secondary, &format!("gunzip -c /{DUMP} | wc -c"))?
            .parse::<f64>()
            .map_err(failed)?
            / MB;
        eprintln!(
            "[bench] backups: mysqldump {round}/{}: {sql_mb:.1} MB ({gz_mb:.1} MB gzip) in {seconds:.1} s",
            settings.rounds
        );
        // ... loaded into a fresh installed host (the copy between hosts is not timed).
        let target = HOSTS.db_node(&network, &format!("b-bk-m{round}"), octet)?;
        octet += 1;
        let to = target.root().join(DUMP);
        std::fs::copy(secondary.root().join(DUMP), &to)
            .map_err(|e| BenchError::Io(to.display().to_string(), e))?;
        let start = Instant::now();
        shell(&target, &format!("gunzip -c /{DUMP} | mysql --user=root"))?;
        let seconds = start.elapsed().as_secs_f64();
        load_s.push(seconds);
        let rows = target
            .sql("SELECT COUNT(*) FROM wordpress.bench_blob")
            .map_err(failed)?;
        if rows != total_rows.to_string() {
            return Err(failed(format!(
                "the dump loaded {rows} rows, not {total_rows}"
            )));
        }
        eprintln!(
            "[bench] backups: mysql < dump {round}/{}: {seconds:.1} s",
            settings.rounds
        );
        shell(secondary, &format!("rm -f /{DUMP}"))?;
    }
    let (usable_cluster_seconds, create_and_join_seconds) =
        usable.ok_or_else(|| failed("no round ran (--backup-rounds 0)"))?;
    let row = |method: &str, operation: &str, s: &[f64], data: f64, stored: f64| Row {
        method: method.to_string(),
        operation: operation.to_string(),
        seconds: Summary::of(s.iter().copied()),
        data_mb: data,
        stored_mb: stored,
    };
    Ok(BackupFigures {
        rounds: settings.rounds,
        loaded_mib: settings.mb,
        table_mb,
        rows: vec![
            row(
                "clone-local (db-backup.sh)",
                "backup on a secondary -> S3",
                &backup_s,
                data_mb,
                archive_mb,
            ),
            row(
                "clone-local (db-restore.sh)",
                "restore S3 -> fresh host",
                &restore_s,
                data_mb,
                archive_mb,
            ),
            row(
                "mysqldump + gzip",
                "dump on a secondary -> local file",
                &dump_s,
                sql_mb,
                gz_mb,
            ),
            row(
                "mysql < dump",
                "load local file -> fresh host",
                &load_s,
                sql_mb,
                gz_mb,
            ),
        ],
        usable_cluster_seconds,
        create_and_join_seconds,
    })
}

/// The figures as the terminal shows them, in the style of the other sections.
pub fn table(f: &BackupFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Backup and restore on real MySQL 9.7 ({} MiB loaded, {:.1} MB of tables; hosts in network namespaces on this machine; N = {})\n",
        f.loaded_mib, f.table_mb, f.rounds
    );
    let _ = writeln!(
        out,
        "| method | operation | data MB | stored MB | median s | min s | max s | data MB/s | stored MB/s | table MB/s |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &f.rows {
        let s = &r.seconds;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.method,
            r.operation,
            r.data_mb,
            r.stored_mb,
            s.median,
            s.min,
            s.max,
            r.data_mb / s.median,
            r.stored_mb / s.median,
            f.table_mb / s.median,
        );
    }
    let _ = writeln!(
        out,
        "\n  restored cluster usable (restore + db-create-cluster.sh + a node joined by clone ONLINE): {:.1} s ({:.1} s after the restore)",
        f.usable_cluster_seconds, f.create_and_join_seconds
    );
    let _ = writeln!(
        out,
        "  data MB: clone = the instance copied (manifest dataBytes), dump = the SQL text; stored MB: the gzip archive in S3 / the .sql.gz on disk; table MB/s: the application's tables over the time"
    );
    out
}
