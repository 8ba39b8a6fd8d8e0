//! The database scripts (scripts/ssm/) run against recording fakes of `mysqlsh`, `mysql`
//! and `aws` (tests/fakes/) that keep each node's state in a temp dir: what cannot run
//! here (MySQL itself) is replaced by the nearest thing that records what was asked of it.

use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "s3cr3t-Test-Passw0rd";
const APP_PASSWORD: &str = "App-s3cr3t-Passw0rd";

struct Nodes {
    root: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn project(path: &str) -> PathBuf {
    local_cloud::project_root().join(path)
}

impl Nodes {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `scripts/ssm/<script>` as the SSM agent would run it on `host`, fakes on the PATH.
    fn command(&self, host: &str, script: &str, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            project("tests/fakes").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("bash");
        command
            .arg(project("scripts/ssm").join(script))
            .args(args)
            .env("PATH", path)
            .env("FAKE_MYSQL_ROOT", self.root.path())
            .env("FAKE_MYSQL_PASSWORD", PASSWORD)
            .env("FAKE_NODE_HOST", host)
            .env("HA_SYSROOT", self.root.path().join(host).join("sysroot"))
            .env(
                "ADMIN_SECRET_ID",
                "ha-orchestrator/c-0123456789ab/cluster-admin",
            )
            .env("APP_SECRET_ID", "ha-orchestrator/c-0123456789ab/app")
            .env("FAKE_APP_PASSWORD", APP_PASSWORD);
        command
    }

    fn run(&self, host: &str, script: &str, args: &[&str]) -> Run {
        let output = self.command(host, script, args).output().expect("run bash");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn calls(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("calls.log")).unwrap_or_default()
    }

    fn attr(&self, host: &str, name: &str) -> String {
        std::fs::read_to_string(Path::new(self.root.path()).join(host).join(name))
            .unwrap_or_default()
    }

    fn report(&self, host: &str) -> serde_json::Value {
        let run = self.run(host, "db-report.sh", &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one JSON line: {:?}", run.stdout);
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]))
    }
}

#[test]
fn a_fresh_node_creates_the_cluster_once() {
    let nodes = Nodes::new();
    let fresh = nodes.report("db-0");
    assert_eq!(fresh["memberState"], "OFFLINE");
    assert_eq!(fresh["clusterName"], "");

    let first = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(nodes.calls("dba create-cluster shop"), 1);
    let created = nodes.report("db-0");
    assert_eq!(created["memberState"], "ONLINE");
    assert_eq!(created["role"], "PRIMARY");
    assert_eq!(created["clusterName"], "shop");
    assert!(
        created["gtidExecuted"]
            .as_str()
            .unwrap_or_default()
            .ends_with(":1-12")
    );

    // The application's account exists on the primary, with the app secret's password,
    // which never appeared on a command line.
    assert_eq!(nodes.attr("db-0", "app_password"), APP_PASSWORD);
    assert!(!nodes.log().contains(APP_PASSWORD), "{}", nodes.log());

    // Idempotent: the second run sees the cluster and changes nothing.
    let second = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
    assert_eq!(nodes.calls("dba create-cluster"), 1, "no second create");
}

#[test]
fn a_node_of_another_group_is_never_used_to_create_a_cluster() {
    let nodes = Nodes::new();
    assert_eq!(
        nodes.run("db-0", "db-create-cluster.sh", &["other"]).code,
        0
    );
    let refused = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_eq!(refused.code, 3, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("refusing") && refused.stderr.contains("other"),
        "{}",
        refused.stderr
    );
    assert_eq!(nodes.calls("dba create-cluster shop"), 0);

    // A node that kept the metadata but is offline must be rebooted, not re-created.
    std::fs::write(nodes.root.path().join("db-0/state"), "OFFLINE").unwrap();
    std::fs::remove_file(nodes.root.path().join("db-0/group")).unwrap();
    let offline = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_eq!(offline.code, 3);
    assert!(offline.stderr.contains("reboot"), "{}", offline.stderr);
}

