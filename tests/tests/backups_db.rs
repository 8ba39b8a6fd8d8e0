//! Backups, binary log archive and restore (issue 16), database side, on real MySQL 9.7
//! servers: every node is a real host of the local cloud (`local_cloud::hosts`), the scripts
//! of `scripts/ssm/` run there as the SSM agent runs them, and `aws s3 cp` in a host really
//! uploads to the local cloud's S3 (fakecloud, reached through the network's gateway relay,
//! `Network::serve_s3`). What the tests read back from S3 they read with the SDK.
//!
//! One test walks the whole story on one set of hosts (a cluster takes a while to form):
//! a backup on a secondary, the primary refused, binlogs archived, a restore into a fresh
//! node that then seeds a new cluster a fresh node joins by clone, a point-in-time restore,
//! a corrupt archive refused before anything stops, and a backup killed midway leaving no
//! manifest. Needs root and the rootfs `scripts/setup.sh` installs; nothing is skipped.

use std::time::{Duration, Instant};

use local_cloud::hosts::{Host, Network};
use local_cloud::{LocalCloud, REGION, Tools};

const ADMIN_SECRET: &str = "ha/test/admin";
const APP_SECRET: &str = "ha/test/app";
const ADMIN_PASSWORD: &str = "Adm1n.pass-word_Q*7+,=^~";
const APP_PASSWORD: &str = "App~pass^w0rd=Z+3,*.-_";
/// The restored cluster's own secrets: a restore must make them the passwords.
const NEW_ADMIN_PASSWORD: &str = "N3w.admin-pass_W*8+,=^~";
const NEW_APP_PASSWORD: &str = "N3w~app^pass=Y+4,*.-_";
const BUCKET: &str = "ha-backups-test";
const SOURCE_CLUSTER: &str = "c-00000c0ffee1";

