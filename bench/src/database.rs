//! The database tier on real MySQL 9.7 servers (issue 14): how long a primary loss leaves the
//! cluster without a writable primary, how long a member that left takes to rejoin, and how
//! long a fresh node takes to join with clone for a given data size.
//!
//! Every node is a real host of the local cloud (`local_cloud::hosts`: its own network
//! namespace, address and DNS name, a real mysqld reading Oracle's RPM `/etc/my.cnf`), set
//! up and joined by the real scripts of `scripts/ssm/` as the SSM agent runs them, the way
//! `tests/tests/mysql_hosts.rs` forms its clusters; only dnf, rpm, systemctl, IMDS, aws and
//! mysqlsh are stand-ins. Numbers only: nothing here asserts a timing. It fails only when it
//! cannot measure (a script fails, a state is never reached within generous limits).
//!
//! What the numbers are not: the hosts are network namespaces on one machine (no network
//! latency, one disk, CPUs shared with the benchmark itself), and the group runs with
//! MySQL 9.7's defaults (failure detection after 5 s of silence, `member_expel_timeout` 5 s,
//! ...), which dominate the failover time here as they would on AWS.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use local_cloud::hosts::{Host, Network};
use orchestrator::domain::report::NodeReport;
use serde::Serialize;

use crate::real_hosts::{RealHosts, text};
use crate::stats::Summary;
use crate::{BenchError, Result};

/// With punctuation, as generated passwords have it (the packaged validate_password policy).
const ADMIN_PASSWORD: &str = "Adm1n.pass-word_B*7+,=^~";
const APP_PASSWORD: &str = "App~pass^w0rd=B+3,*.-_";
/// This part's hosts (its errors say "database: ...").
const HOSTS: RealHosts = RealHosts {
    part: "database",
    admin_password: ADMIN_PASSWORD,
    app_password: APP_PASSWORD,
};
const CLUSTER: &str = "bench";
/// The network of the benchmark's hosts: `bench-db`, a name no test uses, on an address
/// block reserved when it comes up, so a bench and the tests can run on one machine.
const NETWORK: &str = "bench-db";

/// What `--only database` is given.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Primary losses, and rejoins, measured.
    pub rounds: usize,
    /// Rows written while a member is out, before its rejoin.
    pub rejoin_rows: usize,
    /// Data loaded into the cluster before a fresh node joins with clone (MiB).
    pub clone_mb: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseFigures {
    pub rounds: usize,
    /// Primary's host killed -> a survivor is PRIMARY and commits a write (s).
    pub failover_seconds: Vec<f64>,
    pub failover: Summary,
    /// The lost node's mysqld started again -> ONLINE in the group again (s), between rounds.
    pub return_seconds: Summary,
    pub rejoin_rows: usize,
    /// `db-add-instance.sh` (rejoin path) started -> the member ONLINE (s).
    pub rejoin: Summary,
    pub clone_mb: usize,
    /// What the donor held (InnoDB data + indexes of the loaded table, MiB).
    pub clone_table_mib: f64,
    /// What clone copied (the whole instance: every stage's data), from the recipient's
    /// `performance_schema.clone_progress` (MiB).
    pub cloned_mib: Option<f64>,
    /// Clone's own begin-to-end time, from the recipient's `performance_schema.clone_status`
    /// (s; the copy and the recipient's restart).
    pub clone_status_seconds: Option<f64>,
    /// `db-add-instance.sh` (clone path) started -> the new member ONLINE (s).
    pub clone_seconds: f64,
}

fn failed(what: impl std::fmt::Display) -> BenchError {
    HOSTS.failed(what)
}

fn report(host: &Host) -> Result<NodeReport> {
    let out = HOSTS.script(host, "db-report.sh", &[])?;
    NodeReport::from_output(&out).map_err(|e| failed(format!("report of {}: {e}", host.name)))
}

