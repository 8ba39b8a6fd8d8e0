//! A stand-in for the SSM agent of the local cloud's instances.
//!
//! fakecloud accepts `SendCommand` but runs nothing (it moves every invocation to `Success`
//! with empty output after two seconds) and publishes no status events. This agent does
//! what the real agent and SSM do, as closely as the local cloud allows; the rules it
//! follows, each with the agent source file it was read from, are in
//! [`crate::agent_contract`]:
//! - it polls `ListCommands` for the stack's documents and, per target instance, runs the
//!   document's one `aws:runShellScript` step (step name, plugin and `timeoutSeconds` read
//!   from `template.yaml`; the command rendered from `scripts/ssm/` exactly as the template
//!   carries it, parameters interpolated after their `allowedPattern` check) the way the
//!   plugin does: written to `_script.sh`, run by `sh -c` (bash in POSIX mode, as on Amazon
//!   Linux 2023) in its own process group, killed at the execution timeout;
//! - the instance is either a real host ([`SsmAgent::start_on_real_hosts`]; see
//!   [`crate::hosts`]: its own network namespace with the private address and resource DNS
//!   name EC2 gave it, a real mysqld, mysql client and mysqlrouter 9.7, and only dnf, rpm,
//!   systemctl, IMDS, aws and mysqlsh as stand-ins), created at its first command and
//!   killed when EC2 says it is stopped or terminated; or a folder (`sysroot`, its `/`)
//!   with the recording fakes of `tests/fakes/` first on the PATH and a state directory per
//!   cluster ([`SsmAgent::start`]). The secrets come from the local Secrets Manager, as the
//!   instance role would read them;
//! - it uploads stdout and stderr to the command's S3 output location under the real
//!   agent's key layout, and only the streams that are not empty;
//! - it reports the result to fakecloud (`Success`; `Failed` with the agent's
//!   `StandardErrorContent` through `/_fakecloud/ssm/commands/{id}/fail`; `TimedOut`) and
//!   publishes the "EC2 Command Invocation Status-change Notification" events
//!   (`InProgress`, then the final status) on the default bus, shaped as AWS publishes them.
//!
//! Faults can be injected per document and cluster (see [`Fault`]) to test failure paths.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent_contract::{self as contract, Ending, Finished, StepStatus};
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

/// The running agent; stops when dropped (and with it every real host it made).
#[derive(Debug)]
pub struct SsmAgent {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    state_dir: tempfile::TempDir,
    hosts: Option<Arc<RealHosts>>,
}

/// The real hosts of the instances the agent has run commands on, on one network with the
/// stack's VPC CIDR.
#[derive(Debug)]
pub struct RealHosts {
    /// Relays the hosts' `aws s3` to the local cloud's S3 (backups, binary logs) while the
    /// agent runs.
    _s3_relay: crate::hosts::Relay,
    network: crate::hosts::Network,
    next_address: Mutex<u32>,
    by_instance: Mutex<std::collections::HashMap<String, Arc<crate::hosts::Host>>>,
}

impl RealHosts {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<crate::hosts::Host>>> {
        self.by_instance.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host of `instance_id`, made now if it is its first command.
    fn host_of(
        &self,
        instance_id: &str,
        instance: &Instance,
    ) -> Result<Arc<crate::hosts::Host>, String> {
        if let Some(host) = self.lock().get(instance_id) {
            return Ok(host.clone());
        }
        // ha-host names are at most 40 characters and unique on the machine.
        let name = format!(
            "lc{}-{}",
            std::process::id(),
            instance_id.trim_start_matches("i-")
        );
        let name: String = name.chars().take(40).collect();
        // fakecloud gives every instance of a subnet the same private address, so the host
        // gets one of its own on the network (what its IMDS answers as local-ipv4); the
        // others reach it by its resource DNS name, as on AWS.
        let address = {
            let mut next = self.next_address.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            self.network.address(*next)
        };
        let host = self
            .network
            .host_at(&name, &address, &instance.host, instance_id)
            .map_err(|e| format!("host for {instance_id}: {e}"))?;
        let host = Arc::new(host);
        self.lock().insert(instance_id.to_string(), host.clone());
        Ok(host)
    }

    /// The host whose DNS name is `dns_name`.
    pub fn by_dns_name(&self, dns_name: &str) -> Option<Arc<crate::hosts::Host>> {
        self.lock()
            .values()
            .find(|h| h.dns_name == dns_name)
            .cloned()
    }

