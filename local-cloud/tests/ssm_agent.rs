//! The SSM agent stand-in against fakecloud alone (no stack): one database instance, the
//! stack's DbInstall and DbReport documents sent to it as the orchestrator sends them, and
//! what the stand-in leaves behind checked against the real agent's behaviour (see
//! `local_cloud::agent_contract`): which output objects exist and under which keys, the
//! invocation's status and `StandardErrorContent`, the status events, and what the
//! orchestrator's own reader (`Commands::output`) gets from all that.

use std::time::Duration;

use local_cloud::agent::{Fault, SsmAgent};
use local_cloud::{LocalCloud, Tools};
use orchestrator::aws::commands::{CommandSettings, Commands, output_key, output_prefix};
use orchestrator::domain::commands::Document;

const STACK: &str = "agentstack";
const CLUSTER: &str = "c-agent";
const BUCKET: &str = "agent-command-output";
const SECRET: &str = "agent-admin-secret";

struct World {
    cloud: LocalCloud,
    agent: SsmAgent,
    ssm: aws_sdk_ssm::Client,
    s3: aws_sdk_s3::Client,
    commands: Commands,
    instance: String,
}

async fn world() -> World {
    let tools = Tools::locate().expect("tools (run `make setup` and `make build` first)");
    let cloud = LocalCloud::start(&tools).expect("start fakecloud");
    let sdk = cloud.sdk_config().await;
    let s3 = orchestrator::aws::sdk::s3_client(&sdk);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("CreateBucket");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(SECRET)
        .secret_string("not-a-real-password-1")
        .send()
        .await
        .expect("CreateSecret");
    let tag = |key: &str, value: &str| {
        aws_sdk_ec2::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
    };
    let launched = aws_sdk_ec2::Client::new(&sdk)
        .run_instances()
        .image_id("ami-0agent000000000")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(tag(orchestrator::aws::fleet::TAG_CLUSTER, CLUSTER))
                .tags(tag(orchestrator::aws::fleet::TAG_SLOT, "db-0"))
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    let instance = launched.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_string();
    let agent = SsmAgent::start(&cloud, STACK).await.expect("start agent");
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let commands = Commands::new(
        ssm.clone(),
        s3.clone(),
        CommandSettings {
            document_prefix: STACK.into(),
            output_bucket: BUCKET.into(),
        },
    );
    World {
        cloud,
        agent,
        ssm,
        s3,
        commands,
        instance,
    }
}