/// Every host ONLINE in one group, exactly one PRIMARY, equal GTID sets; the primary.
fn wait_for_healthy_group<'a>(hosts: &[&'a Host]) -> Result<&'a Host> {
    HOSTS.wait_until(
        "every member ONLINE, one PRIMARY, equal GTID sets",
        Duration::from_secs(180),
        || {
            let all: Vec<NodeReport> = hosts
                .iter()
                .map(|h| report(h).ok())
                .collect::<Option<_>>()?;
            let online = all.iter().all(|r| r.member_state == "ONLINE");
            let groups: std::collections::BTreeSet<&str> =
                all.iter().map(|r| r.group_name.as_str()).collect();
            let gtids: std::collections::BTreeSet<&str> =
                all.iter().map(|r| r.gtid_executed.as_str()).collect();
            let primaries: Vec<usize> = (0..all.len()).filter(|i| all[*i].is_primary()).collect();
            (online && groups.len() == 1 && gtids.len() == 1 && primaries.len() == 1)
                .then(|| hosts[primaries[0]])
        },
    )
}

/// The state of `member` as `seen_from` sees the group (`None`: not a member).
fn member_state(seen_from: &Host, member: &Host) -> Option<String> {
    seen_from
        .sql(&format!(
            "SELECT MEMBER_STATE FROM performance_schema.replication_group_members WHERE MEMBER_HOST = '{}'",
            member.dns_name
        ))
        .ok()
        .filter(|s| !s.is_empty())
}

/// One write probe on `host`: commits only where the server is the group's ONLINE PRIMARY
/// and writable (a secondary, or a primary still applying its backlog, is super_read_only).
fn writable_primary(host: &Host) -> bool {
    host.sql(&format!(
        "INSERT INTO wordpress.bench_probe (node) VALUES ('{}'); \
         SELECT MEMBER_ROLE FROM performance_schema.replication_group_members \
         WHERE MEMBER_ID = @@server_uuid AND MEMBER_STATE = 'ONLINE'",
        host.name
    ))
    .is_ok_and(|role| role == "PRIMARY")
}

