//! The database scripts on real MySQL 9.7 servers: every node is a real host of the local
//! cloud (`local_cloud::hosts`: its own network namespace, address and DNS name, a real
//! mysqld reading Oracle's RPM `/etc/my.cnf`), the scripts of `scripts/ssm/` run there as
//! the SSM agent runs them, and only dnf, rpm, systemctl, IMDS, aws and mysqlsh are
//! stand-ins (`local-cloud/standins`). What the orchestrator would decide from the nodes'
//! reports is decided by its own code (`orchestrator::domain::report`).
//!
//! Needs root and the rootfs `scripts/setup.sh` installs: without them every test fails
//! with what to change, none is skipped.

use std::time::{Duration, Instant};

use local_cloud::hosts::{Host, Network};
use orchestrator::aws::secrets::PASSWORD_EXCLUDED_CHARACTERS;
use orchestrator::domain::report::{GroupDecision, NodeReport, decide};

const ADMIN_SECRET: &str = "ha/test/admin";
const APP_SECRET: &str = "ha/test/app";
/// Generated passwords carry punctuation (the packaged validate_password policy asks for
/// it): these two hold every character `orchestrator::aws::secrets` lets Secrets Manager use.
const ADMIN_PASSWORD: &str = "Adm1n.pass-word_Q*7+,=^~";
const APP_PASSWORD: &str = "App~pass^w0rd=Z+3,*.-_";
const CLUSTER: &str = "shop";

fn env() -> [(&'static str, &'static str); 2] {
    [
        ("ADMIN_SECRET_ID", ADMIN_SECRET),
        ("APP_SECRET_ID", APP_SECRET),
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a script on `host`; panics with its output when it fails.
fn script(host: &Host, name: &str, args: &[&str]) -> String {
    let output = host.run_script(name, args, &env()).expect("run script");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "{name} {args:?} on {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        host.name,
        output.status
    );
    stdout
}

/// A database node: a fresh host with the two secrets, installed by `db-install.sh`.
fn db_node(network: &Network, name: &str, octet: u8) -> Host {
    let host = network.host(name, octet).expect("create host");
    host.put_secret(ADMIN_SECRET, ADMIN_PASSWORD)
        .expect("real host");
    host.put_secret(APP_SECRET, APP_PASSWORD)
        .expect("real host");
    script(&host, "db-install.sh", &[]);
    host
}

fn report(host: &Host) -> NodeReport {
    let out = script(host, "db-report.sh", &[]);
    NodeReport::from_output(&out).unwrap_or_else(|e| panic!("report of {}: {e}\n{out}", host.name))
}

fn reports(hosts: &[&Host]) -> Vec<(String, NodeReport)> {
    hosts
        .iter()
        .map(|h| (h.dns_name.clone(), report(h)))
        .collect()
}

fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every host reports ONLINE in one group, exactly one PRIMARY, equal GTID sets.
fn wait_for_healthy_group(hosts: &[&Host]) -> Vec<(String, NodeReport)> {
    wait_for_group(hosts, true)
}

/// As [`wait_for_healthy_group`]; with `caught_up` false the GTID sets may differ (a writer
/// is running, so the secondaries are always a little behind).
fn wait_for_group(hosts: &[&Host], caught_up: bool) -> Vec<(String, NodeReport)> {
    wait_until(
        "three ONLINE members, one PRIMARY, equal GTID sets",
        Duration::from_secs(120),
        || {
            let all = reports(hosts);
            let online = all.iter().all(|(_, r)| r.member_state == "ONLINE");
            let primaries = all.iter().filter(|(_, r)| r.is_primary()).count();
            let groups: std::collections::BTreeSet<&str> =
                all.iter().map(|(_, r)| r.group_name.as_str()).collect();
            let gtids: std::collections::BTreeSet<&str> =
                all.iter().map(|(_, r)| r.gtid_executed.as_str()).collect();
            (online && primaries == 1 && groups.len() == 1 && (gtids.len() == 1 || !caught_up))
                .then_some(all.clone())
        },
    )
}

fn primary_of<'a>(hosts: &[&'a Host]) -> &'a Host {
    let all = reports(hosts);
    let (host, _) = all.iter().find(|(_, r)| r.is_primary()).expect("a primary");
    hosts
        .iter()
        .find(|h| &h.dns_name == host)
        .copied()
        .expect("primary is one of the hosts")
}

