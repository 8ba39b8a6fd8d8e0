//! The database scripts (scripts/ssm/) run against recording fakes of `mysqlsh`, `mysql`,
//! `mysqld`, `mysqlrouter`, `aws`, `dnf`, `rpm`, `systemctl` and `curl` (tests/fakes/) that
//! keep each node's state in a temp dir: what cannot run here (MySQL itself) is replaced by
//! the nearest thing that records what was asked of it.
//!
//! A fake may not accept what the real tool rejects: the tests at the end of this file show
//! each fake refusing the forms its real tool refuses (each rule is cited in the fake), so a
//! script that uses one fails here, not first on an instance.

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

    /// Nodes on which `db-install.sh` has run (MySQL installed, configured and running).
    fn installed(hosts: &[&str]) -> Self {
        let nodes = Self::new();
        for host in hosts {
            let run = nodes.run(host, "db-install.sh", &[]);
            assert_eq!(
                run.code, 0,
                "install on {host}: {}\n{}",
                run.stdout, run.stderr
            );
        }
        nodes
    }

    /// `scripts/ssm/<script>` as the SSM agent would run it on `host`, fakes on the PATH.
    fn command(&self, host: &str, script: &str, args: &[&str]) -> Command {
        let mut command = self.on(host, "bash");
        command.arg(project("scripts/ssm").join(script)).args(args);
        command
    }

    /// `program` run on `host` with the fakes first on the PATH, as a script there would.
    fn on(&self, host: &str, program: &str) -> Command {
        let path = format!(
            "{}:{}",
            project("tests/fakes").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(program);
        command
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
        output(self.command(host, script, args), "")
    }

    /// A fake tool run directly on `host` with `args`, `stdin` on its standard input.
    fn tool(&self, host: &str, program: &str, args: &[&str], stdin: &str) -> Run {
        let fake = project("tests/fakes").join(program);
        let mut command = self.on(host, &fake.display().to_string());
        command.args(args);
        output(command, stdin)
    }

    /// Write `text` to `path` inside `host`'s sysroot.
    fn write(&self, host: &str, path: &str, text: &str) {
        let file = self.root.path().join(host).join("sysroot").join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
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

fn output(mut command: Command, stdin: &str) -> Run {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_fresh_node_creates_the_cluster_once() {
    let nodes = Nodes::installed(&["db-0"]);
    let fresh = nodes.report("db-0");
    assert_eq!(fresh["memberState"], "OFFLINE");
    assert_eq!(fresh["clusterName"], "");
    assert_eq!(fresh["metadataMembers"], serde_json::json!([]));

    let first = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(nodes.calls("dba create-cluster shop"), 1);
    let created = nodes.report("db-0");
    assert_eq!(created["memberState"], "ONLINE");
    assert_eq!(created["role"], "PRIMARY");
    assert_eq!(created["clusterName"], "shop");
    assert_eq!(created["metadataMembers"], serde_json::json!(["db-0"]));
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
    let nodes = Nodes::installed(&["db-0"]);
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
    let nodes = Nodes::installed(&["db-0", "db-1", "db-2"]);
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
    // The metadata lists every instance, on every member (a replicated schema).
    for node in ["db-0", "db-1", "db-2"] {
        assert_eq!(
            nodes.report(node)["metadataMembers"],
            serde_json::json!(["db-0", "db-1", "db-2"]),
            "{node}"
        );
    }

    let removed = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert_eq!(nodes.attr("db-2", "group"), "");
    assert_eq!(
        nodes.report("db-0")["metadataMembers"],
        serde_json::json!(["db-0", "db-1"])
    );
    let again = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(again.code, 0);
    assert_eq!(
        nodes.calls("cluster remove-instance"),
        1,
        "no second remove"
    );
    assert_eq!(nodes.calls("--force=true"), 1);
}

/// A lost member is expelled from the group within seconds, but the metadata keeps it until
/// `cluster.removeInstance(host, {force: true})` takes it out: the report names it under
/// `metadataMembers` and the removal acts on it although the group no longer lists it.
#[test]
fn a_lost_member_the_group_expelled_is_removed_from_the_metadata() {
    let nodes = Nodes::installed(&["db-0", "db-1", "db-2"]);
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    for node in ["db-1", "db-2"] {
        assert_eq!(nodes.run("db-0", "db-add-instance.sh", &[node]).code, 0);
    }
    // db-2's instance is gone: its server is down and the group expelled it.
    let stop = nodes.tool("db-2", "systemctl", &["stop", "mysqld"], "");
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    std::fs::remove_file(nodes.root.path().join("db-2/group")).unwrap();
    let report = nodes.report("db-0");
    assert_eq!(report["members"], serde_json::json!(["db-0", "db-1"]));
    assert_eq!(
        report["metadataMembers"],
        serde_json::json!(["db-0", "db-1", "db-2"])
    );

    let removed = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(removed.code, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(
        removed.stdout.contains("db-2 removed"),
        "{}",
        removed.stdout
    );
    assert!(
        nodes
            .log()
            .contains("cluster remove-instance db-2:3306 --force=true"),
        "{}",
        nodes.log()
    );
    assert_eq!(
        nodes.report("db-0")["metadataMembers"],
        serde_json::json!(["db-0", "db-1"])
    );
    assert_eq!(
        nodes.report("db-1")["metadataMembers"],
        serde_json::json!(["db-0", "db-1"])
    );

    // In neither the group nor the metadata now: nothing to do, no second removal.
    let again = nodes.run("db-0", "db-remove-instance.sh", &["db-2"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    assert_eq!(nodes.calls("cluster remove-instance"), 1);
}

/// A reboot from complete outage refuses to go ahead while a member of the metadata is
/// unreachable, unless the orchestrator passes FORCE=true (only once EC2 confirmed that
/// member's instance terminated); the script passes `--force` then and only then.
#[test]
fn a_reboot_passes_force_only_when_told_to() {
    let nodes = Nodes::installed(&["db-0", "db-1"]);
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    assert_eq!(nodes.run("db-0", "db-add-instance.sh", &["db-1"]).code, 0);
    // Complete outage, and db-1's instance is gone for good.
    for node in ["db-0", "db-1"] {
        std::fs::write(nodes.root.path().join(node).join("state"), "OFFLINE").unwrap();
        std::fs::write(nodes.root.path().join(node).join("role"), "").unwrap();
    }
    assert_eq!(
        nodes
            .tool("db-1", "systemctl", &["stop", "mysqld"], "")
            .code,
        0
    );

    for args in [&["shop"][..], &["shop", "false"][..]] {
        let refused = nodes.run("db-0", "db-reboot-cluster.sh", args);
        assert_eq!(refused.code, 1, "{args:?}: {}", refused.stdout);
        assert!(
            refused
                .stderr
                .contains("Could not determine if Cluster is completely OFFLINE"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(nodes.calls("--force"), 0, "{}", nodes.log());
    let bad = nodes.run("db-0", "db-reboot-cluster.sh", &["shop", "yes"]);
    assert_eq!(bad.code, 3, "{}", bad.stderr);

    let forced = nodes.run("db-0", "db-reboot-cluster.sh", &["shop", "true"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        nodes
            .log()
            .contains("dba reboot-cluster-from-complete-outage shop --force"),
        "{}",
        nodes.log()
    );
    assert_eq!(nodes.report("db-0")["memberState"], "ONLINE");
}

#[test]
fn a_member_that_left_rejoins_instead_of_being_cloned_again() {
    let nodes = Nodes::installed(&["db-0", "db-1"]);
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
    let nodes = Nodes::installed(&["db-0", "db-9", "db-5", "db-1"]);
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
    let nodes = Nodes::installed(&["db-0", "db-1"]);
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
        // ... and the running server read it (/etc/my.cnf includes the file).
        let running = nodes.attr("db-0", "server_options");
        assert!(
            running.contains(line),
            "{line} not read by mysqld:\n{running}"
        );
    }
    // The server accepts every option it reads.
    let validate = nodes.tool("db-0", "mysqld", &["--validate-config"], "");
    assert_eq!(validate.code, 0, "{}", validate.stderr);

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

/// EgressMode VpcEndpoints: no internet, so the image carries MySQL's packages but not
/// necessarily Oracle's release package; the install must not fetch it from
/// repo.mysql.com when nothing is missing.
#[test]
fn an_image_that_carries_mysql_installs_nothing() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    let shell = nodes.tool("db-0", "dnf", &["install", "-y", "mysql-shell"], "");
    assert_eq!(shell.code, 0, "{}", shell.stderr);
    // Built from the packages alone: no release package on the image.
    let packages = nodes.root.path().join("db-0/packages");
    let kept: String = std::fs::read_to_string(&packages)
        .expect("packages")
        .lines()
        .filter(|p| *p != "mysql97-community-release")
        .map(|p| format!("{p}\n"))
        .collect();
    std::fs::write(&packages, kept).expect("write packages");
    let before = nodes.calls("dnf install");

    let run = nodes.run("db-0", "db-install.sh", &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        nodes.calls("dnf install"),
        before,
        "installed with every package present:\n{}",
        nodes.log()
    );
}

#[test]
fn a_full_outage_is_rebooted_only_on_a_node_of_that_cluster() {
    let nodes = Nodes::installed(&["db-0"]);
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
    let nodes = Nodes::installed(&["db-0"]);
    let early = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
    assert_ne!(early.code, 0, "bootstrapped against a node with no cluster");
    assert!(
        early.stderr.contains("not an ONLINE member"),
        "{}",
        early.stderr
    );

    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    web_user_data_ran(&nodes, "web-0");
    let first = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("6446"), "{}", first.stdout);
    let config = nodes.attr("web-0", "sysroot/etc/mysqlrouter/mysqlrouter.conf");
    assert!(config.contains("metadata_cluster=shop"), "{config}");

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

/// What the web user data leaves on `host` before WebRouter runs: nginx and php-fpm
/// installed (their accounts exist) and WordPress's sample configuration unpacked.
fn web_user_data_ran(nodes: &Nodes, host: &str) {
    let dnf = nodes.tool(host, "dnf", &["install", "-y", "nginx", "php-fpm"], "");
    assert_eq!(dnf.code, 0, "{}", dnf.stderr);
    nodes.write(
        host,
        "usr/share/nginx/wordpress/wp-config-sample.php",
        "<?php\ndefine( 'DB_NAME', 'database_name_here' );\ndefine( 'DB_USER', 'username_here' );\ndefine( 'DB_PASSWORD', 'password_here' );\ndefine( 'DB_HOST', 'localhost' );\ndefine( 'AUTH_KEY', 'put your unique phrase here' );\ndefine( 'AUTH_SALT', 'put your unique phrase here' );\n",
    );
}

/// php-fpm's pool runs as `apache` on Amazon Linux 2023 (see web-router.sh): WordPress's
/// configuration must be readable by that group and by nobody else but root, also on a node
/// an earlier version configured (the run that finds the file current still fixes it).
#[test]
fn wordpress_config_is_read_by_php_fpm_and_nobody_else() {
    use std::os::unix::fs::PermissionsExt;
    let nodes = Nodes::installed(&["db-0"]);
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    web_user_data_ran(&nodes, "web-0");
    let config = nodes
        .root
        .path()
        .join("web-0/sysroot/usr/share/nginx/wordpress/wp-config.php");
    let owner = || {
        let owners = nodes.attr("web-0", "owners");
        let prefix = format!("{} ", config.display());
        owners
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_default()
    };
    for run in ["configures", "finds it current"] {
        // An earlier version's ownership: the run must correct it.
        if config.exists() {
            let here = nodes.root.path().join("web-0/owners");
            let mut owners = std::fs::read_to_string(&here).unwrap_or_default();
            owners.push_str(&format!("{} root:nginx\n", config.display()));
            std::fs::write(&here, owners).unwrap();
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let done = nodes.run("web-0", "web-router.sh", &["shop", "db-0"]);
        assert_eq!(done.code, 0, "{run}: {}\n{}", done.stdout, done.stderr);
        assert_eq!(owner(), "root:apache", "{run}: {}", nodes.log());
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{run}: mode {mode:o}");
    }
    assert!(!nodes.log().contains(APP_PASSWORD));
}

#[test]
fn an_offline_member_reports_its_group_and_gtids_in_their_fields() {
    let nodes = Nodes::installed(&["db-0"]);
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    // Group Replication stopped: the member row says OFFLINE with an empty role, as
    // `take_member_offline` of the local cloud's agent leaves it.
    std::fs::write(nodes.root.path().join("db-0/state"), "OFFLINE").unwrap();
    std::fs::write(nodes.root.path().join("db-0/role"), "").unwrap();
    let report = nodes.report("db-0");
    assert_eq!(report["memberState"], "OFFLINE");
    assert_eq!(report["role"], "", "{report}");
    assert_eq!(report["groupName"], nodes.attr("db-0", "group"), "{report}");
    assert_eq!(
        report["gtidExecuted"],
        nodes.attr("db-0", "gtid"),
        "{report}"
    );
}

// ------------------------------------------------------------------------------------------
// The fakes refuse what the real tools refuse (rules and sources in tests/fakes/).
// ------------------------------------------------------------------------------------------

/// `host` with Oracle's server package installed (its /etc/my.cnf) and nothing else.
fn with_server_package(nodes: &Nodes, host: &str) {
    let url = "https://repo.mysql.com/mysql97-community-release-el9-1.noarch.rpm";
    assert_eq!(nodes.tool(host, "dnf", &["install", "-y", url], "").code, 0);
    let server = nodes.tool(
        host,
        "dnf",
        &["install", "-y", "mysql-community-server"],
        "",
    );
    assert_eq!(server.code, 0, "{}", server.stderr);
}

/// A client options file for the cluster admin on `host`, as `mysql_as_admin` writes it.
fn admin_options(nodes: &Nodes, host: &str) -> PathBuf {
    let file = nodes.root.path().join(format!("{host}-client.cnf"));
    std::fs::write(
        &file,
        format!("[client]\nuser=clusteradmin\npassword={PASSWORD}\nhost={host}\n"),
    )
    .expect("options file");
    file
}

#[test]
fn mysqld_refuses_variables_the_server_no_longer_has() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    for removed in [
        "binlog_transaction_dependency_tracking=WRITESET",
        "transaction_write_set_extraction=XXHASH64",
        "master_info_repository=TABLE",
        "relay_log_info_repository=TABLE",
        "default_authentication_plugin=mysql_native_password",
        "expire_logs_days=7",
    ] {
        nodes.write("db-0", "etc/my.cnf", &format!("[mysqld]\n{removed}\n"));
        let run = nodes.tool("db-0", "mysqld", &["--validate-config"], "");
        assert_eq!(run.code, 1, "{removed} accepted");
        assert!(
            run.stderr.contains(&format!(
                "[ERROR] [MY-000067] [Server] unknown variable '{removed}'."
            )) && run.stderr.contains("[MY-010119] [Server] Aborting"),
            "{}",
            run.stderr
        );
    }
    // The server does not start with it: systemctl says the job failed, nothing runs.
    nodes.write(
        "db-0",
        "etc/my.cnf",
        "[mysqld]\ndatadir=/var/lib/mysql\nbinlog_transaction_dependency_tracking=WRITESET\n",
    );
    let start = nodes.tool("db-0", "systemctl", &["start", "mysqld"], "");
    assert_eq!(start.code, 1);
    assert!(
        start.stderr.contains("Job for mysqld.service failed"),
        "{}",
        start.stderr
    );
    assert_ne!(nodes.attr("db-0", "server"), "running");
    // A variable the server has is accepted, in either spelling.
    nodes.write(
        "db-0",
        "etc/my.cnf",
        "[mysqld]\ngtid-mode=ON\nenforce_gtid_consistency=ON\n",
    );
    assert_eq!(
        nodes
            .tool("db-0", "mysqld", &["--validate-config"], "")
            .code,
        0
    );
    let option = nodes.tool(
        "db-0",
        "mysqld",
        &["--validate-config", "--no-such-option"],
        "",
    );
    assert_eq!(option.code, 1);
    assert!(
        option.stderr.contains("unknown option '--no-such-option'."),
        "{}",
        option.stderr
    );
}

#[test]
fn mysqld_reads_my_cnf_and_only_the_files_it_includes() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    // Oracle's /etc/my.cnf includes no directory: a file in /etc/my.cnf.d is never read.
    nodes.write(
        "db-0",
        "etc/my.cnf.d/extra.cnf",
        "[mysqld]\nno_such_variable=1\n",
    );
    assert_eq!(
        nodes
            .tool("db-0", "mysqld", &["--validate-config"], "")
            .code,
        0
    );
    let packaged = nodes.attr("db-0", "sysroot/etc/my.cnf");
    nodes.write(
        "db-0",
        "etc/my.cnf",
        &format!("{packaged}!includedir /etc/my.cnf.d\n"),
    );
    let included = nodes.tool("db-0", "mysqld", &["--validate-config"], "");
    assert_eq!(included.code, 1, "the included file was not read");
    assert!(
        included
            .stderr
            .contains("unknown variable 'no_such_variable=1'"),
        "{}",
        included.stderr
    );
    // Groups other than the server's are not the server's business.
    nodes.write(
        "db-0",
        "etc/my.cnf.d/extra.cnf",
        "[client]\nno_such_variable=1\n",
    );
    assert_eq!(
        nodes
            .tool("db-0", "mysqld", &["--validate-config"], "")
            .code,
        0
    );
}

#[test]
fn group_replication_options_need_the_plugin_or_the_loose_prefix() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    let datadir = nodes.root.path().join("db-0/sysroot/var/lib/mysql");
    let datadir_option = format!("--datadir={}", datadir.display());
    let initialize = |config: &str| {
        let _ = std::fs::remove_dir_all(&datadir);
        nodes.write("db-0", "etc/my.cnf", config);
        nodes.tool(
            "db-0",
            "mysqld",
            &["--initialize-insecure", "--user=mysql", &datadir_option],
            "",
        )
    };
    let plain =
        initialize("[mysqld]\ngroup_replication_group_name=aaaaaaaa-0000-4000-8000-000000000000\n");
    assert_eq!(plain.code, 1, "a plugin option was known before its plugin");
    assert!(
        plain
            .stderr
            .contains("unknown variable 'group_replication_group_name="),
        "{}",
        plain.stderr
    );
    let loose = initialize(
        "[mysqld]\nloose-group_replication_group_name=aaaaaaaa-0000-4000-8000-000000000000\n",
    );
    assert_eq!(loose.code, 0, "{}", loose.stderr);
    assert!(loose.stderr.contains("[Warning]"), "{}", loose.stderr);
    let loaded = initialize(
        "[mysqld]\nplugin-load-add=group_replication.so\ngroup_replication_group_name=aaaaaaaa-0000-4000-8000-000000000000\n",
    );
    assert_eq!(loaded.code, 0, "{}", loaded.stderr);
    // A data directory that already has files is refused.
    let again = nodes.tool(
        "db-0",
        "mysqld",
        &["--initialize-insecure", "--user=mysql", &datadir_option],
        "",
    );
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("MY-010457"), "{}", again.stderr);
}

#[test]
fn the_packaged_first_start_leaves_root_a_password_the_scripts_do_not_know() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    // Started before `mysqld --initialize-insecure`: the unit initialises the data directory
    // with a generated, expired root password.
    assert_eq!(
        nodes
            .tool("db-0", "systemctl", &["start", "mysqld"], "")
            .code,
        0
    );
    let root = nodes.tool(
        "db-0",
        "mysql",
        &[
            "--user=root",
            "--batch",
            "-e",
            "SELECT 1 FROM mysql.user WHERE user='x'",
        ],
        "",
    );
    assert_eq!(root.code, 1);
    assert!(
        root.stderr
            .contains("Access denied for user 'root'@'localhost' (using password: NO)"),
        "{}",
        root.stderr
    );
}

#[test]
fn auth_socket_needs_its_plugin_loaded() {
    let nodes = Nodes::new();
    with_server_package(&nodes, "db-0");
    let datadir = format!(
        "--datadir={}",
        nodes
            .root
            .path()
            .join("db-0/sysroot/var/lib/mysql")
            .display()
    );
    let init = nodes.tool(
        "db-0",
        "mysqld",
        &["--initialize-insecure", "--user=mysql", &datadir],
        "",
    );
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert_eq!(
        nodes
            .tool("db-0", "systemctl", &["start", "mysqld"], "")
            .code,
        0
    );
    let alter = [
        "--user=root",
        "--batch",
        "-e",
        "ALTER USER 'root'@'localhost' IDENTIFIED WITH auth_socket",
    ];
    let refused = nodes.tool("db-0", "mysql", &alter, "");
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("ERROR 1524 (HY000) at line 1: Plugin 'auth_socket' is not loaded"),
        "{}",
        refused.stderr
    );
    let packaged = nodes.attr("db-0", "sysroot/etc/my.cnf");
    nodes.write(
        "db-0",
        "etc/my.cnf",
        &format!("{packaged}plugin-load-add=auth_socket.so\n"),
    );
    assert_eq!(
        nodes
            .tool("db-0", "systemctl", &["restart", "mysqld"], "")
            .code,
        0
    );
    assert_eq!(nodes.tool("db-0", "mysql", &alter, "").code, 0);
}

#[test]
fn the_mysql_client_refuses_what_mysql_refuses() {
    let nodes = Nodes::installed(&["db-0"]);
    let options = admin_options(&nodes, "db-0");
    let defaults = format!("--defaults-extra-file={}", options.display());
    let query = |sql: &str| {
        nodes.tool(
            "db-0",
            "mysql",
            &[&defaults, "--batch", "--skip-column-names", "-e", sql],
            "",
        )
    };
    // Group Replication's variables do not exist before MySQL Shell installs its plugin.
    let unknown = query("SELECT @@group_replication_group_name");
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains(
            "ERROR 1193 (HY000) at line 1: Unknown system variable 'group_replication_group_name'"
        ),
        "{}",
        unknown.stderr
    );
    // performance_schema.global_variables answers with no row instead.
    let listed = query(
        "SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_group_name'",
    );
    assert_eq!(
        (listed.code, listed.stdout.as_str()),
        (0, ""),
        "{}",
        listed.stderr
    );
    assert_eq!(query("SELECT @@no_such_variable").code, 1);

    // --defaults-extra-file is read only as the first option.
    let late = nodes.tool(
        "db-0",
        "mysql",
        &["--batch", &defaults, "-e", "SELECT 1"],
        "",
    );
    assert_eq!(late.code, 1);
    assert!(
        late.stderr
            .contains("[ERROR] unknown variable 'defaults-extra-file="),
        "{}",
        late.stderr
    );
    let option = nodes.tool("db-0", "mysql", &[&defaults, "--no-such-option"], "");
    assert_eq!(option.code, 1, "{}", option.stderr);
    std::fs::write(&options, "[client]\nuser=clusteradmin\nno_such_key=1\n").unwrap();
    let key = query("SELECT 1");
    assert_eq!(key.code, 1);
    assert!(
        key.stderr.contains("unknown variable 'no_such_key=1'"),
        "{}",
        key.stderr
    );

    // A server that is not running does not answer.
    let stopped = Nodes::new();
    let options = admin_options(&stopped, "db-3");
    let down = stopped.tool(
        "db-3",
        "mysql",
        &[
            &format!("--defaults-extra-file={}", options.display()),
            "-e",
            "SELECT 1",
        ],
        "",
    );
    assert_eq!(down.code, 1);
    assert!(
        down.stderr.contains("ERROR 2003 (HY000)"),
        "{}",
        down.stderr
    );
}

#[test]
fn mysqlsh_accepts_only_its_real_command_line() {
    let nodes = Nodes::installed(&["db-0", "db-1"]);
    let shell = |args: &[&str]| {
        let mut all = vec![
            "--passwords-from-stdin",
            "--uri",
            "clusteradmin@127.0.0.1:3306",
        ];
        all.extend_from_slice(args);
        nodes.tool("db-0", "mysqlsh", &all, &format!("{PASSWORD}\n"))
    };
    // An option the Shell does not know, before `--`.
    let unknown = nodes.tool(
        "db-0",
        "mysqlsh",
        &["--no-such-option", "--", "dba", "create-cluster", "shop"],
        "",
    );
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("unknown option --no-such-option"),
        "{}",
        unknown.stderr
    );
    // Named options the method does not have (interactive is gone from 8.4's createCluster).
    let invalid = shell(&["--", "dba", "create-cluster", "shop", "--interactive=false"]);
    assert_eq!(invalid.code, 10, "{}", invalid.stderr);
    assert!(
        invalid
            .stderr
            .contains("The following option is invalid: --interactive"),
        "{}",
        invalid.stderr
    );
    for (args, message) in [
        (
            &[
                "--",
                "dba",
                "create-cluster",
                "shop",
                "--memberSslMode=SOMETIMES",
            ][..],
            "Invalid value for memberSslMode option",
        ),
        (
            &["--", "dba", "create-cluster", "shop", "--multiPrimary=no"][..],
            "Bool expected",
        ),
        (
            &["--", "dba", "create-cluster", "shop cluster"][..],
            "may only contain alphanumeric characters",
        ),
        (
            &["--", "dba", "create-cluster", "shop", "extra"][..],
            "The following argument is invalid: extra",
        ),
        (
            &["--", "cluster", "add-instance", "db-1:3306"][..],
            "not available through a session to a standalone instance",
        ),
        (
            &["--", "nosuch", "thing"][..],
            "There is no object registered",
        ),
    ] {
        let run = shell(args);
        assert_ne!(run.code, 0, "{args:?} accepted");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    assert_eq!(nodes.calls("Cluster successfully created"), 0);
    // camelCase and kebab-case alike, as the Shell's command-line integration.
    let created = shell(&[
        "--",
        "dba",
        "createCluster",
        "shop",
        "--multi-primary=false",
        "--member-ssl-mode=REQUIRED",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let clone = shell(&[
        "--",
        "cluster",
        "add-instance",
        "db-1:3306",
        "--recoveryMethod=copy",
    ]);
    assert_ne!(clone.code, 0);
    assert!(
        clone
            .stderr
            .contains("Invalid value for option recoveryMethod: copy"),
        "{}",
        clone.stderr
    );
    let added = shell(&[
        "--",
        "cluster",
        "add-instance",
        "db-1:3306",
        "--recovery-method=clone",
    ]);
    assert_eq!(added.code, 0, "{}", added.stderr);
}

#[test]
fn mysqlsh_checks_the_instance_configuration_the_server_runs_with() {
    let nodes = Nodes::installed(&["db-0"]);
    // The server restarted with the packaged configuration only: no GTIDs.
    let packaged = "[mysqld]\ndatadir=/var/lib/mysql\nplugin-load-add=auth_socket.so\n";
    nodes.write("db-0", "etc/my.cnf", packaged);
    assert_eq!(
        nodes
            .tool("db-0", "systemctl", &["restart", "mysqld"], "")
            .code,
        0
    );
    let created = nodes.run("db-0", "db-create-cluster.sh", &["shop"]);
    assert_ne!(created.code, 0);
    assert!(
        created
            .stderr
            .contains("Dba.createCluster: Instance check failed"),
        "{}",
        created.stderr
    );
}

#[test]
fn mysqlrouter_bootstrap_refuses_what_router_refuses() {
    let nodes = Nodes::installed(&["db-0"]);
    assert_eq!(nodes.run("db-0", "db-create-cluster.sh", &["shop"]).code, 0);
    let bootstrap = |args: &[&str]| {
        let mut all = vec!["--bootstrap", "clusteradmin@db-0:3306"];
        all.extend_from_slice(args);
        nodes.tool("web-0", "mysqlrouter", &all, &format!("{PASSWORD}\n"))
    };
    let root = bootstrap(&["--conf-base-port=6446"]);
    assert_eq!(root.code, 1);
    assert!(
        root.stderr.contains("You are bootstrapping as a superuser"),
        "{}",
        root.stderr
    );
    assert_eq!(
        bootstrap(&["--user=mysqlrouter", "--no-such-option"]).code,
        1
    );
    assert_eq!(
        bootstrap(&["--user=mysqlrouter", "--conf-base-port=65533"]).code,
        1
    );
    let done = bootstrap(&["--user=mysqlrouter", "--conf-base-port=6446"]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    // Router names the cluster as metadata_cluster= in its metadata_cache section.
    let config = nodes.attr("web-0", "sysroot/etc/mysqlrouter/mysqlrouter.conf");
    assert!(config.contains("\nmetadata_cluster=shop\n"), "{config}");
    assert!(!config.contains("cluster_name="), "{config}");
    // A configuration for another cluster is replaced only with --force.
    std::fs::write(
        nodes
            .root
            .path()
            .join("web-0/sysroot/etc/mysqlrouter/mysqlrouter.conf"),
        config.replace("metadata_cluster=shop", "metadata_cluster=other"),
    )
    .unwrap();
    let other = bootstrap(&["--user=mysqlrouter"]);
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains("please use the --force"),
        "{}",
        other.stderr
    );
    assert_eq!(bootstrap(&["--user=mysqlrouter", "--force"]).code, 0);
}

#[test]
fn the_aws_cli_refuses_unknown_and_missing_parameters() {
    let nodes = Nodes::new();
    let aws = |args: &[&str]| {
        let mut all = vec!["secretsmanager", "get-secret-value"];
        all.extend_from_slice(args);
        nodes.tool("db-0", "aws", &all, "")
    };
    let good = aws(&[
        "--secret-id",
        "s/admin",
        "--query",
        "SecretString",
        "--output",
        "text",
    ]);
    assert_eq!((good.code, good.stdout.trim()), (0, PASSWORD));
    let unknown = aws(&[
        "--secret",
        "s/admin",
        "--query",
        "SecretString",
        "--output",
        "text",
    ]);
    assert_eq!(unknown.code, 252);
    assert!(
        unknown.stderr.contains("Unknown options: --secret"),
        "{}",
        unknown.stderr
    );
    let missing = aws(&["--query", "SecretString", "--output", "text"]);
    assert_eq!(missing.code, 252);
    assert!(
        missing
            .stderr
            .contains("the following arguments are required: --secret-id"),
        "{}",
        missing.stderr
    );
    assert_eq!(
        aws(&["--secret-id", "s/admin", "--output", "txt"]).code,
        252
    );
}

#[test]
fn imds_answers_only_with_a_session_token() {
    let nodes = Nodes::new();
    let url = "http://169.254.169.254/latest/meta-data/local-hostname";
    assert_eq!(nodes.tool("db-0", "curl", &["-sf", url], "").code, 22);
    let token = "http://169.254.169.254/latest/api/token";
    assert_eq!(
        nodes
            .tool("db-0", "curl", &["-sf", "-X", "PUT", token], "")
            .code,
        22
    );
    let ttl_zero = [
        "-sf",
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 0",
        token,
    ];
    assert_eq!(nodes.tool("db-0", "curl", &ttl_zero, "").code, 22);
    let issued = nodes.tool(
        "db-0",
        "curl",
        &[
            "-sf",
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            token,
        ],
        "",
    );
    assert_eq!(issued.code, 0);
    let header = format!("X-aws-ec2-metadata-token: {}", issued.stdout);
    let host = nodes.tool("db-0", "curl", &["-sf", "-H", &header, url], "");
    assert_eq!((host.code, host.stdout.as_str()), (0, "db-0"));
}

#[test]
fn packages_and_units_exist_only_once_their_repository_and_package_do() {
    let nodes = Nodes::new();
    let early = nodes.tool(
        "db-0",
        "dnf",
        &["install", "-y", "mysql-community-server"],
        "",
    );
    assert_eq!(early.code, 1, "installed before its repository");
    assert!(
        early
            .stderr
            .contains("Unable to find a match: mysql-community-server"),
        "{}",
        early.stderr
    );
    assert_eq!(
        nodes
            .tool("db-0", "dnf", &["install", "-y", "no-such-package"], "")
            .code,
        1
    );
    let unit = nodes.tool("db-0", "systemctl", &["start", "mysqld"], "");
    assert_eq!(unit.code, 5);
    assert!(
        unit.stderr.contains("Unit mysqld.service not found"),
        "{}",
        unit.stderr
    );
    let rpm = nodes.tool(
        "db-0",
        "rpm",
        &["-q", "mysql-community-server", "mysql-shell"],
        "",
    );
    assert_eq!(rpm.code, 2, "{}", rpm.stdout);
}

/// coreutils chown refuses an account the system does not have: apache exists only once
/// php-fpm (its httpd-filesystem dependency) is installed.
#[test]
fn the_chown_fake_refuses_an_account_the_node_lacks() {
    let nodes = Nodes::new();
    nodes.write("web-0", "etc/file", "x");
    let file = nodes.root.path().join("web-0/sysroot/etc/file");
    let file = file.to_str().expect("path");
    let refused = nodes.tool("web-0", "chown", &["root:apache", file], "");
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("invalid group"),
        "{}",
        refused.stderr
    );
    let option = nodes.tool("web-0", "chown", &["-R", "root:root", file], "");
    assert_eq!(option.code, 2, "{}", option.stderr);
    assert_eq!(
        nodes
            .tool("web-0", "dnf", &["install", "-y", "php-fpm"], "")
            .code,
        0
    );
    let done = nodes.tool("web-0", "chown", &["root:apache", file], "");
    assert_eq!(done.code, 0, "{}", done.stderr);
    let missing = nodes.tool("web-0", "chown", &["root:apache", "/nonexistent/x"], "");
    assert_eq!(missing.code, 1);
}
