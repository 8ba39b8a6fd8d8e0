//! The database tier end to end in the local cloud: the right SSM documents go to the right
//! instances in the right order, the status events resume the workflow, the nodes' reports
//! become roles in the API; a failing command is retried, then fails the cluster with its
//! stderr; and the cluster admin password appears nowhere but in Secrets Manager.
//!
//! The instances' SSM agent is the stand-in of `local_cloud::agent`: it runs the documents'
//! real scripts against the recording fakes of `mysqlsh`/`mysql` (tests/fakes/).

use std::time::Duration;

use e2e_tests::{
    NOT_TERMINATED, action_lines, cluster_instances, delete_and_wait, deployed_with_agent,
    send_json, wait_for_phase,
};
use local_cloud::agent::{Fault, Ran};
use reqwest::Method;

const CREATE: &str = r#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":3,"instanceType":"r6i.large"}}"#;

fn nodes<'a>(cluster: &'a serde_json::Value, tier: &str) -> Vec<&'a serde_json::Value> {
    cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["tier"] == tier)
        .collect()
}

fn parameter<'a>(ran: &'a Ran, name: &str) -> &'a str {
    ran.parameters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// Every string the local cloud holds or logged that a leaked password could hide in.
async fn everything_visible(
    cloud: &local_cloud::LocalCloud,
    stack: &local_cloud::Stack,
    agent: &local_cloud::agent::SsmAgent,
    api_answers: &[String],
    cluster_id: &str,
) -> Vec<(String, String)> {
    let sdk = cloud.sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let mut seen = Vec::new();
    let commands = ssm.list_commands().send().await.expect("ListCommands");
    for command in commands.commands() {
        seen.push((
            format!("SSM command {:?}", command.command_id()),
            format!("{:?}", command.parameters()),
        ));
    }
    let instances = ec2
        .describe_instances()
        .send()
        .await
        .expect("DescribeInstances");
    for instance in instances.reservations().iter().flat_map(|r| r.instances()) {
        let id = instance.instance_id().unwrap_or_default();
        let user_data = ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("DescribeInstanceAttribute");
        let encoded = user_data
            .user_data()
            .and_then(|u| u.value())
            .unwrap_or_default()
            .to_string();
        seen.push((format!("user data of {id} (base64)"), encoded.clone()));
        let decoded = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(encoded.as_bytes())?;
                child.wait_with_output()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        seen.push((format!("user data of {id}"), decoded));
    }
    let scan = dynamodb
        .scan()
        .table_name(&stack.outputs["TableName"])
        .send()
        .await
        .expect("Scan");
    seen.push(("DynamoDB items".into(), format!("{:?}", scan.items())));
    let bucket = stack
        .physical_id("CommandOutputBucket")
        .expect("CommandOutputBucket")
        .to_string();
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("commands/{cluster_id}/"))
        .send()
        .await
        .expect("ListObjectsV2");
    for key in objects.contents().iter().filter_map(|o| o.key()) {
        let body = s3
            .get_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("GetObject")
            .body
            .collect()
            .await
            .expect("object body");
        seen.push((
            format!("s3://{bucket}/{key}"),
            String::from_utf8_lossy(&body.into_bytes()).into_owned(),
        ));
    }
    for (i, answer) in api_answers.iter().enumerate() {
        seen.push((format!("API answer {i}"), answer.clone()));
    }
    seen.push(("function logs".into(), cloud.function_logs()));
    seen.push((
        "fakecloud log".into(),
        std::fs::read_to_string(cloud.log_path()).unwrap_or_default(),
    ));
    match agent.real_hosts() {
        // Real hosts: every file each instance wrote (configs, logs, binary logs, the
        // scripts run), except the stand-in's copy of Secrets Manager, where the instance
        // role reads the passwords from.
        Some(hosts) => {
            for (instance, host) in hosts.hosts() {
                for (path, content) in host.written_files(64 << 20) {
                    if path.starts_with("/var/lib/ha-standin/secrets/") {
                        continue;
                    }
                    seen.push((
                        format!("file written on {instance}: {path}"),
                        String::from_utf8_lossy(&content).into_owned(),
                    ));
                }
            }
        }
        None => seen.push((
            "command lines run on the instances".into(),
            std::fs::read_to_string(agent.state_dir().join(cluster_id).join("calls.log"))
                .unwrap_or_default(),
        )),
    }
    seen
}