/// A formed cluster: create on the first node, add the other two with clone.
fn form_cluster(nodes: &[&Host]) {
    let seed = nodes[0];
    let out = script(seed, "db-create-cluster.sh", &[CLUSTER]);
    assert!(out.contains(&format!("cluster {CLUSTER} created")), "{out}");
    for node in &nodes[1..] {
        let out = script(seed, "db-add-instance.sh", &[&node.dns_name]);
        assert!(out.contains("added to cluster"), "{out}");
    }
}

/// Three database nodes `<prefix>-a`, `-b`, `-c` (addresses .11 to .13) formed into one
/// healthy cluster, and its group name.
fn three_node_cluster(network: &Network, prefix: &str) -> ([Host; 3], String) {
    let nodes = [("a", 11), ("b", 12), ("c", 13)]
        .map(|(suffix, octet)| db_node(network, &format!("{prefix}-{suffix}"), octet));
    let [a, b, c] = &nodes;
    form_cluster(&[a, b, c]);
    let group = wait_for_healthy_group(&[a, b, c])[0].1.group_name.clone();
    (nodes, group)
}

/// SQL as the application account through TCP on `host` (as WordPress writes).
fn app_sql(from: &Host, to: &Host, statement: &str) -> String {
    let output = from
        .exec(
            &[],
            &[
                "mysql",
                "--user=wordpress",
                &format!("--password={APP_PASSWORD}"),
                &format!("--host={}", to.dns_name),
                "--batch",
                "--skip-column-names",
                "wordpress",
                "-e",
                statement,
            ],
            None,
        )
        .expect("real host");
    assert!(
        output.status.success(),
        "app SQL on {}: {}",
        to.name,
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_string()
}

/// The end of the host's mysqld error log (Oracle's my.cnf: /var/log/mysqld.log).
fn error_log_tail(host: &Host) -> String {
    let log = std::fs::read_to_string(host.root().join("var/log/mysqld.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn mysqld_pid(host: &Host) -> String {
    std::fs::read_to_string(host.root().join("var/lib/ha-standin/units/mysqld.pid"))
        .unwrap_or_default()
}

#[test]
fn install_writes_a_config_the_real_server_reads_and_a_second_run_changes_nothing() {
    let allowed_punctuation: Vec<char> = "*+,-.=^_~".chars().collect();
    for password in [ADMIN_PASSWORD, APP_PASSWORD] {
        assert!(
            !password
                .chars()
                .any(|c| PASSWORD_EXCLUDED_CHARACTERS.contains(c))
        );
        assert!(
            allowed_punctuation.iter().all(|c| password.contains(*c)),
            "{password}"
        );
    }
    let network = Network::up("mh-install").expect("real host");
    let node = db_node(&network, "mh-install-1", 11);

    // What db-install.sh configures is what the server runs with: Oracle's /etc/my.cnf
    // includes no directory, so these are read only if the script made it include its file.
    let row = node
        .sql("SELECT @@server_id, @@gtid_mode, @@enforce_gtid_consistency, @@report_host, @@require_secure_transport")
        .expect("real host");
    // The address as a number, + 1 (db-install.sh takes it modulo 2^32 - 1, no-op here).
    let address: std::net::Ipv4Addr = node.address.parse().expect("an IPv4 address");
    let expected_id = u64::from(u32::from(address)) + 1;
    assert_eq!(row, format!("{expected_id}\tON\tON\t{}\t1", node.dns_name));
    // Root logs in only over the socket, as root; the admin account works over TCP (TLS).
    let admin = node
        .exec(
            &[],
            &[
                "mysql",
                "--user=clusteradmin",
                &format!("--password={ADMIN_PASSWORD}"),
                &format!("--host={}", node.dns_name),
                "--ssl-mode=REQUIRED",
                "--batch",
                "--skip-column-names",
                "-e",
                "SELECT CURRENT_USER()",
            ],
            None,
        )
        .expect("real host");
    assert!(
        admin.status.success(),
        "admin login: {}",
        text(&admin.stderr)
    );
    assert_eq!(text(&admin.stdout).trim(), "clusteradmin@%");

    let files = ["etc/my.cnf", "etc/my.cnf.d/ha-orchestrator.cnf"];
    let before: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(node.root().join(f)).expect("real host"))
        .collect();
    let pid = mysqld_pid(&node);
    assert!(!pid.is_empty(), "mysqld runs under the systemctl stand-in");

    let again = script(&node, "db-install.sh", &[]);
    assert!(again.contains("ready on"), "{again}");
    let after: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(node.root().join(f)).expect("real host"))
        .collect();
    assert_eq!(before, after, "the second run rewrote the configuration");
    assert_eq!(pid, mysqld_pid(&node), "the second run restarted mysqld");
}

#[test]
fn a_server_without_a_group_reports_offline_with_empty_fields() {
    let network = Network::up("mh-report").expect("real host");
    let node = db_node(&network, "mh-report-1", 11);
    // Before any group exists the plugin is not loaded: @@group_replication_group_name
    // would be ERROR 1193 here; the report must still come.
    let r = report(&node);
    assert_eq!(r.member_state, "OFFLINE");
    assert_eq!(
        (
            r.role.as_str(),
            r.group_name.as_str(),
            r.cluster_name.as_str()
        ),
        ("", "", "")
    );
    assert!(!r.in_group());
    assert_eq!(
        decide(&[(node.dns_name.clone(), r)], &node.dns_name),
        GroupDecision::CreateOn(node.dns_name.clone())
    );
}

#[test]
fn create_and_clone_joins_form_one_group_and_members_report_offline_and_recovering_right() {
    let network = Network::up("mh-group").expect("real host");
    let a = db_node(&network, "mh-group-a", 11);
    let b = db_node(&network, "mh-group-b", 12);
    let c = db_node(&network, "mh-group-c", 13);
    form_cluster(&[&a, &b, &c]);
    let all = wait_for_healthy_group(&[&a, &b, &c]);
    assert!(
        all.iter().all(|(_, r)| r.cluster_name == CLUSTER),
        "{all:?}"
    );
    assert!(all[0].1.transaction_count() > 0);

    // The application account replicates: write through the primary, read on a secondary.
    let primary = primary_of(&[&a, &b, &c]);
    app_sql(
        &c,
        primary,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1)",
    );
    wait_until("the row on every member", Duration::from_secs(30), || {
        [&a, &b, &c]
            .iter()
            .all(|h| {
                h.sql("SELECT v FROM wordpress.t WHERE id = 1")
                    .ok()
                    .as_deref()
                    == Some("1")
            })
            .then_some(())
    });

    // A member that stops Group Replication is OFFLINE with an empty role: the fields after
    // the empty one must not shift (the GTID set stays a GTID set).
    let secondary = [&a, &b, &c]
        .into_iter()
        .find(|h| h.name != primary.name)
        .expect("real host");
    secondary.sql("STOP GROUP_REPLICATION").expect("real host");
    let offline = report(secondary);
    assert_eq!(offline.member_state, "OFFLINE");
    assert_eq!(offline.role, "");
    assert_eq!(offline.cluster_name, CLUSTER);
    assert!(
        offline.gtid_executed.contains(':'),
        "GTID set shifted: {offline:?}"
    );
    assert!(offline.transaction_count() > 0, "{offline:?}");

    // RECOVERING: the member rejoins while a table lock holds back the applying of what it
    // missed.
    app_sql(&c, primary, "UPDATE t SET v = 2 WHERE id = 1");
    let mut lock = secondary
        .spawn(&[
            "mysql",
            "--user=root",
            "-e",
            "LOCK TABLES wordpress.t READ; SELECT SLEEP(20)",
        ])
        .expect("real host");
    std::thread::sleep(Duration::from_secs(1));
    secondary.sql("START GROUP_REPLICATION").expect("real host");
    let recovering = wait_until("the member RECOVERING", Duration::from_secs(15), || {
        let r = report(secondary);
        (r.member_state == "RECOVERING").then_some(r)
    });
    assert_eq!(recovering.cluster_name, CLUSTER);
    assert!(recovering.in_group());
    assert!(recovering.gtid_executed.contains(':'), "{recovering:?}");
    let _ = lock.wait();
    wait_for_healthy_group(&[&a, &b, &c]);
    assert_eq!(
        secondary
            .sql("SELECT v FROM wordpress.t WHERE id = 1")
            .expect("real host"),
        "2"
    );
}