impl World {
    /// Send `document` as the orchestrator does and wait for the agent's final event.
    async fn run(&self, document: Document) -> (String, String) {
        let command = self
            .commands
            .send(
                CLUSTER,
                document,
                std::slice::from_ref(&self.instance),
                &[("adminSecretId", SECRET)],
            )
            .await
            .expect("SendCommand");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(reported) = self
                .agent
                .reported()
                .into_iter()
                .find(|r| r.command_id == command)
            {
                return (command, reported.status);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{document:?} never ended; agent errors: {:?}",
                self.agent.errors()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The object at `key`, or None when there is none.
    async fn object(&self, key: &str) -> Option<String> {
        match self.s3.get_object().bucket(BUCKET).key(key).send().await {
            Ok(object) => Some(
                String::from_utf8_lossy(&object.body.collect().await.expect("body").into_bytes())
                    .into_owned(),
            ),
            Err(e) => {
                let code = e.as_service_error().map(|s| s.is_no_such_key());
                assert_eq!(code, Some(true), "GetObject {key}: {e:?}");
                None
            }
        }
    }

    /// Every object of the command, by key.
    async fn keys(&self, command: &str) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{}/{command}/", output_prefix(CLUSTER)))
            .send()
            .await
            .expect("ListObjectsV2");
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    /// The details of the status events published for `command`, in order.
    async fn events(&self, command: &str) -> Vec<serde_json::Value> {
        let url = format!("{}/_fakecloud/events/history", self.cloud.endpoint());
        let history: serde_json::Value = reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("events history")
            .json()
            .await
            .expect("events history JSON");
        history["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                e["source"] == "aws.ssm"
                    && e["detailType"] == "EC2 Command Invocation Status-change Notification"
            })
            .filter_map(|e| serde_json::from_str(e["detail"].as_str()?).ok())
            .filter(|d: &serde_json::Value| d["command-id"] == command)
            .collect()
    }
}

#[tokio::test]
async fn the_agent_stand_in_reports_and_uploads_as_the_real_agent_does() {
    let world = world().await;
    let key = |command: &str, stream: &str| {
        output_key(&output_prefix(CLUSTER), command, &world.instance, stream)
    };

    // A report on a freshly installed node: JSON on stdout, nothing on stderr. The agent
    // uploads stdout only; stderr has no object, and the orchestrator reads it as empty.
    let (install, status) = world.run(Document::DbInstall).await;
    assert_eq!(status, "Success", "DbInstall: {:?}", world.agent.errors());
    let (report, status) = world.run(Document::DbReport).await;
    assert_eq!(status, "Success", "DbReport: {:?}", world.agent.errors());
    assert_eq!(world.keys(&report).await, vec![key(&report, "stdout")]);
    let stdout = world.object(&key(&report, "stdout")).await.expect("stdout");
    let view: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert!(view.get("memberState").is_some(), "{stdout}");
    assert_eq!(world.object(&key(&report, "stderr")).await, None);
    let (output, code) = world
        .commands
        .output(CLUSTER, &report, &world.instance)
        .await
        .expect("the orchestrator reads the report");
    assert_eq!(
        (output.stdout.as_str(), output.stderr.as_str(), code),
        (stdout.as_str(), "", 0)
    );
    let invocation = world
        .ssm
        .get_command_invocation()
        .command_id(&report)
        .instance_id(&world.instance)
        .send()
        .await
        .expect("GetCommandInvocation");
    assert_eq!(invocation.status().map(|s| s.as_str()), Some("Success"));
    // Every object the install left is one of its two streams, under the agent's layout.
    for object in world.keys(&install).await {
        assert!(
            object == key(&install, "stdout") || object == key(&install, "stderr"),
            "{object}"
        );
    }

    // A failing step: its stderr (with the agent's own line) is uploaded and is the
    // invocation's StandardErrorContent; the invocation is Failed.
    world.agent.inject(Fault {
        document: "DbReport".into(),
        cluster_id: Some(CLUSTER.into()),
        times: 1,
        stderr: "ERROR 2002: cannot connect (injected)\n".into(),
    });
    let (failed, status) = world.run(Document::DbReport).await;
    assert_eq!(status, "Failed");
    assert_eq!(world.keys(&failed).await, vec![key(&failed, "stderr")]);
    let expected = "ERROR 2002: cannot connect (injected)\nfailed to run commands: exit status 1";
    assert_eq!(
        world.object(&key(&failed, "stderr")).await.as_deref(),
        Some(expected)
    );
    let invocation = world
        .ssm
        .get_command_invocation()
        .command_id(&failed)
        .instance_id(&world.instance)
        .send()
        .await
        .expect("GetCommandInvocation");
    assert_eq!(invocation.status().map(|s| s.as_str()), Some("Failed"));
    assert_eq!(invocation.standard_error_content(), Some(expected));
    let (output, _) = world
        .commands
        .output(CLUSTER, &failed, &world.instance)
        .await
        .expect("the orchestrator reads the failure");
    assert_eq!(
        (output.stdout.as_str(), output.stderr.as_str()),
        ("", expected)
    );

    // The status events: InProgress, then the final status, in the documented shape.
    for (command, last) in [(&report, "Success"), (&failed, "Failed")] {
        let events = world.events(command).await;
        let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
        assert_eq!(statuses, ["InProgress", last], "{events:#?}");
        for event in &events {
            let mut fields: Vec<&str> = event
                .as_object()
                .expect("detail object")
                .keys()
                .map(String::as_str)
                .collect();
            fields.sort();
            assert_eq!(
                fields,
                [
                    "command-id",
                    "document-name",
                    "instance-id",
                    "requested-date-time",
                    "status"
                ]
            );
            assert_eq!(event["document-name"], format!("{STACK}-DbReport"));
            assert_eq!(event["instance-id"], world.instance.as_str());
        }
    }
    assert!(
        world.agent.errors().is_empty(),
        "{:?}",
        world.agent.errors()
    );
}