fn env() -> [(&'static str, &'static str); 2] {
    [
        ("ADMIN_SECRET_ID", ADMIN_SECRET),
        ("APP_SECRET_ID", APP_SECRET),
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a script on `host`: (exit code, stdout, stderr).
fn run(host: &Host, name: &str, args: &[&str]) -> (i32, String, String) {
    let output = host.run_script(name, args, &env()).expect("run script");
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// Run a script that must succeed; its stdout.
fn script(host: &Host, name: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(host, name, args);
    assert_eq!(
        code, 0,
        "{name} {args:?} on {} failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        host.name
    );
    stdout
}

/// The JSON of a script's last stdout line.
fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {stdout}"))
}

fn db_node(network: &Network, name: &str, octet: u8, passwords: (&str, &str)) -> Host {
    let host = network.host(name, octet).expect("create host");
    host.put_secret(ADMIN_SECRET, passwords.0)
        .expect("real host");
    host.put_secret(APP_SECRET, passwords.1).expect("real host");
    script(&host, "db-install.sh", &[]);
    host
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
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// (state, role) of every member as `host` sees the group.
fn members(host: &Host) -> Vec<(String, String, String)> {
    host.sql("SELECT MEMBER_HOST, MEMBER_STATE, MEMBER_ROLE FROM performance_schema.replication_group_members")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f.get(1).unwrap_or(&"").to_string(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

fn wait_online(seed: &Host, count: usize) {
    wait_until(
        &format!("{count} ONLINE members seen from {}", seed.name),
        Duration::from_secs(120),
        || {
            let all = members(seed);
            (all.len() == count && all.iter().all(|(_, s, _)| s == "ONLINE")).then_some(())
        },
    );
}

/// Every member's GTID set equal (the secondaries applied everything).
fn wait_caught_up(hosts: &[&Host]) {
    wait_until("equal GTID sets", Duration::from_secs(60), || {
        let sets: std::collections::BTreeSet<String> = hosts
            .iter()
            .map(|h| h.sql("SELECT @@gtid_executed").unwrap_or_default())
            .collect();
        (sets.len() == 1).then_some(())
    });
}

/// SQL as the application account over TCP, with `password`; None when it is refused.
fn app_sql(on: &Host, password: &str, statement: &str) -> Option<String> {
    let output = on
        .exec(
            &[],
            &[
                "mysql",
                "--user=wordpress",
                &format!("--password={password}"),
                &format!("--host={}", on.dns_name),
                "--batch",
                "--skip-column-names",
                "wordpress",
                "-e",
                statement,
            ],
            None,
        )
        .expect("real host");
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_string())
}

/// Row counts and CHECKSUM TABLE of the application's tables, as root on `host`.
fn fingerprint(host: &Host) -> Vec<String> {
    let tables = host
        .sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'wordpress' ORDER BY TABLE_NAME")
        .expect("tables");
    tables
        .lines()
        .map(|t| {
            let count = host
                .sql(&format!("SELECT COUNT(*) FROM wordpress.`{t}`"))
                .expect("count");
            let sum = host
                .sql(&format!("CHECKSUM TABLE wordpress.`{t}`"))
                .expect("checksum");
            format!("{t} rows={count} {sum}")
        })
        .collect()
}

fn utc(seconds: u64) -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    text(&output.stdout).trim().to_string()
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

struct S3 {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl S3 {
    fn new(cloud: &LocalCloud) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let sdk = runtime.block_on(cloud.sdk_config());
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        runtime
            .block_on(client.create_bucket().bucket(BUCKET).send())
            .expect("create bucket");
        Self { runtime, client }
    }

    /// The object's size, None when there is none.
    fn size(&self, key: &str) -> Option<i64> {
        self.runtime
            .block_on(self.client.head_object().bucket(BUCKET).key(key).send())
            .ok()
            .map(|o| o.content_length().unwrap_or_default())
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let object = self
                .client
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
            object.body.collect().await.expect("body").to_vec()
        })
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        self.runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .expect("put");
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.runtime
            .block_on(
                self.client
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(prefix)
                    .send(),
            )
            .expect("list")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

fn backup_key(id: &str, file: &str) -> String {
    format!("clusters/{SOURCE_CLUSTER}/backups/{id}/{file}")
}

#[test]
fn backup_on_a_secondary_restores_into_a_new_cluster_to_a_point_in_time_and_a_killed_backup_leaves_no_manifest()
 {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("local cloud tools: {e}"));
    let cloud = LocalCloud::start(&tools).unwrap_or_else(|e| panic!("{e}"));
    let s3 = S3::new(&cloud);
    let aws_env = cloud.aws_env();
    let var = |name: &str| {
        aws_env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .expect("aws env")
    };
    let network = Network::up("bk-db").expect("real host");
    let _relay = network
        .serve_s3(
            &cloud.endpoint(),
            REGION,
            &var("AWS_ACCESS_KEY_ID"),
            &var("AWS_SECRET_ACCESS_KEY"),
        )
        .expect("S3 relay");

    // The source cluster: three nodes, application data in two tables.
    let source = [("a", 11), ("b", 12), ("c", 13)].map(|(s, octet)| {
        db_node(
            &network,
            &format!("bk-db-{s}"),
            octet,
            (ADMIN_PASSWORD, APP_PASSWORD),
        )
    });
    let [a, b, c] = &source;
    script(a, "db-create-cluster.sh", &["shop"]);
    for node in [b, c] {
        script(a, "db-add-instance.sh", &[&node.dns_name]);
    }
    wait_online(a, 3);
    let primary = a;
    assert_eq!(
        primary.sql("SELECT MEMBER_ROLE FROM performance_schema.replication_group_members WHERE MEMBER_ID = @@server_uuid").unwrap(),
        "PRIMARY"
    );
    let mut rows = String::from("INSERT INTO items VALUES ");
    for i in 1..=200 {
        rows.push_str(&format!(
            "{}({i}, REPEAT('x', {i}))",
            if i > 1 { "," } else { "" }
        ));
    }
    app_sql(
        primary,
        APP_PASSWORD,
        // `bulk` makes the first archived binary log far larger than a pipe's buffer (3 MB of
        // row events): reading its first event's time must not cut the pipe under pipefail.
        &format!("CREATE TABLE items (id INT PRIMARY KEY, note TEXT); {rows}; CREATE TABLE doomed (id INT PRIMARY KEY); INSERT INTO doomed VALUES (1),(2); \
                  CREATE TABLE bulk (id INT PRIMARY KEY, filler TEXT); \
                  INSERT INTO bulk WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 300) SELECT n, REPEAT('y', 10000) FROM seq"),
    )
    .expect("writes");
    wait_caught_up(&[a, b, c]);
    let at_backup = fingerprint(c);
    let gtid_at_backup = primary
        .sql("SELECT REPLACE(@@gtid_executed, '\\n', '')")
        .unwrap();

    // (a) The primary is refused while secondaries are ONLINE; a secondary backs up.
    let refused_id = "20261201T060000Z-00000001";
    let (code, _, stderr) = run(
        primary,
        "db-backup.sh",
        &[BUCKET, SOURCE_CLUSTER, refused_id],
    );
    assert_eq!(code, 3, "the primary must be refused: {stderr}");
    assert!(stderr.contains("PRIMARY"), "{stderr}");
    assert_eq!(
        s3.keys(&format!("clusters/{SOURCE_CLUSTER}/backups/{refused_id}")),
        Vec::<String>::new()
    );

    let backup_id = "20261201T061500Z-0a1b2c3d";
    let out = script(c, "db-backup.sh", &[BUCKET, SOURCE_CLUSTER, backup_id]);
    let manifest = last_json(&out);
    assert_eq!(manifest["formatVersion"], 1);
    assert_eq!(manifest["backupId"], backup_id);
    assert_eq!(manifest["clusterId"], SOURCE_CLUSTER);
    assert_eq!(manifest["method"], "clone-local");
    assert_eq!(manifest["sourceRole"], "SECONDARY");
    assert_eq!(manifest["sourceHost"], c.dns_name.as_str());
    assert_eq!(manifest["mysqlVersion"], "9.7.4");
    assert_eq!(
        manifest["gtidExecuted"],
        gtid_at_backup.as_str(),
        "{manifest}"
    );
    let archive_key = backup_key(backup_id, "data.tar.gz");
    assert_eq!(manifest["archive"]["key"], archive_key.as_str());
    assert_eq!(
        s3.size(&archive_key),
        manifest["archive"]["bytes"].as_i64(),
        "the archive in S3 is the one the manifest describes"
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&s3.get(&backup_key(backup_id, "manifest.json"))).expect("manifest");
    assert_eq!(stored, manifest);
    // The scratch copy is gone, and nothing secret went into the manifest or the output.
    assert!(
        !c.root()
            .join("var/lib/mysql-backup")
            .join(backup_id)
            .exists()
    );
    assert!(!out.contains(ADMIN_PASSWORD) && !out.contains(APP_PASSWORD));

    // (b) More writes and a dropped table after the backup; the primary ships its binlogs.
    app_sql(
        primary,
        APP_PASSWORD,
        "INSERT INTO items VALUES (1001, 'after the backup'); DROP TABLE doomed",
    )
    .expect("writes");
    let secondary_archive = last_json(&script(
        b,
        "db-binlog-archive.sh",
        &[BUCKET, SOURCE_CLUSTER],
    ));
    assert_eq!(secondary_archive["skipped"], true, "{secondary_archive}");
    let shipped = last_json(&script(
        primary,
        "db-binlog-archive.sh",
        &[BUCKET, SOURCE_CLUSTER],
    ));
    assert_eq!(shipped["role"], "PRIMARY");
    assert!(
        !shipped["shipped"].as_array().expect("shipped").is_empty(),
        "{shipped}"
    );
    let uuid = primary.sql("SELECT @@server_uuid").unwrap();
    for file in shipped["shipped"].as_array().unwrap() {
        let key = format!(
            "clusters/{SOURCE_CLUSTER}/binlogs/{uuid}/{}",
            file.as_str().unwrap()
        );
        assert!(s3.size(&key).is_some(), "{key} not in S3");
    }
    let again = last_json(&script(
        primary,
        "db-binlog-archive.sh",
        &[BUCKET, SOURCE_CLUSTER],
    ));
    assert_eq!(
        again["shipped"],
        serde_json::json!([]),
        "nothing new, nothing shipped: {again}"
    );

    // A fresh node of another cluster (its own secrets) restores the backup.
    let new_passwords = (NEW_ADMIN_PASSWORD, NEW_APP_PASSWORD);
    let d = db_node(&network, "bk-db-d", 14, new_passwords);
    let uuid_d = d.sql("SELECT @@server_uuid").unwrap();
    let restored = last_json(&script(
        &d,
        "db-restore.sh",
        &[BUCKET, SOURCE_CLUSTER, backup_id],
    ));
    assert_eq!(restored["backupId"], backup_id);
    assert_eq!(restored["gtidExecuted"], gtid_at_backup.as_str());
    assert_eq!(restored["appliedUntil"], serde_json::Value::Null);
    assert_eq!(
        fingerprint(&d),
        at_backup,
        "the restored data is the source's at the backup"
    );
    assert_eq!(
        d.sql("SELECT @@server_uuid").unwrap(),
        uuid_d,
        "the node keeps its identity"
    );
    assert_eq!(
        d.sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'mysql_innodb_cluster_metadata'").unwrap(),
        "0"
    );
    assert_eq!(
        d.sql("SELECT COUNT(*) FROM mysql.user WHERE user LIKE 'mysql\\_innodb\\_cluster\\_%'")
            .unwrap(),
        "0"
    );
    assert_eq!(
        app_sql(&d, APP_PASSWORD, "SELECT 1"),
        None,
        "the source's app password still works"
    );
    assert_eq!(
        app_sql(&d, NEW_APP_PASSWORD, "SELECT COUNT(*) FROM items").as_deref(),
        Some("200")
    );
    // Again with the same backup: nothing changes.
    let (code, out, err) = run(&d, "db-restore.sh", &[BUCKET, SOURCE_CLUSTER, backup_id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already restored"), "{out}");
    assert_eq!(last_json(&out), restored);

    // The restored node seeds a new cluster; a fresh node joins it by clone.
    script(&d, "db-create-cluster.sh", &["shop-restored"]);
    let e = db_node(&network, "bk-db-e", 15, new_passwords);
    let out = script(&d, "db-add-instance.sh", &[&e.dns_name]);
    assert!(out.contains("added to cluster"), "{out}");
    wait_online(&d, 2);
    wait_caught_up(&[&d, &e]);
    assert_eq!(
        e.sql("SELECT COUNT(*) FROM wordpress.items").unwrap(),
        "200",
        "the joiner has the restored data"
    );
    // A restore onto a member of a cluster is refused.
    let (code, _, err) = run(&e, "db-restore.sh", &[BUCKET, SOURCE_CLUSTER, backup_id]);
    assert_eq!(code, 3, "{err}");

    // (c) A corrupt archive is refused before anything stops; then a point-in-time restore.
    let f = db_node(&network, "bk-db-f", 16, new_passwords);
    // The node's local time zone is not UTC: STOP_AT (UTC) must not be read in it.
    let zone = f
        .exec(
            &[],
            &[
                "ln",
                "-sf",
                "/usr/share/zoneinfo/Asia/Tokyo",
                "/etc/localtime",
            ],
            None,
        )
        .expect("real host");
    assert!(zone.status.success(), "{}", text(&zone.stderr));
    let corrupt_id = "20261201T062000Z-0badbad0";
    let mut corrupt = manifest.clone();
    corrupt["backupId"] = corrupt_id.into();
    corrupt["archive"]["sha256"] = "0".repeat(64).into();
    s3.put(
        &backup_key(corrupt_id, "manifest.json"),
        corrupt.to_string().into_bytes(),
    );
    let (code, _, err) = run(&f, "db-restore.sh", &[BUCKET, SOURCE_CLUSTER, corrupt_id]);
    assert_ne!(code, 0);
    assert!(err.contains("SHA-256"), "{err}");
    assert_eq!(
        f.sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'wordpress'")
            .unwrap(),
        "0"
    );

    app_sql(
        primary,
        APP_PASSWORD,
        "INSERT INTO items VALUES (2001, 'before the point')",
    )
    .expect("write");
    let first = now_seconds();
    wait_until("the next second", Duration::from_secs(3), || {
        (now_seconds() > first).then_some(())
    });
    let stop_at = utc(first + 1);
    wait_until("the point in time", Duration::from_secs(3), || {
        (now_seconds() > first + 1).then_some(())
    });
    app_sql(
        primary,
        APP_PASSWORD,
        "INSERT INTO items VALUES (2002, 'after the point')",
    )
    .expect("write");
    script(primary, "db-binlog-archive.sh", &[BUCKET, SOURCE_CLUSTER]);
    let pitr = last_json(&script(
        &f,
        "db-restore.sh",
        &[BUCKET, SOURCE_CLUSTER, backup_id, &stop_at],
    ));
    assert_eq!(pitr["appliedUntil"], stop_at.as_str());
    assert_eq!(
        f.sql("SELECT GROUP_CONCAT(id ORDER BY id) FROM wordpress.items WHERE id > 200")
            .unwrap(),
        "1001,2001",
        "writes before {stop_at} are restored, the one after is not"
    );
    assert_eq!(
        f.sql("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'wordpress' AND TABLE_NAME = 'doomed'").unwrap(),
        "0",
        "the table dropped before {stop_at} is dropped"
    );

    // (d) A backup whose node is lost midway leaves no manifest.
    let killed_id = "20261201T063000Z-dead0001";
    let scratch = c.root().join("var/lib/mysql-backup").join(killed_id);
    let mut child = c
        .spawn(&[
            "env",
            &format!("ADMIN_SECRET_ID={ADMIN_SECRET}"),
            &format!("APP_SECRET_ID={APP_SECRET}"),
            "bash",
            "/var/lib/ha-scripts/db-backup.sh",
            BUCKET,
            SOURCE_CLUSTER,
            killed_id,
        ])
        .expect("start backup");
    wait_until(
        "the backup's copy to start",
        Duration::from_secs(30),
        || scratch.exists().then_some(()),
    );
    // Killed while the archive is being streamed (gzip runs only in that pipeline).
    let gzip_running = || {
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &format!("ha-{}", c.name)])
            .output()
            .expect("ip netns pids");
        text(&pids.stdout).lines().any(|pid| {
            std::fs::read_to_string(format!("/proc/{}/comm", pid.trim()))
                .is_ok_and(|comm| comm.trim() == "gzip")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gzip_running() {
        assert!(
            Instant::now() < deadline,
            "the backup never streamed its archive"
        );
        assert!(
            child.try_wait().expect("child").is_none(),
            "the backup ended before streaming was seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().expect("child").is_none(),
        "the backup ended before the kill"
    );
    c.kill().expect("kill");
    let _ = child.wait();
    assert_eq!(
        s3.size(&backup_key(killed_id, "manifest.json")),
        None,
        "a killed backup left a manifest"
    );
    assert_eq!(
        s3.size(&backup_key(killed_id, "data.tar.gz")),
        None,
        "a killed upload left an object"
    );
}