#[test]
fn a_lost_primary_is_replaced_removed_from_the_metadata_and_a_new_node_joins_the_same_group() {
    let network = Network::up("mh-loss").expect("real host");
    let ([a, b, c], group) = three_node_cluster(&network, "mh-loss");
    let primary = primary_of(&[&a, &b, &c]);
    let survivors: Vec<&Host> = [&a, &b, &c]
        .into_iter()
        .filter(|h| h.name != primary.name)
        .collect();

    primary.kill().expect("real host");
    // The group elects another primary and expels the lost one from its member list.
    let (new_primary_host, after) = wait_until(
        "a new primary without the lost member",
        Duration::from_secs(90),
        || {
            let all = reports(&survivors);
            let elected = all.iter().find(|(_, r)| r.is_primary())?;
            let expelled = all
                .iter()
                .all(|(_, r)| !r.members.contains(&primary.dns_name));
            expelled.then(|| (elected.0.clone(), elected.1.clone()))
        },
    );
    assert_eq!(after.group_name, group);
    // The metadata still lists it: that is where the orchestrator finds what to remove.
    let live: Vec<&str> = survivors.iter().map(|h| h.dns_name.as_str()).collect();
    assert_eq!(
        after.absent_members(&live),
        vec![primary.dns_name.clone()],
        "{after:?}"
    );
    let new_primary = survivors
        .iter()
        .find(|h| h.dns_name == new_primary_host)
        .copied()
        .expect("real host");
    script(new_primary, "db-remove-instance.sh", &[&primary.dns_name]);
    let metadata = new_primary
        .sql("SELECT address FROM mysql_innodb_cluster_metadata.instances ORDER BY address")
        .expect("real host");
    assert!(
        !metadata.contains(&primary.dns_name),
        "still in the metadata: {metadata}"
    );
    assert!(report(new_primary).absent_members(&live).is_empty());

    // The replacement joins the same group with clone; no second group.
    let d = db_node(&network, "mh-loss-d", 14);
    let r = report(&d);
    let mut all = reports(&survivors);
    all.push((d.dns_name.clone(), r));
    assert_eq!(
        decide(&all, &d.dns_name),
        GroupDecision::JoinThrough(new_primary_host.clone())
    );
    script(new_primary, "db-add-instance.sh", &[&d.dns_name]);
    let healed = wait_for_healthy_group(&[survivors[0], survivors[1], &d]);
    assert!(
        healed.iter().all(|(_, r)| r.group_name == group),
        "{healed:?}"
    );
}

