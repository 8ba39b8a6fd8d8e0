//! Backups, binary log archive and restore end to end, on real MySQL 9.7 servers: the
//! stack's backups function (invoked with its scheduled event, as EventBridge would) backs a
//! READY cluster up from a SECONDARY into the stack's backup bucket and ships the
//! primary's binary logs; `POST /clusters` with `restore` creates a new cluster whose seed
//! starts from the backup with the archived binary logs applied up to a point in time, the
//! other nodes join it with clone, and it ends READY with exactly the data of that moment.
//!
//! The hosts are `local_cloud::hosts` (real mysqld, mysqlbinlog, clone plugin); the `aws s3`
//! calls of the scripts go to the local cloud's S3 through the `aws` stand-in.

use std::time::Duration;

use e2e_tests::{create_cluster, send_json, wait_for_phase};
use reqwest::Method;

const SOURCE: &str = r#"{"name":"shop","web":{"count":1,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"},"backup":{"schedule":"daily","retentionDays":7}}"#;

/// Run the backups function once, as its schedule does, then wait until the SSM agent
/// has finished every command of the backup documents sent so far. fakecloud moves every
/// invocation to `Success` two seconds after `SendCommand`, whatever runs (see
/// `local_cloud::agent`), so the next tick's `GetCommandInvocation` tells the truth only
/// once the agent has reported: on AWS it says `InProgress` until the script ends.
async fn tick(
    cloud: &local_cloud::LocalCloud,
    stack: &local_cloud::Stack,
    agent: &local_cloud::agent::SsmAgent,
) {
    let answer = cloud
        .invoke(
            stack,
            "BackupsFunction",
            &e2e_tests::sample_event("schedule-backups-tick.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.function_error, None, "{:?}", answer.payload);
    let ssm = aws_sdk_ssm::Client::new(&cloud.sdk_config().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let commands = ssm.list_commands().send().await.expect("ListCommands");
        let sent: Vec<(String, String)> = commands
            .commands()
            .iter()
            .filter(|c| {
                c.document_name()
                    .is_some_and(|d| d.ends_with("-DbBackup") || d.ends_with("-DbBinlogArchive"))
            })
            .flat_map(|c| {
                let id = c.command_id().unwrap_or_default().to_string();
                c.instance_ids()
                    .iter()
                    .map(move |i| (id.clone(), i.clone()))
            })
            .collect();
        let reported = agent.reported();
        let open: Vec<&(String, String)> = sent
            .iter()
            .filter(|(command, instance)| {
                !reported
                    .iter()
                    .any(|r| &r.command_id == command && &r.instance_id == instance)
            })
            .collect();
        if open.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not finish {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /clusters/{id}/backups`.
async fn backups(api: &str, id: &str) -> Vec<serde_json::Value> {
    let (status, body) = send_json(
        Method::GET,
        &format!("{api}/clusters/{id}/backups"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["backups"].as_array().expect("backups").clone()
}

/// Tick until the backup `backup_id` is in a final state; returns it.
async fn settled(
    cloud: &local_cloud::LocalCloud,
    stack: &local_cloud::Stack,
    agent: &local_cloud::agent::SsmAgent,
    api: &str,
    id: &str,
    backup_id: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        tick(cloud, stack, agent).await;
        let all = backups(api, id).await;
        let backup = all
            .iter()
            .find(|b| b["id"] == backup_id)
            .unwrap_or_else(|| panic!("{backup_id} not listed: {all:#?}"))
            .clone();
        if backup["state"] == "COMPLETED" || backup["state"] == "FAILED" {
            return backup;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backup_id} still {}: {backup:#}",
            backup["state"]
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// SQL on the cluster's primary, as root over its socket.
fn on_primary(
    agent: &local_cloud::agent::SsmAgent,
    cluster: &serde_json::Value,
    sql: &str,
) -> String {
    let primary = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["role"] == "PRIMARY")
        .unwrap_or_else(|| panic!("no primary: {cluster:#}"));
    let host = primary["host"].as_str().expect("host");
    agent
        .real_hosts()
        .expect("real hosts")
        .by_dns_name(host)
        .unwrap_or_else(|| panic!("no real host {host}"))
        .sql(sql)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Row counts and `CHECKSUM TABLE` of every table of the shop schema.
fn fingerprint(agent: &local_cloud::agent::SsmAgent, cluster: &serde_json::Value) -> String {
    let tables = on_primary(
        agent,
        cluster,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' ORDER BY table_name",
    );
    tables
        .lines()
        .map(|table| {
            let count = on_primary(
                agent,
                cluster,
                &format!("SELECT COUNT(*) FROM shop.`{table}`"),
            );
            let checksum = on_primary(agent, cluster, &format!("CHECKSUM TABLE shop.`{table}`"));
            format!("{table} {count} {checksum}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rfc3339(time: std::time::SystemTime) -> String {
    let epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    orchestrator::domain::backup::format_epoch(epoch as i64)
}

#[tokio::test]
async fn a_cluster_restored_to_a_point_in_time_has_exactly_the_data_of_that_moment() {
    let (cloud, stack, agent) =
        e2e_tests::deployed_with_real_hosts_and("backups", &[("BinlogArchiveSeconds", "60")]).await;
    let api = stack.api_url.clone().expect("ApiId output");
    let id = create_cluster(&api, SOURCE, "e2e-backups-1").await;
    let source = wait_for_phase(&api, &id, &["READY", "FAILED"], Duration::from_secs(300)).await;
    assert_eq!(source["phase"], "READY", "{source:#}");

    // Data the backup holds.
    on_primary(
        &agent,
        &source,
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)); \
         CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(40)); \
         INSERT INTO shop.orders VALUES (1,'lamp'),(2,'desk'); \
         INSERT INTO shop.customers VALUES (1,'ada'),(2,'grace')",
    );

    // An on-demand backup: 202, taken from a SECONDARY, completed with its manifest.
    let (status, requested) = send_json(
        Method::POST,
        &format!("{api}/clusters/{id}/backups"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 202, "{requested}");
    let backup_id = requested["id"].as_str().expect("backup id").to_string();
    let backup = settled(&cloud, &stack, &agent, &api, &id, &backup_id).await;
    assert_eq!(backup["state"], "COMPLETED", "{backup:#}");
    let ran_on = source["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["instanceId"] == backup["instanceId"])
        .unwrap_or_else(|| panic!("backup ran on no node of the cluster: {backup:#}"));
    assert_eq!(ran_on["role"], "SECONDARY", "{backup:#} ran on {ran_on:#}");
    assert!(
        backup["bytes"].as_u64().unwrap_or_default() > 0,
        "{backup:#}"
    );
    let at_backup = fingerprint(&agent, &source);

    // After the backup: a write that the point in time keeps, then one it must not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    on_primary(
        &agent,
        &source,
        "INSERT INTO shop.orders VALUES (3,'chair')",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let point_in_time = rfc3339(std::time::SystemTime::now() + Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    on_primary(
        &agent,
        &source,
        "INSERT INTO shop.orders VALUES (4,'shelf'); DROP TABLE shop.customers",
    );

    // The next archive (BinlogArchiveSeconds after the first) covers both writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        tick(&cloud, &stack, &agent).await;
        let (_, cluster) = send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
        if cluster["restorableUntil"].as_str().unwrap_or_default() > point_in_time.as_str() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not restorable to {point_in_time}: {cluster:#}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    // Bad restores are refused with what to change.
    let restore = |target: &str| {
        format!(
            r#"{{"name":"shop-restored","web":{{"count":1,"instanceType":"t3.small"}},"db":{{"count":3,"instanceType":"r6i.large"}},"restore":{{"fromCluster":"{id}",{target}}}}}"#
        )
    };
    for (target, expected) in [
        (r#""pointInTime":"2099-01-01T00:00:00Z""#.to_string(), 400),
        (r#""pointInTime":"2020-01-01T00:00:00Z""#.to_string(), 400),
        (r#""backupId":"20200101T000000Z-00000000""#.to_string(), 404),
    ] {
        let (status, body) = send_json(
            Method::POST,
            &format!("{api}/clusters"),
            Some(&restore(&target)),
            &[("idempotency-key", &format!("e2e-bad-{target}"))],
        )
        .await;
        assert_eq!(status, expected, "{target}: {body}");
    }

    // Restore to the point in time: the first write present, the second absent, the
    // dropped table back.
    let restored_id = create_cluster(
        &api,
        &restore(&format!(r#""pointInTime":"{point_in_time}""#)),
        "e2e-backups-restore",
    )
    .await;
    let restored = wait_for_phase(
        &api,
        &restored_id,
        &["READY", "FAILED"],
        Duration::from_secs(360),
    )
    .await;
    assert_eq!(restored["phase"], "READY", "{restored:#}");
    let orders = on_primary(&agent, &restored, "SELECT id FROM shop.orders ORDER BY id");
    assert_eq!(
        orders.lines().collect::<Vec<_>>(),
        ["1", "2", "3"],
        "{point_in_time}"
    );
    let customers = on_primary(&agent, &restored, "SELECT COUNT(*) FROM shop.customers");
    assert_eq!(customers, "2");
    // The restored group is whole: three ONLINE members, one PRIMARY.
    let members = restored["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == "db" && n["memberState"] == "ONLINE")
        .count();
    assert_eq!(members, 3, "{restored:#}");
    // The data at the backup, for the tables the point in time did not change.
    assert!(at_backup.contains("customers 2"), "{at_backup}");
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    // Deleting the source keeps its backups: still listed, still restorable from.
    e2e_tests::delete_and_wait(&api, &id, Duration::from_secs(180)).await;
    let kept = backups(&api, &id).await;
    assert!(
        kept.iter()
            .any(|b| b["id"] == backup_id.as_str() && b["state"] == "COMPLETED"),
        "{kept:#?}"
    );
}
