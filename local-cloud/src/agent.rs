//! A stand-in for the SSM agent of the local cloud's instances.
//!
//! fakecloud accepts `SendCommand` but runs nothing (it moves every invocation to `Success`
//! with empty output after two seconds) and publishes no status events. This agent does
//! what the real agent and SSM do, as closely as the local cloud allows:
//! - it polls `ListCommands` for the stack's documents and, per target instance, runs the
//!   document's command (rendered from `scripts/ssm/` exactly as `template.yaml` carries it,
//!   parameters interpolated after their `allowedPattern` check) with `bash`, the recording
//!   fakes of `tests/fakes/` first on the PATH, and a state directory per instance;
//! - it reads the admin password from the local Secrets Manager, as the instance role
//!   would, and gives it to the fakes as the password the "server" accepts;
//! - it writes stdout and stderr to the command's S3 output location, under the key layout
//!   of the real agent;
//! - it marks a failed invocation `Failed` with its stderr (fakecloud's
//!   `/_fakecloud/ssm/commands/{id}/fail`), and publishes the "EC2 Command Invocation
//!   Status-change Notification" events (`InProgress`, then the final status) on the
//!   default bus, shaped as AWS publishes them.
//!
//! Faults can be injected per document and cluster (see [`Fault`]) to test failure paths.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{LocalCloud, project_root};

/// A deliberate failure: the next `times` invocations of `document` (its name without the
/// stack prefix, e.g. `DbCreateCluster`) for `cluster_id` (any cluster when `None`) fail
/// with `stderr` instead of running.
#[derive(Debug, Clone)]
pub struct Fault {
    pub document: String,
    pub cluster_id: Option<String>,
    pub times: u32,
    pub stderr: String,
}

/// What the agent ran: one line per invocation, in the order it ran them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub command_id: String,
    /// Without the stack prefix.
    pub document: String,
    pub instance_id: String,
    pub cluster_id: String,
    pub slot: String,
    pub exit_code: i32,
    pub injected: bool,
    /// The parameter values, as sent (names only of secrets: there are none).
    pub parameters: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Vec<Fault>,
    ran: Vec<Ran>,
    errors: Vec<String>,
    reported: Vec<Reported>,
}

/// A final status event the agent published: when, for which command and instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub command_id: String,
    pub instance_id: String,
    pub status: String,
    /// Just before `PutEvents` was sent: where an SSM reaction time starts.
    pub at: std::time::SystemTime,
}

/// The running agent; stops when dropped.
#[derive(Debug)]
pub struct SsmAgent {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    state_dir: tempfile::TempDir,
}

struct Context {
    ssm: aws_sdk_ssm::Client,
    s3: aws_sdk_s3::Client,
    ec2: aws_sdk_ec2::Client,
    secrets: aws_sdk_secretsmanager::Client,
    events: aws_sdk_eventbridge::Client,
    http: reqwest::Client,
    endpoint: String,
    prefix: String,
    state_dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

impl SsmAgent {
    /// Start serving the commands of `stack`'s documents.
    pub async fn start(cloud: &LocalCloud, stack: &str) -> std::io::Result<Self> {
        let sdk = cloud.sdk_config().await;
        let s3 = orchestrator::aws::s3_client(&sdk);
        let state_dir = tempfile::Builder::new().prefix("ssm-agent-").tempdir()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let context = Context {
            ssm: aws_sdk_ssm::Client::new(&sdk),
            s3,
            ec2: aws_sdk_ec2::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            http: reqwest::Client::new(),
            endpoint: cloud.endpoint(),
            prefix: format!("{stack}-"),
            state_dir: state_dir.path().to_path_buf(),
            shared: shared.clone(),
        };
        let task = tokio::spawn(serve(context));
        Ok(Self {
            shared,
            task,
            state_dir,
        })
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Every invocation run so far, in order.
    pub fn ran(&self) -> Vec<Ran> {
        self.lock().ran.clone()
    }

    /// Every final status event published so far, in order.
    pub fn reported(&self) -> Vec<Reported> {
        self.lock().reported.clone()
    }

    /// Problems of the agent itself (not of the scripts), for a test to assert empty.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// Where the instances' state lives (`<cluster>/<host>/...`, `<cluster>/calls.log`).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state_dir.path()
    }

    /// What Group Replication does when a member's instance dies (the local cloud's EC2
    /// runs nothing, so the harness plays it): the others see the member UNREACHABLE and,
    /// when it was the primary, elect the first ONLINE secondary (by host name) instead.
    pub fn lose_member(&self, cluster_id: &str, host: &str) -> std::io::Result<()> {
        let cluster = self.state_dir.path().join(cluster_id);
        let lost = cluster.join(host);
        let attr = |dir: &std::path::Path, name: &str| {
            std::fs::read_to_string(dir.join(name)).unwrap_or_default()
        };
        let was_primary = attr(&lost, "role") == "PRIMARY";
        let group = attr(&lost, "group");
        std::fs::write(lost.join("state"), "UNREACHABLE")?;
        if was_primary {
            std::fs::write(lost.join("role"), "SECONDARY")?;
            let mut survivors: Vec<std::path::PathBuf> = std::fs::read_dir(&cluster)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|dir| dir.is_dir() && *dir != lost)
                .filter(|dir| attr(dir, "group") == group && attr(dir, "state") == "ONLINE")
                .collect();
            survivors.sort();
            if let Some(elected) = survivors.first() {
                std::fs::write(elected.join("role"), "PRIMARY")?;
            }
        }
        Ok(())
    }