#[test]
fn after_a_complete_outage_the_cluster_reboots_from_the_most_complete_node_losing_nothing() {
    let network = Network::up("mh-outage").expect("real host");
    let ([a, b, c], group) = three_node_cluster(&network, "mh-outage");
    let primary = primary_of(&[&a, &b, &c]);
    app_sql(primary, primary, "CREATE TABLE t (id INT PRIMARY KEY)");
    wait_for_healthy_group(&[&a, &b, &c]);

    // One secondary goes first. The last write is then certified by the two left (a
    // majority) but, with a table lock holding back the other secondary's applier, executed
    // on the primary only: the primary is ahead by that transaction when everything dies.
    let secondaries: Vec<&Host> = [&a, &b, &c]
        .into_iter()
        .filter(|h| h.name != primary.name)
        .collect();
    secondaries[0].kill().expect("real host");
    wait_until(
        "the majority of two without the lost member",
        Duration::from_secs(90),
        || {
            let r = report(primary);
            (r.members.len() == 2).then_some(())
        },
    );
    let mut lock = secondaries[1]
        .spawn(&[
            "mysql",
            "--user=root",
            "-e",
            "LOCK TABLES wordpress.t READ; SELECT SLEEP(60)",
        ])
        .expect("real host");
    std::thread::sleep(Duration::from_secs(1));
    app_sql(primary, primary, "INSERT INTO t VALUES (1)");
    let last = primary
        .sql("SELECT @@gtid_executed")
        .expect("real host")
        .replace("\\n", "");
    secondaries[1].kill().expect("real host");
    primary.kill().expect("real host");
    let _ = lock.wait();

    // The instances come back: systemd starts the enabled mysqld.
    for host in [&a, &b, &c] {
        let out = host
            .exec(&[], &["systemctl", "start", "mysqld"], None)
            .expect("real host");
        assert!(
            out.status.success(),
            "mysqld restart on {}: {}\n--- last lines of its error log\n{}",
            host.name,
            text(&out.stderr),
            error_log_tail(host)
        );
    }
    let all = wait_until(
        "every node out of the group (complete outage)",
        Duration::from_secs(120),
        || {
            let all = reports(&[&a, &b, &c]);
            all.iter().all(|(_, r)| !r.in_group()).then_some(all)
        },
    );
    let seed = match decide(&all, &a.dns_name) {
        GroupDecision::RebootFrom(host) => host,
        other => {
            panic!("expected a reboot from the most complete node, got {other:?} from {all:?}")
        }
    };
    let seed_report = &all.iter().find(|(h, _)| h == &seed).expect("real host").1;
    assert!(
        all.iter()
            .all(|(_, r)| r.transaction_count() <= seed_report.transaction_count()),
        "the reboot seed is not the most complete node: {all:?}"
    );
    assert_eq!(
        seed_report.transaction_count(),
        NodeReport {
            gtid_executed: last.clone(),
            ..seed_report.clone()
        }
        .transaction_count(),
        "the seed lacks the last acknowledged write ({last}): {all:?}"
    );
    let primary = [&a, &b, &c]
        .into_iter()
        .find(|h| h.dns_name == seed)
        .expect("real host");
    let secondaries: Vec<&Host> = [&a, &b, &c]
        .into_iter()
        .filter(|h| h.name != primary.name)
        .collect();
    script(primary, "db-reboot-cluster.sh", &[CLUSTER]);
    for host in &secondaries {
        script(primary, "db-add-instance.sh", &[&host.dns_name]);
    }
    let after = wait_for_healthy_group(&[&a, &b, &c]);
    assert!(
        after.iter().all(|(_, r)| r.group_name == group),
        "a second group: {after:?}"
    );
    for host in [&a, &b, &c] {
        assert_eq!(
            host.sql("SELECT COUNT(*) FROM wordpress.t")
                .expect("real host"),
            "1",
            "on {}",
            host.name
        );
    }
}