    /// The group as a real member sees it (`performance_schema.replication_group_members`:
    /// host, state, role, version; one line each), from the first host that is a member.
    pub fn group_members(&self) -> Option<String> {
        let hosts: Vec<Arc<crate::hosts::Host>> = self.lock().values().cloned().collect();
        hosts.iter().find_map(|host| {
            host.sql(
                "SELECT MEMBER_HOST, MEMBER_STATE, MEMBER_ROLE, MEMBER_VERSION \
                 FROM performance_schema.replication_group_members \
                 WHERE MEMBER_STATE <> 'OFFLINE' ORDER BY MEMBER_HOST",
            )
            .ok()
            .filter(|rows| !rows.trim().is_empty())
        })
    }

    /// Every real host, by instance id.
    pub fn hosts(&self) -> Vec<(String, Arc<crate::hosts::Host>)> {
        self.lock()
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect()
    }

    /// Instance ids with a host.
    fn instance_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The instance stopped or terminated: its processes end (and, terminated, the host
    /// goes with its disk).
    fn instance_gone(&self, instance_id: &str, terminated: bool) {
        let host = if terminated {
            self.lock().remove(instance_id)
        } else {
            self.lock().get(instance_id).cloned()
        };
        if let Some(host) = host {
            let _ = host.kill();
            eprintln!(
                "[ssm-agent] {instance_id} {}: host {} {}",
                if terminated { "terminated" } else { "stopped" },
                host.name,
                if terminated { "removed" } else { "killed" }
            );
        }
    }
}

struct Context {
    hosts: Option<Arc<RealHosts>>,
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
    /// Start serving the commands of `stack`'s documents on the recording fakes.
    pub async fn start(cloud: &LocalCloud, stack: &str) -> std::io::Result<Self> {
        Self::start_with(cloud, stack, None).await
    }

    /// Start serving the commands of `stack`'s documents on real hosts: every instance a
    /// command targets becomes one, on a network over `vpc` (the block the stack was
    /// deployed with as its `VpcCidr`).
    pub async fn start_on_real_hosts(
        cloud: &LocalCloud,
        stack: &str,
        vpc: crate::hosts::AddressSpace,
    ) -> std::io::Result<Self> {
        let network = crate::hosts::Network::in_space(&format!("lc{}", std::process::id()), vpc)
            .map_err(std::io::Error::other)?;
        // The database scripts back up to and restore from the stack's bucket with
        // `aws s3 cp` on the host (see `Network::serve_s3` for what identity they use).
        let s3_relay = network
            .serve_s3(
                &cloud.endpoint(),
                crate::REGION,
                crate::ACCESS_KEY,
                crate::SECRET_KEY,
            )
            .map_err(std::io::Error::other)?;
        let hosts = Arc::new(RealHosts {
            _s3_relay: s3_relay,
            network,
            next_address: Mutex::new(0),
            by_instance: Mutex::new(std::collections::HashMap::new()),
        });
        Self::start_with(cloud, stack, Some(hosts)).await
    }

    async fn start_with(
        cloud: &LocalCloud,
        stack: &str,
        hosts: Option<Arc<RealHosts>>,
    ) -> std::io::Result<Self> {
        let sdk = cloud.sdk_config().await;
        let s3 = orchestrator::aws::sdk::s3_client(&sdk);
        let state_dir = tempfile::Builder::new().prefix("ssm-agent-").tempdir()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let context = Context {
            hosts: hosts.clone(),
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
            hosts,
        })
    }