    /// A member whose instance keeps running leaves its group (mysqld restarted without
    /// Group Replication starting, or expelled): it reports OFFLINE, keeps the group's name,
    /// and the others stop listing it. Only a rejoin brings it back.
    pub fn take_member_offline(&self, cluster_id: &str, host: &str) -> std::io::Result<()> {
        let node = self.state_dir.path().join(cluster_id).join(host);
        std::fs::write(node.join("state"), "OFFLINE")?;
        std::fs::write(node.join("role"), "")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SsmAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(context: Context) {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    loop {
        match pending(&context, &mut seen).await {
            Ok(work) => {
                for (command, instance_id) in work {
                    if let Err(e) = run_invocation(&context, &command, &instance_id).await {
                        context.note_error(format!(
                            "{} on {instance_id}: {e}",
                            command.command_id().unwrap_or_default()
                        ));
                    }
                }
            }
            Err(e) => context.note_error(format!("ListCommands: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Context {
    fn note_error(&self, message: String) {
        eprintln!("[ssm-agent] {message}");
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.errors.push(message);
    }
}

/// New (command, instance) pairs of the stack's documents, oldest command first.
async fn pending(
    context: &Context,
    seen: &mut HashSet<(String, String)>,
) -> Result<Vec<(aws_sdk_ssm::types::Command, String)>, String> {
    let mut commands = Vec::new();
    let mut pages = context.ssm.list_commands().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("{e:?}"))?;
        commands.extend(page.commands().iter().cloned());
    }
    commands.sort_by_key(|c| c.requested_date_time().map(|t| t.as_nanos()));
    let mut work = Vec::new();
    for command in commands {
        let ours = command
            .document_name()
            .is_some_and(|n| n.starts_with(&context.prefix));
        if !ours {
            continue;
        }
        for instance in command.instance_ids() {
            let key = (
                command.command_id().unwrap_or_default().to_string(),
                instance.clone(),
            );
            if seen.insert(key) {
                work.push((command.clone(), instance.clone()));
            }
        }
    }
    Ok(work)
}

struct Instance {
    account: String,
    host: String,
    address: String,
    cluster_id: String,
    slot: String,
}

async fn describe(context: &Context, instance_id: &str) -> Result<Instance, String> {
    let output = context
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| format!("DescribeInstances: {e:?}"))?;
    let reservation = output.reservations().first().ok_or("no such instance")?;
    let instance = reservation.instances().first().ok_or("no such instance")?;
    let tag = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    Ok(Instance {
        account: reservation.owner_id().unwrap_or("000000000000").to_string(),
        // The resource-name host name the orchestrator records (the stack's subnets use
        // resource names; fakecloud reports IP-based ones).
        host: orchestrator::fleet::resource_host_name(
            instance_id,
            instance.private_dns_name().unwrap_or_default(),
        ),
        address: instance
            .private_ip_address()
            .unwrap_or("10.0.0.10")
            .to_string(),
        cluster_id: tag("ha-orchestrator:cluster"),
        slot: tag("ha-orchestrator:slot"),
    })
}

async fn run_invocation(
    context: &Context,
    command: &aws_sdk_ssm::types::Command,
    instance_id: &str,
) -> Result<(), String> {
    let command_id = command.command_id().unwrap_or_default();
    let full_name = command.document_name().unwrap_or_default();
    let document = full_name.trim_start_matches(&context.prefix).to_string();
    let parameters: Vec<(String, String)> = command
        .parameters()
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), v.first().cloned().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let instance = describe(context, instance_id).await?;
    publish(context, command, &instance, instance_id, "InProgress").await?;

    let fault = {
        let mut shared = context.shared.lock().unwrap_or_else(|e| e.into_inner());
        let fault = shared.faults.iter_mut().find(|f| {
            f.times > 0
                && f.document == document
                && f.cluster_id
                    .as_ref()
                    .is_none_or(|c| *c == instance.cluster_id)
        });
        fault.map(|f| {
            f.times -= 1;
            f.stderr.clone()
        })
    };
    let injected = fault.is_some();
    let (code, stdout, stderr) = match fault {
        Some(stderr) => (1, String::new(), stderr),
        None => execute(context, &document, &parameters, &instance).await?,
    };

    let bucket = command.output_s3_bucket_name().unwrap_or_default();
    if !bucket.is_empty() {
        let prefix = command.output_s3_key_prefix().unwrap_or_default();
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            // Where the real agent writes it, and where the orchestrator reads it.
            let key = orchestrator::commands::output_key(prefix, command_id, instance_id, stream);
            context
                .s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(text.clone().into_bytes().into())
                .send()
                .await
                .map_err(|e| format!("PutObject {key}: {e:?}"))?;
        }
    }
    let status = if code == 0 {
        // fakecloud moves invocations to Success by itself; publish once it has.
        wait_for_success(context, command_id, instance_id).await?;
        "Success"
    } else {
        let excerpt: String = {
            let chars: Vec<char> = stderr.chars().collect();
            chars[chars.len().saturating_sub(2400)..].iter().collect()
        };
        let url = format!(
            "{}/_fakecloud/ssm/commands/{command_id}/fail",
            context.endpoint
        );
        context
            .http
            .post(&url)
            .json(&serde_json::json!({
                "instanceId": instance_id,
                "statusDetails": "Failed",
                "standardErrorContent": excerpt,
            }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("POST {url}: {e}"))?;
        "Failed"
    };
    eprintln!(
        "[ssm-agent] {document} {command_id} on {instance_id} ({} {}): exit {code}{}",
        instance.cluster_id,
        instance.slot,
        if injected { " (injected)" } else { "" }
    );
    {
        let mut shared = context.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.ran.push(Ran {
            command_id: command_id.to_string(),
            document,
            instance_id: instance_id.to_string(),
            cluster_id: instance.cluster_id.clone(),
            slot: instance.slot.clone(),
            exit_code: code,
            injected,
            parameters,
        });
        shared.reported.push(Reported {
            command_id: command_id.to_string(),
            instance_id: instance_id.to_string(),
            status: status.to_string(),
            at: std::time::SystemTime::now(),
        });
    }
    publish(context, command, &instance, instance_id, status).await
}

/// Run the document's command as the agent would, against the fakes.
async fn execute(
    context: &Context,
    document: &str,
    parameters: &[(String, String)],
    instance: &Instance,
) -> Result<(i32, String, String), String> {
    let root = project_root();
    let text = match crate::documents::interpolated_command(&root, document, parameters) {
        Ok(text) => text,
        // SSM itself refuses such a command; the invocation fails with the reason.
        Err(reason) => return Ok((1, String::new(), reason)),
    };
    // The instance role reads the secrets; a missing secret fails the script as it would.
    let mut passwords = Vec::new();
    for (parameter, variable) in [
        ("adminSecretId", "FAKE_MYSQL_PASSWORD"),
        ("appSecretId", "FAKE_APP_PASSWORD"),
    ] {
        let Some((_, secret_id)) = parameters.iter().find(|(n, _)| n == parameter) else {
            continue;
        };
        match context
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
        {
            Ok(secret) => passwords.push((
                variable,
                secret.secret_string().unwrap_or_default().to_string(),
            )),
            Err(e) => {
                return Ok((
                    255,
                    String::new(),
                    format!(
                        "An error occurred when calling the GetSecretValue operation for {secret_id}: {e:?}"
                    ),
                ));
            }
        }
    }
    let cluster_dir = context.state_dir.join(&instance.cluster_id);
    let sysroot = cluster_dir.join(&instance.host).join("sysroot");
    std::fs::create_dir_all(&sysroot).map_err(|e| format!("{}: {e}", sysroot.display()))?;
    let path = format!(
        "{}:{}",
        root.join("tests/fakes").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&text)
        .current_dir(&cluster_dir)
        .env("PATH", path)
        .env("FAKE_MYSQL_ROOT", &cluster_dir)
        .envs(passwords)
        .env("FAKE_NODE_HOST", &instance.host)
        .env("FAKE_NODE_IP", &instance.address)
        .env("HA_SYSROOT", &sysroot)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .map_err(|_| "the command ran past 120 s".to_string())?
        .map_err(|e| format!("bash: {e}"))?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

async fn wait_for_success(
    context: &Context,
    command_id: &str,
    instance_id: &str,
) -> Result<(), String> {
    for _ in 0..100 {
        let invocation = context
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| format!("GetCommandInvocation: {e:?}"))?;
        if invocation.status().map(|s| s.as_str()) == Some("Success") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("fakecloud did not mark the invocation Success within 10 s".into())
}

/// The event SSM publishes on every invocation status change.
async fn publish(
    context: &Context,
    command: &aws_sdk_ssm::types::Command,
    instance: &Instance,
    instance_id: &str,
    status: &str,
) -> Result<(), String> {
    let requested = command
        .requested_date_time()
        .and_then(|t| {
            t.fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
                .ok()
        })
        .unwrap_or_default();
    let detail = serde_json::json!({
        "command-id": command.command_id().unwrap_or_default(),
        "document-name": command.document_name().unwrap_or_default(),
        "instance-id": instance_id,
        "requested-date-time": requested,
        "status": status,
    });
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("aws.ssm")
        .detail_type("EC2 Command Invocation Status-change Notification")
        .detail(detail.to_string())
        .resources(format!(
            "arn:aws:ec2:{}:{}:instance/{instance_id}",
            crate::REGION,
            instance.account
        ))
        .build();
    let output = context
        .events
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| format!("PutEvents: {e:?}"))?;
    if output.failed_entry_count() > 0 {
        return Err(format!(
            "PutEvents refused the event: {:?}",
            output.entries()
        ));
    }
    Ok(())
}