#[test]
fn a_partitioned_member_is_expelled_the_majority_keeps_writing_and_no_second_group_starts() {
    let network = Network::up("mh-split").expect("real host");
    let ([a, b, c], group) = three_node_cluster(&network, "mh-split");
    let primary = primary_of(&[&a, &b, &c]);
    app_sql(primary, primary, "CREATE TABLE t (id INT PRIMARY KEY)");
    let cut = [&a, &b, &c]
        .into_iter()
        .find(|h| h.name != primary.name)
        .expect("real host");
    let majority: Vec<&Host> = [&a, &b, &c]
        .into_iter()
        .filter(|h| h.name != cut.name)
        .collect();

    cut.link(false).expect("real host");
    wait_until(
        "the cut member expelled by the majority",
        Duration::from_secs(90),
        || {
            let all = reports(&majority);
            all.iter()
                .all(|(_, r)| r.member_state == "ONLINE" && !r.members.contains(&cut.dns_name))
                .then_some(())
        },
    );
    for id in 1..=20 {
        app_sql(
            majority[0],
            primary,
            &format!("INSERT INTO t VALUES ({id})"),
        );
    }
    // Whatever the cut member says of itself, the orchestrator's guard sees one group and
    // never creates another.
    let mut all = reports(&majority);
    all.push((cut.dns_name.clone(), report(cut)));
    let decision = decide(&all, &cut.dns_name);
    assert!(
        matches!(&decision, GroupDecision::JoinThrough(host) if host == &primary.dns_name),
        "{decision:?} from {all:?}"
    );

    cut.link(true).expect("real host");
    let cut_report = report(cut);
    assert!(
        cut_report.group_name.is_empty() || cut_report.group_name == group,
        "{cut_report:?}"
    );
    script(primary, "db-add-instance.sh", &[&cut.dns_name]);
    let after = wait_for_healthy_group(&[&a, &b, &c]);
    assert!(
        after.iter().all(|(_, r)| r.group_name == group),
        "{after:?}"
    );
    assert_eq!(
        cut.sql("SELECT COUNT(*) FROM wordpress.t")
            .expect("real host"),
        "20"
    );
}