    /// The real hosts, when the agent runs on them.
    pub fn real_hosts(&self) -> Option<&RealHosts> {
        self.hosts.as_deref()
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
        if let Some(hosts) = &self.hosts {
            // A real host: its mysqld dies with it and the real group does the rest.
            let real = hosts
                .by_dns_name(host)
                .ok_or_else(|| std::io::Error::other(format!("no real host {host}")))?;
            return real.kill().map_err(std::io::Error::other);
        }
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
        if let Some(hosts) = &self.hosts {
            let real = hosts
                .by_dns_name(host)
                .ok_or_else(|| std::io::Error::other(format!("no real host {host}")))?;
            return real
                .sql("STOP GROUP_REPLICATION")
                .map(drop)
                .map_err(std::io::Error::other);
        }
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
    let mut rounds: u64 = 0;
    loop {
        rounds += 1;
        if rounds.is_multiple_of(8) {
            watch_instances(&context).await;
        }
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

/// What EC2 does to an instance's processes: a stopped or terminated instance's host is
/// killed (terminated: removed). Checked every two seconds, like an instance dying soon
/// after the API call.
async fn watch_instances(context: &Context) {
    let Some(hosts) = &context.hosts else { return };
    let ids = hosts.instance_ids();
    if ids.is_empty() {
        return;
    }
    let answer = context
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await;
    let Ok(answer) = answer else { return };
    let mut seen = HashSet::new();
    for instance in answer.reservations().iter().flat_map(|r| r.instances()) {
        let id = instance.instance_id().unwrap_or_default().to_string();
        let state = instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        seen.insert(id.clone());
        match state.as_str() {
            "terminated" | "shutting-down" => {
                let hosts = hosts.clone();
                let _ = tokio::task::spawn_blocking(move || hosts.instance_gone(&id, true)).await;
            }
            "stopping" | "stopped" => {
                let hosts = hosts.clone();
                let _ = tokio::task::spawn_blocking(move || hosts.instance_gone(&id, false)).await;
            }
            _ => {}
        }
    }
    // An instance EC2 no longer knows is gone for good.
    for id in ids.into_iter().filter(|id| !seen.contains(id)) {
        let hosts = hosts.clone();
        let _ = tokio::task::spawn_blocking(move || hosts.instance_gone(&id, true)).await;
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

#[derive(Debug, Clone)]
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
        host: orchestrator::aws::fleet::resource_host_name(
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
    // The step as the deployed document declares it: its name and plugin make the S3 key,
    // its timeoutSeconds the execution timeout.
    let step = document_step(&document)?;
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
    let finished = match fault {
        // To everyone else, an injected fault is a script that wrote `stderr` and exited 1.
        Some(stderr) => Finished::new(Ending::Exited(1), String::new(), stderr),
        None => {
            let invocation = Invocation {
                command_id,
                instance_id,
                document: &document,
                step: &step,
                parameters: &parameters,
                instance: &instance,
            };
            execute(context, &invocation).await?
        }
    };

    // The streams are uploaded when the step's writers close, before the agent reports the
    // step's result (framework/runpluginutil/runpluginutil.go, executePlugin: `defer
    // output.Close()`, which waits for every iomodule's Read, S3 upload included), so the
    // objects are there when the status changes. Only when the command names a bucket
    // (iomodule/fileS3.go: `file.OutputS3BucketName != ""`), and only non-empty streams.
    let bucket = command.output_s3_bucket_name().unwrap_or_default();
    if !bucket.is_empty() {
        let prefix = command.output_s3_key_prefix().unwrap_or_default();
        for (stream, text) in contract::uploaded_streams(&finished.stdout, &finished.stderr) {
            let key = contract::output_key(
                prefix,
                command_id,
                instance_id,
                &step.action,
                &step.name,
                stream,
            );
            context
                .s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(text.to_string().into_bytes().into())
                .send()
                .await
                .map_err(|e| format!("PutObject {key}: {e:?}"))?;
        }
    }
    let status = report(context, command, instance_id, &instance, &finished).await?;
    eprintln!(
        "[ssm-agent] {document} {command_id} on {instance_id} ({} {}): exit {} {status}{}",
        instance.cluster_id,
        instance.slot,
        finished.exit_code,
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
            exit_code: finished.exit_code,
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

/// The one step of `document` as `template.yaml` (what `sam deploy` deploys) declares it.
fn document_step(document: &str) -> Result<contract::Step, String> {
    let path = project_root().join("template.yaml");
    let template =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let step = contract::Step::from_template(&template, document)?;
    if step.action != contract::RUN_SHELL_SCRIPT {
        return Err(format!(
            "{document}: the stand-in runs {} steps only, not {}",
            contract::RUN_SHELL_SCRIPT,
            step.action
        ));
    }
    Ok(step)
}

/// Tell fakecloud the invocation's result, the way the agent's reply sets it in SSM, and
/// return the status the event carries. fakecloud's admin endpoints set `ResponseCode` to 1
/// for every failure (not the script's exit code) and cannot set `StandardOutputContent`;
/// the orchestrator reads both streams from S3 first, where they are complete.
async fn report(
    context: &Context,
    command: &aws_sdk_ssm::types::Command,
    instance_id: &str,
    instance: &Instance,
    finished: &Finished,
) -> Result<&'static str, String> {
    let command_id = command.command_id().unwrap_or_default();
    match finished.status {
        StepStatus::Success => {
            // fakecloud moves invocations to Success by itself; publish once it has.
            wait_for_success(context, command_id, instance_id).await?;
        }
        StepStatus::Failed => {
            fail(context, command_id, instance_id, "Failed", finished).await?;
        }
        StepStatus::TimedOut if command.instance_ids().len() == 1 => {
            // fakecloud can set TimedOut only for every invocation of a command at once.
            let url = format!(
                "{}/_fakecloud/ssm/commands/{command_id}/status",
                context.endpoint
            );
            let answer: serde_json::Value = context
                .http
                .post(&url)
                .json(&serde_json::json!({"status": "TimedOut", "accountId": instance.account}))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("POST {url}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            if answer["updated"] != true {
                return Err(format!(
                    "fakecloud did not mark {command_id} TimedOut: {answer}"
                ));
            }
        }
        StepStatus::TimedOut => {
            // Deviation: with several instances, fakecloud can only say Failed for this one;
            // the status details and the event say it timed out.
            fail(
                context,
                command_id,
                instance_id,
                "Execution Timed Out",
                finished,
            )
            .await?;
        }
        StepStatus::SuccessAndReboot => {
            fail(context, command_id, instance_id, "Failed", finished).await?;
            context.note_error(format!(
                "{command_id} on {instance_id}: the script exited {} to have the agent reboot \
                 the instance and run it again, which the local cloud cannot do",
                contract::REBOOT_EXIT_CODE
            ));
            return Ok("Failed");
        }
    }
    Ok(finished.status.as_invocation_status())
}

/// Mark one invocation Failed in fakecloud with its `StandardErrorContent`.
async fn fail(
    context: &Context,
    command_id: &str,
    instance_id: &str,
    status_details: &str,
    finished: &Finished,
) -> Result<(), String> {
    let url = format!(
        "{}/_fakecloud/ssm/commands/{command_id}/fail",
        context.endpoint
    );
    let answer: serde_json::Value = context
        .http
        .post(&url)
        .json(&serde_json::json!({
            "instanceId": instance_id,
            "statusDetails": status_details,
            "standardErrorContent": finished.stderr_content(),
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("POST {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if answer["updatedInvocations"] != 1 {
        return Err(format!(
            "fakecloud did not mark {command_id} on {instance_id} Failed: {answer}"
        ));
    }
    Ok(())
}

/// One invocation to run.
struct Invocation<'a> {
    command_id: &'a str,
    instance_id: &'a str,
    document: &'a str,
    step: &'a contract::Step,
    parameters: &'a [(String, String)],
    instance: &'a Instance,
}

/// Run the document's command as the agent would (see [`contract::run_script`]), on the
/// instance's stand-in: its root folder is `sysroot`, the recording fakes of `tests/fakes/`
/// are its MySQL tools, and the harness tells them who they are through `FAKE_*` variables.
async fn execute(context: &Context, invocation: &Invocation<'_>) -> Result<Finished, String> {
    let Invocation {
        command_id,
        instance_id,
        document,
        step,
        parameters,
        instance,
    } = invocation;
    let root = project_root();
    let text = match crate::documents::interpolated_command(&root, document, parameters) {
        Ok(text) => text,
        // Deviation: SSM refuses such a command at SendCommand (InvalidParameters), so no
        // invocation exists; the stand-in fails the invocation with the reason instead.
        Err(reason) => return Ok(Finished::new(Ending::Exited(1), String::new(), reason)),
    };
    // The instance role reads the secrets; a missing secret fails the script as the AWS CLI
    // would (exit status 255 with the service's error on stderr).
    let mut passwords = Vec::new();
    let mut secrets = Vec::new();
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
            Ok(secret) => {
                let value = secret.secret_string().unwrap_or_default().to_string();
                secrets.push((secret_id.clone(), value.clone()));
                passwords.push((variable.to_string(), value));
            }
            Err(e) => {
                return Ok(Finished::new(
                    Ending::Exited(255),
                    String::new(),
                    format!(
                        "An error occurred when calling the GetSecretValue operation for {secret_id}: {e:?}\n"
                    ),
                ));
            }
        }
    }
    let cluster_dir = context.state_dir.join(&instance.cluster_id);
    let real_host = match &context.hosts {
        Some(hosts) => {
            let (hosts, id, described) = (
                hosts.clone(),
                instance_id.to_string(),
                Instance::clone(instance),
            );
            let host = tokio::task::spawn_blocking(move || hosts.host_of(&id, &described))
                .await
                .map_err(|e| format!("host of {instance_id}: {e}"))??;
            // What the instance role reads from Secrets Manager, for the `aws` stand-in.
            for (secret_id, value) in &secrets {
                host.put_secret(secret_id, value)
                    .map_err(|e| format!("secret on {}: {e}", host.name))?;
            }
            Some(host)
        }
        None => None,
    };
    let sysroot = match &real_host {
        Some(host) => host.root().to_path_buf(),
        None => cluster_dir.join(&instance.host).join("sysroot"),
    };
    std::fs::create_dir_all(&sysroot).map_err(|e| format!("{}: {e}", sysroot.display()))?;
    let on_instance = |path: &str| sysroot.join(path.trim_start_matches('/'));
    let timeout = contract::execution_timeout(
        step.timeout_seconds
            .as_deref()
            .map(|t| interpolate(t, parameters))
            .as_deref(),
    );
    let mut env: Vec<(String, String)> = vec![
        (
            // On a real host, ha-host sets the host's own PATH (stand-ins first) instead.
            "PATH".into(),
            format!(
                "{}:{}",
                root.join("tests/fakes").display(),
                contract::SERVICE_PATH
            ),
        ),
        // plugins/runscript/runscript.go, setCommandIdEnvironment.
        ("SSM_COMMAND_ID".into(), command_id.to_string()),
        // executers/executers.go, prepareEnvironment. The platform's name and version are
        // what the agent reads on Amazon Linux 2023 (assumption: /etc/os-release's NAME and
        // VERSION_ID there).
        ("AWS_SSM_INSTANCE_ID".into(), instance_id.to_string()),
        ("AWS_SSM_REGION_NAME".into(), crate::REGION.into()),
        ("AWS_SSM_PLATFORM_NAME".into(), "Amazon Linux".into()),
        ("AWS_SSM_PLATFORM_VERSION".into(), "2023".into()),
    ];
    if real_host.is_none() {
        // The recording fakes' instance.
        env.extend([
            ("FAKE_MYSQL_ROOT".into(), cluster_dir.display().to_string()),
            ("FAKE_NODE_HOST".into(), instance.host.clone()),
            ("FAKE_NODE_IP".into(), instance.address.clone()),
            ("HA_SYSROOT".into(), sysroot.display().to_string()),
        ]);
        env.extend(passwords);
    }
    let run = contract::ScriptRun {
        orchestration_dir: on_instance(&format!(
            "/var/lib/amazon/ssm/{instance_id}/document/orchestration/{command_id}"
        )),
        step: step.name.clone(),
        run_command: vec![text],
        working_dir: match step.working_directory.as_deref() {
            Some(dir) if dir.starts_with('/') => on_instance(dir),
            _ => sysroot.clone(),
        },
        env,
        timeout,
        host: real_host.as_ref().map(|host| contract::HostRun {
            ha_host: root.join("local-cloud/hosts/ha-host"),
            name: host.name.clone(),
            root: host.root().to_path_buf(),
        }),
    };
    contract::run_script(&run)
        .await
        .map_err(|e| format!("run {}: {e}", run.script_path().display()))
}

/// SSM's `{{ name }}` interpolation of a document input.
fn interpolate(text: &str, parameters: &[(String, String)]) -> String {
    parameters
        .iter()
        .fold(text.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{{ {name} }}}}"), value)
        })
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

/// The event SSM publishes on an invocation's status change. Its shape is the "Run Command
/// Invocation Status-change Notification" example of the Systems Manager user guide
/// ("Amazon EventBridge event examples for Systems Manager", Run Command events): source
/// `aws.ssm`, the instance's ARN as the one resource, and a detail of exactly `command-id`,
/// `document-name`, `instance-id`, `requested-date-time` (UTC, milliseconds) and `status`.
/// Which statuses are published is not in the agent's source (SSM publishes them); the
/// stand-in publishes InProgress when it starts and the terminal status at the end, which
/// is what the stack's rule matches (assumption: AWS may publish Pending and Delayed too).
async fn publish(
    context: &Context,
    command: &aws_sdk_ssm::types::Command,
    instance: &Instance,
    instance_id: &str,
    status: &str,
) -> Result<(), String> {
    let detail = event_detail(command, instance_id, status);
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

/// The `detail` of an "EC2 Command Invocation Status-change Notification" (see [`publish`]).
fn event_detail(
    command: &aws_sdk_ssm::types::Command,
    instance_id: &str,
    status: &str,
) -> serde_json::Value {
    serde_json::json!({
        "command-id": command.command_id().unwrap_or_default(),
        "document-name": command.document_name().unwrap_or_default(),
        "instance-id": instance_id,
        "requested-date-time": command
            .requested_date_time()
            .map(|t| iso8601_millis(*t))
            .unwrap_or_default(),
        "status": status,
    })
}

/// `2016-07-10T21:51:30.049Z`: the form of the documented example.
fn iso8601_millis(time: aws_sdk_ssm::primitives::DateTime) -> String {
    let millis = time.to_millis().unwrap_or_default();
    let whole = aws_sdk_ssm::primitives::DateTime::from_secs(millis.div_euclid(1000))
        .fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default();
    format!(
        "{}.{:03}Z",
        whole.trim_end_matches('Z'),
        millis.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator::aws::commands::{output_key, output_prefix};
    use orchestrator::domain::commands::Document;

    #[test]
    fn every_deployed_document_is_one_shell_step_whose_output_the_orchestrator_finds() {
        for document in Document::ALL {
            let step = document_step(document.suffix()).expect("step");
            assert_eq!(step.action, contract::RUN_SHELL_SCRIPT, "{document:?}");
            // A backup or a restore copies a whole data directory: 4 hours; the rest 30 min.
            let expected = match document {
                Document::DbBackup | Document::DbRestore => 14_400,
                _ => 1800,
            };
            assert_eq!(
                contract::execution_timeout(step.timeout_seconds.as_deref()),
                Duration::from_secs(expected),
                "{document:?}"
            );
            let prefix = output_prefix("c-1");
            for stream in [contract::STDOUT, contract::STDERR] {
                assert_eq!(
                    contract::output_key(&prefix, "cmd", "i-1", &step.action, &step.name, stream),
                    output_key(&prefix, "cmd", "i-1", stream),
                    "{document:?}: the orchestrator reads {stream} where the agent does not write it"
                );
            }
        }
    }

    #[test]
    fn status_events_have_the_documented_shape() {
        let command = aws_sdk_ssm::types::Command::builder()
            .command_id("e8d3c0e4-71f7-4491-898f-c9b35bee5f3b")
            .document_name("stack-DbReport")
            .requested_date_time(aws_sdk_ssm::primitives::DateTime::from_millis(
                1_468_187_490_049,
            ))
            .instance_ids("i-9bb89e2b")
            .build();
        let detail = event_detail(&command, "i-9bb89e2b", "Success");
        assert_eq!(
            detail,
            serde_json::json!({
                "command-id": "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b",
                "document-name": "stack-DbReport",
                "instance-id": "i-9bb89e2b",
                "requested-date-time": "2016-07-10T21:51:30.049Z",
                "status": "Success",
            })
        );
        // What the orchestrator parses it into.
        let parsed: orchestrator::tasks::events::CommandInvocationStatusChange =
            serde_json::from_value(detail).expect("the orchestrator reads it");
        assert_eq!(
            parsed.status,
            orchestrator::domain::commands::CommandStatus::Success
        );
        assert_eq!(
            iso8601_millis(aws_sdk_ssm::primitives::DateTime::from_secs(1_468_187_490)),
            "2016-07-10T21:51:30.000Z"
        );
    }

    #[test]
    fn every_final_status_the_stand_in_publishes_is_one_the_orchestrator_knows() {
        for code in [0, 1, 3, 137, 168, 169, 255, -1] {
            let status = contract::step_status(code).as_invocation_status();
            let parsed: orchestrator::domain::commands::CommandStatus =
                serde_json::from_value(serde_json::Value::String(status.into()))
                    .unwrap_or_else(|e| panic!("{status}: {e}"));
            assert!(parsed.is_terminal(), "exit {code}: {status}");
        }
    }
}