#[tokio::test]
async fn the_database_documents_run_in_order_and_the_roles_reach_the_api() {
    let (cloud, stack, agent) = e2e_tests::deployed_with_real_hosts("replication").await;
    let api = stack.api_url.clone().expect("ApiId output");
    let id = e2e_tests::create_cluster(&api, CREATE, "e2e-replication-1").await;
    let cluster = wait_for_phase(&api, &id, &["READY", "FAILED"], Duration::from_secs(240)).await;
    assert_eq!(cluster["phase"], "READY", "{cluster:#}");
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    let db = nodes(&cluster, "db");
    let web = nodes(&cluster, "web");
    let instance =
        |node: &serde_json::Value| node["instanceId"].as_str().unwrap_or_default().to_string();
    let ran: Vec<Ran> = agent
        .ran()
        .into_iter()
        .filter(|r| r.cluster_id == id)
        .collect();
    let position = |document: &str| ran.iter().position(|r| r.document == document);
    let all =
        |document: &str| -> Vec<&Ran> { ran.iter().filter(|r| r.document == document).collect() };
    assert!(
        ran.iter().all(|r| r.exit_code == 0 && !r.injected),
        "{ran:#?}"
    );

    // Install on every database node, in one command, before anything else.
    let installs = all("DbInstall");
    assert_eq!(installs.len(), 3, "{ran:#?}");
    let mut installed: Vec<String> = installs.iter().map(|r| r.instance_id.clone()).collect();
    let mut db_ids: Vec<String> = db.iter().map(|n| instance(n)).collect();
    installed.sort();
    db_ids.sort();
    assert_eq!(installed, db_ids);
    assert!(
        installs
            .iter()
            .all(|r| r.command_id == installs[0].command_id)
    );
    assert_eq!(position("DbInstall"), Some(0));

    // Every node reported before the cluster was created; created on exactly one node.
    let creates = all("DbCreateCluster");
    assert_eq!(creates.len(), 1, "{ran:#?}");
    assert_eq!(parameter(creates[0], "clusterName"), "shop");
    assert!(position("DbReport") < position("DbCreateCluster"));
    let seed = creates[0].instance_id.clone();

    // The two others were added through the primary (the seed), each once, by host name.
    let adds = all("DbAddInstance");
    assert_eq!(adds.len(), 2, "{ran:#?}");
    assert!(adds.iter().all(|r| r.instance_id == seed), "{ran:#?}");
    let mut added_hosts: Vec<&str> = adds.iter().map(|r| parameter(r, "node")).collect();
    let mut other_hosts: Vec<&str> = db
        .iter()
        .filter(|n| instance(n) != seed)
        .map(|n| n["host"].as_str().expect("db nodes record their host"))
        .collect();
    added_hosts.sort_unstable();
    other_hosts.sort_unstable();
    assert_eq!(added_hosts, other_hosts);
    assert!(position("DbCreateCluster") < position("DbAddInstance"));

    // Routers on both web nodes, bootstrapped from the primary, after the group was whole.
    let routers = all("WebRouter");
    let mut routed: Vec<String> = routers.iter().map(|r| r.instance_id.clone()).collect();
    let mut web_ids: Vec<String> = web.iter().map(|n| instance(n)).collect();
    routed.sort();
    web_ids.sort();
    assert_eq!(routed, web_ids);
    let last_add = ran.iter().rposition(|r| r.document == "DbAddInstance");
    assert!(last_add < position("WebRouter"));
    let seed_host = db
        .iter()
        .find(|n| instance(n) == seed)
        .and_then(|n| n["host"].as_str())
        .expect("seed host");
    assert!(
        routers
            .iter()
            .all(|r| parameter(r, "primaryHost") == seed_host)
    );

    // The roles, from the nodes' own reports: one PRIMARY (the seed), two SECONDARY, one group.
    let roles: Vec<(&str, &str, &str)> = db
        .iter()
        .map(|n| {
            (
                n["role"].as_str().unwrap_or_default(),
                n["memberState"].as_str().unwrap_or_default(),
                n["groupName"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        roles.iter().filter(|r| r.0 == "PRIMARY").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| r.0 == "SECONDARY").count(),
        2,
        "{roles:?}"
    );
    assert!(
        roles
            .iter()
            .all(|r| r.1 == "ONLINE" && !r.2.is_empty() && r.2 == roles[0].2),
        "{roles:?}"
    );
    let primary = db
        .iter()
        .find(|n| n["role"] == "PRIMARY")
        .expect("a primary");
    assert_eq!(instance(primary), seed);

    // The status events resumed the workflow: the replication function answered from them.
    let answered = cloud
        .wait_for_log_line(
            &["command status change received", "Success"],
            Duration::from_secs(5),
        )
        .await;
    assert!(answered.is_ok(), "{answered:?}");

    // EventBridge delivers at least once: the create command's final event, delivered
    // again, answers nothing and changes nothing.
    let duplicate = serde_json::json!({
        "command-id": creates[0].command_id,
        "document-name": "replication-DbCreateCluster",
        "instance-id": seed,
        "requested-date-time": "2026-11-24T00:00:00Z",
        "status": "Success",
    });
    cloud
        .publish_event(
            "aws.ssm",
            "EC2 Command Invocation Status-change Notification",
            &duplicate,
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ignored = cloud
        .wait_for_log_line(
            &["already answered", &creates[0].command_id],
            Duration::from_secs(30),
        )
        .await;
    assert!(ignored.is_ok(), "{ignored:?}");
    let (_, after) = send_json(Method::GET, &format!("{api}/clusters/{id}"), None, &[]).await;
    assert_eq!(after["phase"], "READY");
    assert_eq!(
        after["version"], cluster["version"],
        "a duplicate event changed the cluster"
    );
    let actions = action_lines(&cluster);
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("SendCommand DbCreateCluster")),
        "{actions:#?}"
    );
    assert!(
        actions.iter().any(|a| a.starts_with("DatabaseVerified")),
        "{actions:#?}"
    );

    // The ALB's Lambda target shows the cluster named by the host: nodes and the primary.
    let mut request = e2e_tests::sample_event("alb-status-page.json");
    request["headers"]["host"] = "shop.example.com".into();
    let page = cloud
        .invoke(&stack, "AlbTargetFunction", &request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.payload["statusCode"], 200, "{:?}", page.payload);
    let html = page.payload["body"].as_str().unwrap_or_default();
    let primary_slot = db
        .iter()
        .find(|n| n["role"] == "PRIMARY")
        .and_then(|n| n["slot"].as_str())
        .unwrap_or_default();
    assert!(
        html.contains(&format!("Primary: <b>{primary_slot} ({seed})</b>")),
        "{html}"
    );
    request["path"] = "/".into();
    let maintenance = cloud
        .invoke(&stack, "AlbTargetFunction", &request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        maintenance.payload["statusCode"], 503,
        "{:?}",
        maintenance.payload
    );

    // The generated passwords are in Secrets Manager and nowhere else.
    let sdk = cloud.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let mut passwords = Vec::new();
    for kind in ["cluster-admin", "app"] {
        let password = secrets
            .get_secret_value()
            .secret_id(format!("ha-orchestrator/{id}/{kind}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the {kind} secret: {e:?}"))
            .secret_string()
            .expect("a string secret")
            .to_string();
        assert!(password.len() >= 32);
        passwords.push((kind, password));
    }
    let (_, listing) = send_json(Method::GET, &format!("{api}/clusters"), None, &[]).await;
    let visible = everything_visible(
        &cloud,
        &stack,
        &agent,
        &[cluster.to_string(), listing.to_string()],
        &id,
    )
    .await;
    assert!(
        visible.iter().any(|(what, _)| what.starts_with("s3://")),
        "no command output was read"
    );
    assert!(
        visible.iter().any(|(what, text)| {
            (what.starts_with("command lines") && text.contains("mysqlsh"))
                || (what.ends_with("/var/log/mysqld.log") && text.contains("ready for connections"))
        }),
        "what the instances ran or wrote was not captured"
    );
    for (what, text) in &visible {
        for (kind, password) in &passwords {
            assert!(
                !text.contains(password),
                "the {kind} password appears in {what}"
            );
        }
    }

    // DELETE removes the command output with everything else.
    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
    let left = everything_visible(&cloud, &stack, &agent, &[], &id).await;
    assert!(
        !left.iter().any(|(what, _)| what.starts_with("s3://")),
        "command output outlived the cluster"
    );
}

#[tokio::test]
async fn a_failing_command_is_retried_then_fails_the_cluster_with_its_stderr() {
    let (cloud, stack, agent) = deployed_with_agent("replication-failure").await;
    let api = stack.api_url.clone().expect("ApiId output");
    const STDERR: &str =
        "Dba.createCluster: Group Replication failed to start (injected by the test)";
    agent.inject(Fault {
        document: "DbCreateCluster".into(),
        cluster_id: None,
        times: 100,
        stderr: format!("starting...\n{STDERR}\n"),
    });
    let id =
        e2e_tests::create_cluster(&api, &CREATE.replace("shop", "doomed"), "e2e-replication-2")
            .await;
    let failed = wait_for_phase(&api, &id, &["READY", "FAILED"], Duration::from_secs(300)).await;
    assert_eq!(failed["phase"], "FAILED", "{failed:#}");
    let error = &failed["lastError"];
    assert_eq!(error["phase"], "db-create", "{failed:#}");
    let message = error["message"].as_str().unwrap_or_default();
    let creates: Vec<Ran> = agent
        .ran()
        .into_iter()
        .filter(|r| r.cluster_id == id && r.document == "DbCreateCluster")
        .collect();
    assert!(message.contains(STDERR), "{message}");
    assert!(
        message.contains(&creates[0].instance_id) && message.contains("db-0"),
        "{message}"
    );
    // Sent, then sent again twice by the state machine: three failed commands, then FAILED.
    assert_eq!(creates.len(), 3, "{creates:#?}");
    assert!(creates.iter().all(|r| r.injected && r.exit_code == 1));
    let mut commands: Vec<&str> = creates.iter().map(|r| r.command_id.as_str()).collect();
    commands.dedup();
    assert_eq!(commands.len(), 3, "each retry is a new command");
    assert!(agent.errors().is_empty(), "{:?}", agent.errors());

    // DELETE still cleans up everything.
    delete_and_wait(&api, &id, Duration::from_secs(180)).await;
    let ec2 = aws_sdk_ec2::Client::new(&cloud.sdk_config().await);
    let alive = cluster_instances(&ec2, &id, &NOT_TERMINATED).await;
    assert!(alive.is_empty(), "{alive:?}");
}