#[test]
fn a_node_that_does_not_answer_is_not_cloned_over_until_it_answers() {
    let network = Network::up("mh-silent").expect("real host");
    let a = db_node(&network, "mh-silent-a", 11);
    let b = db_node(&network, "mh-silent-b", 12);
    script(&a, "db-create-cluster.sh", &[CLUSTER]);
    app_sql(
        &a,
        &a,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    // b is down: whether it belongs to a group is unknown, so it is neither rejoined nor
    // cloned over (its data could be the newest); the add fails to be retried.
    let stop = b
        .exec(&[], &["systemctl", "stop", "mysqld"], None)
        .expect("real host");
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let refused = a
        .run_script("db-add-instance.sh", &[&b.dns_name], &env())
        .expect("real host");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains("not adding it before it answers"),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        !a.sql("SELECT address FROM mysql_innodb_cluster_metadata.instances")
            .expect("real host")
            .contains(&b.dns_name)
    );
    // Once it answers, it is added with clone and has the data.
    let start = b
        .exec(&[], &["systemctl", "start", "mysqld"], None)
        .expect("real host");
    assert!(start.status.success(), "{}", text(&start.stderr));
    let out = script(&a, "db-add-instance.sh", &[&b.dns_name]);
    assert!(out.contains("added to cluster"), "{out}");
    wait_until("the row on the added node", Duration::from_secs(60), || {
        (b.sql("SELECT COUNT(*) FROM wordpress.t").ok().as_deref() == Some("1")).then_some(())
    });
}