#[test]
fn members_join_with_clone_once_and_leave_once() {
    let nodes = Nodes::new();
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    for node in ["db-1", "db-2"] {
        let added = nodes.run("db-0", "db-add-instance.sh", &[node]);
        assert_eq!(added.code, 0, "{}", added.stderr);
        assert_eq!(nodes.attr(node, "role"), "SECONDARY");
        assert_eq!(nodes.attr(node, "group"), nodes.attr("db-0", "group"));
    }
    assert_eq!(
        nodes.calls("--recoveryMethod=clone"),
        2,
        "every join uses clone"
    );
    let again = nodes.run("db-0", "db-add-instance.sh", &["db-1"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("already a member"),
        "{}",
        again.stdout
    );
    assert_eq!(nodes.calls("cluster add-instance"), 2, "no second add");

    let removed = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert_eq!(nodes.attr("db-2", "group"), "");
    let again = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(again.code, 0);
    assert_eq!(
        nodes.calls("cluster remove-instance"),
        1,
        "no second remove"
    );
    assert_eq!(nodes.calls("--force=true"), 1);
}

#[test]
fn a_member_that_left_rejoins_instead_of_being_cloned_again() {
    let nodes = Nodes::new();
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    assert_eq!(nodes.run("db-0", "db-add-instance.sh", &["db-1"]).code, 0);
    // mysqld on db-1 restarted without Group Replication: OFFLINE, the group's name kept.
    std::fs::write(
        Path::new(nodes.root.path()).join("db-1").join("state"),
        "OFFLINE",
    )
    .expect("state");
    assert_eq!(nodes.report("db-1")["memberState"], "OFFLINE");
    let rejoined = nodes.run("db-0", "db-add-instance.sh", &["db-1"]);
    assert_eq!(rejoined.code, 0, "{}", rejoined.stderr);
    assert!(rejoined.stdout.contains("rejoined"), "{}", rejoined.stdout);
    // Incremental recovery first, then ONLINE.
    assert_eq!(nodes.report("db-1")["memberState"], "RECOVERING");
    assert_eq!(nodes.report("db-1")["memberState"], "ONLINE");
    assert_eq!(nodes.calls("cluster rejoin-instance"), 1);
    assert_eq!(
        nodes.calls("cluster add-instance"),
        1,
        "only the first join adds"
    );
    let again = nodes.run("db-0", "db-add-instance.sh", &["db-1"]);
    assert!(
        again.stdout.contains("already a member"),
        "{}",
        again.stdout
    );
    assert_eq!(nodes.calls("cluster rejoin-instance"), 1);
}

#[test]
fn a_node_of_another_group_is_refused_and_adds_run_only_on_members() {
    let nodes = Nodes::new();
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    assert_eq!(
        nodes.run("db-9", "db-create-cluster.sh", &["rogue"]).code,
        0
    );
    let refused = nodes.run("db-0", "db-add-instance.sh", &["db-9"]);
    assert_eq!(refused.code, 3, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("belongs to group"),
        "{}",
        refused.stderr
    );
    let not_member = nodes.run("db-5", "db-add-instance.sh", &["db-1"]);
    assert_eq!(not_member.code, 3);
    assert!(
        not_member.stderr.contains("not an ONLINE cluster member"),
        "{}",
        not_member.stderr
    );
    assert_eq!(nodes.calls("cluster add-instance"), 0);
}

#[test]
fn the_password_travels_only_on_stdin_and_in_a_private_file() {
    let nodes = Nodes::new();
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    assert_eq!(nodes.run("db-0", "db-add-instance.sh", &["db-1"]).code, 0);
    let log = nodes.log();
    assert!(log.contains("--passwords-from-stdin"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password appeared in a command line:\n{log}"
    );
    // The scripts read the secret by name from Secrets Manager.
    assert!(
        log.contains("aws secretsmanager get-secret-value --secret-id ha-orchestrator/"),
        "{log}"
    );
    // The password really comes from the secret: a wrong secret is refused by the server.
    let output = nodes
        .command("db-0", "db-report.sh", &[])
        .env("FAKE_SECRET_VALUE", "not-the-password")
        .output()
        .expect("bash");
    assert!(!output.status.success(), "a wrong secret was accepted");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Access denied"));
}

#[test]
fn install_configures_mysql_and_the_admin_account_once() {
    let nodes = Nodes::new();
    let first = nodes.run("db-0", "db-install.sh", &[]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("MySQL 8.4.3 ready on db-0"),
        "{}",
        first.stdout
    );
    assert_eq!(
        nodes.calls("dnf install"),
        2,
        "release package, then server and shell"
    );
    assert_eq!(nodes.calls("mysqld --initialize-insecure"), 1);
    assert_eq!(nodes.attr("db-0", "admin_user"), "clusteradmin");
    assert_eq!(nodes.attr("db-0", "root_auth"), "socket");
    let config = nodes.attr("db-0", "sysroot/etc/my.cnf.d/ha-orchestrator.cnf");
    for line in [
        "gtid_mode=ON",
        "enforce_gtid_consistency=ON",
        "report_host=db-0",
        "server_id=",
    ] {
        assert!(config.contains(line), "{line} missing from\n{config}");
    }

    // Idempotent: nothing installed, initialised, restarted or created a second time.
    let second = nodes.run("db-0", "db-install.sh", &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(nodes.calls("dnf install"), 2);
    assert_eq!(nodes.calls("mysqld --initialize-insecure"), 1);
    assert_eq!(nodes.calls("systemctl restart mysqld"), 1);
    assert!(
        !nodes.log().contains(PASSWORD),
        "password in argv:\n{}",
        nodes.log()
    );
}

#[test]
fn a_full_outage_is_rebooted_only_on_a_node_of_that_cluster() {
    let nodes = Nodes::new();
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    // Complete outage: the member is OFFLINE, the metadata survives.
    std::fs::write(nodes.root.path().join("db-0/state"), "OFFLINE").unwrap();
    let refused = nodes.run("db-0", "db-reboot-cluster.sh", &["other"]);
    assert_eq!(refused.code, 3, "{}", refused.stdout);
    assert!(refused.stderr.contains("'shop'"), "{}", refused.stderr);

    let rebooted = nodes.run("db-0", "db-reboot-cluster.sh", &["shop"]);
    assert_eq!(rebooted.code, 0, "{}", rebooted.stderr);
    assert_eq!(nodes.report("db-0")["memberState"], "ONLINE");
    let again = nodes.run("db-0", "db-reboot-cluster.sh", &["shop"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    assert_eq!(nodes.calls("dba reboot-cluster-from-complete-outage"), 1);
}

#[test]
fn routers_bootstrap_against_an_online_member_once() {
    let nodes = Nodes::new();
    let early = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
    assert_ne!(early.code, 0, "bootstrapped against a node with no cluster");
    assert!(
        early.stderr.contains("not an ONLINE member"),
        "{}",
        early.stderr
    );

    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    let wordpress = nodes
        .root
        .path()
        .join("web-0/sysroot/usr/share/nginx/wordpress");
    std::fs::create_dir_all(&wordpress).unwrap();
    std::fs::write(
        wordpress.join("wp-config-sample.php"),
        "<?php\ndefine( 'DB_NAME', 'database_name_here' );\ndefine( 'DB_USER', 'username_here' );\ndefine( 'DB_PASSWORD', 'password_here' );\ndefine( 'DB_HOST', 'localhost' );\ndefine( 'AUTH_KEY', 'put your unique phrase here' );\ndefine( 'AUTH_SALT', 'put your unique phrase here' );\n",
    )
    .unwrap();
    let first = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("6446"), "{}", first.stdout);
    let config = nodes.attr("web-0", "sysroot/etc/mysqlrouter/mysqlrouter.conf");
    assert!(config.contains("cluster_name=shop"), "{config}");

    let second = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("already bootstrapped"),
        "{}",
        second.stdout
    );
    assert_eq!(
        nodes.calls("mysqlrouter --bootstrap"),
        2,
        "one refused, one done"
    );
    assert!(!nodes.log().contains(PASSWORD));
}