/// Bring a killed node back as the instance would come back (systemd starts the enabled
/// mysqld), then `db-add-instance.sh` through the primary (its rejoin path, or nothing to do
/// when start_on_boot already rejoined it); the seconds until all are healthy again.
fn bring_back(lost: &Host, nodes: &[&Host]) -> Result<f64> {
    let start = Instant::now();
    let out = lost
        .exec(&[], &["systemctl", "start", "mysqld"], None)
        .map_err(failed)?;
    if !out.status.success() {
        return Err(failed(format!(
            "mysqld restart on {}: {}",
            lost.name,
            text(&out.stderr)
        )));
    }
    let primary = HOSTS.wait_until("a primary", Duration::from_secs(60), || {
        nodes
            .iter()
            .copied()
            .filter(|h| h.name != lost.name)
            .find(|h| report(h).is_ok_and(|r| r.is_primary()))
    })?;
    // Exit 1 while the node does not answer yet (retried, as the workflow retries it).
    HOSTS.wait_until(
        "db-add-instance.sh of the returned node",
        Duration::from_secs(120),
        || {
            lost.sql("SELECT 1").ok()?;
            HOSTS
                .script(primary, "db-add-instance.sh", &[&lost.dns_name])
                .ok()
        },
    )?;
    wait_for_healthy_group(nodes)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Creates the tables the probes write, through the primary (root over the socket).
fn create_tables(primary: &Host) -> Result<()> {
    primary
        .sql(
            "CREATE TABLE IF NOT EXISTS wordpress.bench_probe \
             (id BIGINT AUTO_INCREMENT PRIMARY KEY, node VARCHAR(64) NOT NULL, \
              at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)); \
             CREATE TABLE IF NOT EXISTS wordpress.bench_rows \
             (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64) NOT NULL); \
             CREATE TABLE IF NOT EXISTS wordpress.bench_blob \
             (id BIGINT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB NOT NULL)",
        )
        .map(drop)
        .map_err(failed)
}

/// Measure everything on one 3-node cluster (plus a fourth node for the clone).
pub fn measure(settings: Settings) -> Result<DatabaseFigures> {
    local_cloud::hosts::require_host_support().map_err(|e| BenchError::Setup(e.to_string()))?;
    let setup = Instant::now();
    let network = Network::up(NETWORK).map_err(failed)?;
    let a = HOSTS.db_node(&network, "b-db-a", 11)?;
    let b = HOSTS.db_node(&network, "b-db-b", 12)?;
    let c = HOSTS.db_node(&network, "b-db-c", 13)?;
    let nodes = [&a, &b, &c];
    let out = HOSTS.script(&a, "db-create-cluster.sh", &[CLUSTER])?;
    if !out.contains(&format!("cluster {CLUSTER} created")) {
        return Err(failed(format!("db-create-cluster.sh: {out}")));
    }
    for node in [&b, &c] {
        HOSTS.script(&a, "db-add-instance.sh", &[&node.dns_name])?;
    }
    let primary = wait_for_healthy_group(&nodes)?;
    create_tables(primary)?;
    eprintln!(
        "[bench] database: 3 real MySQL 9.7 nodes formed a cluster in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // 1. Primary loss to a new primary writable.
    let mut failover_seconds = Vec::new();
    let mut return_seconds = Vec::new();
    for round in 1..=settings.rounds {
        let primary = wait_for_healthy_group(&nodes)?;
        let survivors: Vec<&Host> = nodes
            .iter()
            .copied()
            .filter(|h| h.name != primary.name)
            .collect();
        let start = Instant::now();
        primary.kill().map_err(failed)?;
        let new = HOSTS.wait_until(
            "a survivor PRIMARY and writable",
            Duration::from_secs(180),
            || survivors.iter().copied().find(|h| writable_primary(h)),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        failover_seconds.push(seconds);
        let back = bring_back(primary, &nodes)?;
        return_seconds.push(back);
        eprintln!(
            "[bench] database: primary loss {round}/{}: {} killed, {} writable after {seconds:.1} s; back ONLINE {back:.1} s after its restart",
            settings.rounds, primary.name, new.name
        );
    }

    // 2. Rejoin of a member that left while K rows were written.
    let mut rejoin_seconds = Vec::new();
    for round in 1..=settings.rounds {
        let primary = wait_for_healthy_group(&nodes)?;
        let member = nodes
            .iter()
            .copied()
            .find(|h| h.name != primary.name)
            .ok_or_else(|| failed("no secondary"))?;
        member.sql("STOP GROUP_REPLICATION").map_err(failed)?;
        primary
            .sql(&format!(
                "SET SESSION cte_max_recursion_depth = {rows}; \
                 INSERT INTO wordpress.bench_rows (v) \
                 WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) \
                 SELECT SHA2(RAND(), 256) FROM s",
                rows = settings.rejoin_rows.max(1)
            ))
            .map_err(failed)?;
        let start = Instant::now();
        let out = HOSTS.script(primary, "db-add-instance.sh", &[&member.dns_name])?;
        if !out.contains("rejoined cluster") {
            return Err(failed(format!(
                "db-add-instance.sh did not take its rejoin path: {out}"
            )));
        }
        HOSTS.wait_until(
            "the rejoined member ONLINE",
            Duration::from_secs(180),
            || (member_state(primary, member).as_deref() == Some("ONLINE")).then_some(()),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        rejoin_seconds.push(seconds);
        eprintln!(
            "[bench] database: rejoin {round}/{}: {} ONLINE {seconds:.1} s after db-add-instance.sh started",
            settings.rounds, member.name
        );
    }

    // 3. A fresh node joins with clone over the loaded data.
    let primary = wait_for_healthy_group(&nodes)?;
    // 1 MiB rows (a 64-character SHA-256 x 16384; MySQL 9.7 has no MD5()), 8 a
    // transaction: under Group Replication's transaction size limit (150 MB) and
    // max_allowed_packet.
    let mut loaded = 0;
    while loaded < settings.clone_mb {
        let rows = (settings.clone_mb - loaded).min(8);
        primary
            .sql(&format!(
                "INSERT INTO wordpress.bench_blob (b) \
                 WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) \
                 SELECT REPEAT(SHA2(RAND(), 256), 16384) FROM s"
            ))
            .map_err(failed)?;
        loaded += rows;
    }
    let clone_table_mib = primary
        .sql(
            "ANALYZE TABLE wordpress.bench_blob; \
             SELECT (DATA_LENGTH + INDEX_LENGTH) / 1048576 FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'wordpress' AND TABLE_NAME = 'bench_blob'",
        )
        .map_err(failed)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    wait_for_healthy_group(&nodes)?;
    let fresh = HOSTS.db_node(&network, "b-db-d", 14)?;
    let start = Instant::now();
    let out = HOSTS.script(primary, "db-add-instance.sh", &[&fresh.dns_name])?;
    if !out.contains("added to cluster") {
        return Err(failed(format!(
            "db-add-instance.sh did not add with clone: {out}"
        )));
    }
    HOSTS.wait_until("the cloned member ONLINE", Duration::from_secs(600), || {
        (member_state(primary, &fresh).as_deref() == Some("ONLINE")).then_some(())
    })?;
    let clone_seconds = start.elapsed().as_secs_f64();
    // Clone's own account of what it copied (kept across the recipient's restart).
    let clone_view = fresh
        .sql(
            "SELECT SUM(DATA) / 1048576 FROM performance_schema.clone_progress; \
             SELECT TIMESTAMPDIFF(MICROSECOND, BEGIN_TIME, END_TIME) / 1000000 \
             FROM performance_schema.clone_status",
        )
        .unwrap_or_default();
    let mut clone_view = clone_view.lines().map(|v| v.trim().parse::<f64>().ok());
    let cloned_mib = clone_view.next().flatten();
    let clone_status_seconds = clone_view.next().flatten();
    eprintln!(
        "[bench] database: {} joined with clone ({} MiB loaded) in {clone_seconds:.1} s",
        fresh.name, settings.clone_mb
    );

    Ok(DatabaseFigures {
        rounds: settings.rounds,
        failover: Summary::of(failover_seconds.iter().copied()),
        failover_seconds,
        return_seconds: Summary::of(return_seconds),
        rejoin_rows: settings.rejoin_rows,
        rejoin: Summary::of(rejoin_seconds),
        clone_mb: settings.clone_mb,
        clone_table_mib,
        cloned_mib,
        clone_status_seconds,
        clone_seconds,
    })
}

/// The figures as the terminal shows them (and the README quotes them), in the style of
/// the other sections of `report::table`.
pub fn table(f: &DatabaseFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Database tier on real MySQL 9.7 (3 nodes in network namespaces on this machine; N = {})\n",
        f.rounds
    );
    let _ = writeln!(
        out,
        "| measure | runs | median s | p95 s | min s | max s |\n|---|---|---|---|---|---|"
    );
    for (name, s) in [
        (
            "primary killed -> new primary writable".to_string(),
            &f.failover,
        ),
        (
            "lost node restarted -> ONLINE again (rejoin)".to_string(),
            &f.return_seconds,
        ),
        (
            format!(
                "member out, {} rows written -> rejoined ONLINE",
                f.rejoin_rows
            ),
            &f.rejoin,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.n, s.median, s.p95, s.min, s.max
        );
    }
    out.push('\n');
    let figure = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.1}"));
    let _ = writeln!(
        out,
        "| join with clone | loaded MiB | table MiB | cloned MiB | clone s | MiB/s | db-add-instance -> ONLINE s |\n|---|---|---|---|---|---|---|\n| fresh node | {} | {:.1} | {} | {} | {} | {:.1} |",
        f.clone_mb,
        f.clone_table_mib,
        figure(f.cloned_mib),
        figure(f.clone_status_seconds),
        figure(f.cloned_mib.zip(f.clone_status_seconds).map(|(m, s)| m / s)),
        f.clone_seconds,
    );
    let _ = writeln!(
        out,
        "\n  primary loss, each run (s): {}",
        f.failover_seconds
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}