#[test]
fn writes_through_the_router_survive_a_primary_loss_and_a_heal() {
    let network = Network::up("mh-router").expect("network");
    let a = db_node(&network, "mh-router-a", 11);
    let b = db_node(&network, "mh-router-b", 12);
    let c = db_node(&network, "mh-router-c", 13);
    form_cluster(&[&a, &b, &c]);
    wait_for_healthy_group(&[&a, &b, &c]);
    let primary = primary_of(&[&a, &b, &c]);
    app_sql(primary, primary, "CREATE TABLE t (id INT PRIMARY KEY)");

    // A web node: the real Router bootstrapped against the cluster by web-router.sh, run
    // twice (the second run finds it bootstrapped and only restarts it).
    let web = network.host("mh-router-w", 21).expect("web host");
    web.put_secret(ADMIN_SECRET, ADMIN_PASSWORD)
        .expect("secret");
    web.put_secret(APP_SECRET, APP_PASSWORD).expect("secret");
    let first = script(&web, "web-router.sh", &[CLUSTER, &primary.dns_name]);
    assert!(first.contains("listening on 127.0.0.1:6446"), "{first}");
    let second = script(&web, "web-router.sh", &[CLUSTER, &primary.dns_name]);
    assert!(second.contains("router already bootstrapped"), "{second}");

    // A writer through the read-write port, without TLS as PHP's mysqli (WordPress)
    // connects, asking for the server's RSA key for caching_sha2_password as mysqlnd does
    // (assumption from mysqlnd's caching_sha2 support: it requests the key on a plain
    // connection). The Router must still reach the servers over TLS (they require it), also
    // after a failover, when the new primary's authentication cache is cold. The writer
    // records each id the server acknowledged.
    let writer = format!(
        "i=0; while [ ! -e /tmp/stop-writer ]; do i=$((i+1)); \
         if mysql --user=wordpress --password='{APP_PASSWORD}' --host=127.0.0.1 --port=6446 \
         --ssl-mode=DISABLED --get-server-public-key --connect-timeout=2 wordpress -e \"INSERT INTO t VALUES ($i)\" 2>/dev/null; \
         then echo $i >> /tmp/acked; fi; sleep 0.05; done"
    );
    let mut writing = web.spawn(&["bash", "-c", &writer]).expect("writer");
    let acked = |web: &Host| -> Vec<u64> {
        std::fs::read_to_string(web.root().join("tmp/acked"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    wait_until("writes before the loss", Duration::from_secs(30), || {
        (acked(&web).len() >= 20).then_some(())
    });

    primary.kill().expect("kill primary");
    let survivors: Vec<&Host> = [&a, &b, &c]
        .into_iter()
        .filter(|h| h.name != primary.name)
        .collect();
    let before = acked(&web).len();
    wait_until(
        "writes through the new primary",
        Duration::from_secs(120),
        || (acked(&web).len() >= before + 20).then_some(()),
    );
    // The heal: the lost member leaves the metadata, a new node joins with clone.
    let new_primary = primary_of(&survivors);
    script(new_primary, "db-remove-instance.sh", &[&primary.dns_name]);
    let d = db_node(&network, "mh-router-d", 14);
    script(new_primary, "db-add-instance.sh", &[&d.dns_name]);
    wait_for_group(&[survivors[0], survivors[1], &d], false);
    let before = acked(&web).len();
    wait_until("writes after the heal", Duration::from_secs(60), || {
        (acked(&web).len() >= before + 20).then_some(())
    });
    web.put_file("/tmp/stop-writer", "").expect("stop");
    let _ = writing.wait();

    // Every acknowledged write is on every member: count and sum of the acknowledged ids
    // against what each member holds of them.
    let acked = acked(&web);
    let (count, sum) = (acked.len(), acked.iter().sum::<u64>());
    wait_for_healthy_group(&[survivors[0], survivors[1], &d]);
    let list = acked
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for member in [survivors[0], survivors[1], &d] {
        let row = member
            .sql(&format!(
                "SELECT COUNT(*), IFNULL(SUM(id), 0) FROM wordpress.t WHERE id IN ({list})"
            ))
            .expect("count");
        assert_eq!(
            row,
            format!("{count}\t{sum}"),
            "acknowledged writes missing on {}",
            member.name
        );
    }
}
