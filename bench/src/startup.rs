//! Per function: the stripped release binary's size, its cold start through a Lambda Runtime
//! API (process start to the first event answered, so SDK configuration, client creation
//! and the first AWS call are in it), its initialisation alone (process start to its first
//! `next` poll), peak RSS and warm handler latency; and the same for the Python/boto3 peer.
//!
//! The Runtime API is the runner's own ([`local_cloud::runner::Server`]); the functions run
//! with their deployed environment against the local cloud, so the first call really goes
//! to DynamoDB. Each run is a fresh process, as a Lambda cold start is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use local_cloud::runner::{Server, bind_loopback};
use local_cloud::{LocalCloud, Stack};
use serde::Serialize;

use crate::stats::Summary;
use crate::{BenchError, Result};

/// One AWS call the peer makes, as the Rust function makes it for the same event (the
/// bench checks the two lists agree). Keys as template.yaml declares the table.
#[derive(Debug, Clone, Copy)]
pub enum PeerCall {
    /// `GetItem` of one record by `pk`/`sk`.
    GetItem,
    /// `Query` of one cluster's partition (`pk = CLUSTER#<id>`), consistent.
    QueryPartition,
    /// `Query` of a global secondary index by its hash key.
    QueryIndex {
        index: &'static str,
        key: &'static str,
        value: &'static str,
    },
    /// `PutItem` of one small record (the event claim).
    PutItem,
}

impl PeerCall {
    fn key(self) -> &'static str {
        match self {
            PeerCall::GetItem => "dynamodb:GetItem",
            PeerCall::QueryPartition | PeerCall::QueryIndex { .. } => "dynamodb:Query",
            PeerCall::PutItem => "dynamodb:PutItem",
        }
    }

    fn boto3(self, table: &str) -> serde_json::Value {
        let (operation, params) = match self {
            PeerCall::GetItem => (
                "get_item",
                serde_json::json!({
                    "TableName": table,
                    "Key": {"pk": {"S": "COMMAND#bench-absent"}, "sk": {"S": "COMMAND"}},
                    "ConsistentRead": true
                }),
            ),
            PeerCall::QueryPartition => (
                "query",
                serde_json::json!({
                    "TableName": table,
                    "KeyConditionExpression": "pk = :pk",
                    "ExpressionAttributeValues": {":pk": {"S": "CLUSTER#c-7f3a9b2e41d0"}},
                    "ConsistentRead": true
                }),
            ),
            PeerCall::QueryIndex { index, key, value } => (
                "query",
                serde_json::json!({
                    "TableName": table,
                    "IndexName": index,
                    "KeyConditionExpression": "#k = :v",
                    "ExpressionAttributeNames": {"#k": key},
                    "ExpressionAttributeValues": {":v": {"S": value}},
                    "Limit": 50
                }),
            ),
            PeerCall::PutItem => (
                "put_item",
                serde_json::json!({
                    "TableName": table,
                    "Item": {"pk": {"S": "EVENT#bench-peer"}, "sk": {"S": "EVENT"}}
                }),
            ),
        };
        serde_json::json!({"client": "dynamodb", "operation": operation, "params": params})
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub logical_id: &'static str,
    pub binary: &'static str,
    pub event: &'static str,
    /// A `host` header the event gets instead of the sample's.
    pub host: Option<&'static str>,
    /// The boto3 clients the peer builds: the same services the Rust function's `main` builds.
    pub clients: &'static [&'static str],
    /// What the peer does with each event: what the Rust function does with it.
    pub calls: &'static [PeerCall],
}

pub const CASES: [Case; 6] = [
    Case {
        logical_id: "ApiFunction",
        binary: "api",
        event: "apigw-list-clusters.json",
        host: None,
        clients: &["dynamodb", "stepfunctions"],
        calls: &[PeerCall::QueryIndex {
            index: "clusters",
            key: "list_pk",
            value: "CLUSTER",
        }],
    },
    Case {
        logical_id: "ProvisionFunction",
        binary: "provision",
        event: "provision-task-launch.json",
        host: None,
        clients: &[
            "s3",
            "dynamodb",
            "ec2",
            "ssm",
            "elbv2",
            "cloudwatch",
            "secretsmanager",
        ],
        calls: &[PeerCall::QueryPartition],
    },
    Case {
        logical_id: "ReplicationFunction",
        binary: "replication",
        event: "ssm-command-success.json",
        host: None,
        clients: &["dynamodb", "ssm", "s3", "stepfunctions"],
        calls: &[PeerCall::GetItem],
    },
    Case {
        logical_id: "InstanceEventsFunction",
        binary: "instance-events",
        event: "ec2-instance-terminated.json",
        host: None,
        clients: &[
            "dynamodb",
            "stepfunctions",
            "ssm",
            "s3",
            "ec2",
            "elbv2",
            "cloudwatch",
        ],
        calls: &[
            PeerCall::PutItem,
            PeerCall::QueryIndex {
                index: "by-instance",
                key: "instance_id",
                value: "i-0bench0000000000",
            },
        ],
    },
    Case {
        logical_id: "ScalingFunction",
        binary: "scaling",
        event: "alarm-high-request-count.json",
        host: None,
        clients: &["dynamodb", "stepfunctions"],
        calls: &[PeerCall::QueryPartition],
    },
    Case {
        logical_id: "AlbTargetFunction",
        binary: "alb-target",
        event: "alb-status-page.json",
        // A cluster's status page (the sample asks for the load balancer's own name, which
        // needs no lookup): the name is looked up and not found.
        host: Some("shop.example.com"),
        clients: &["dynamodb"],
        calls: &[PeerCall::GetItem],
    },
];

/// One process's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    init_ms: f64,
    cold_ms: f64,
    peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeFigures {
    pub init_ms: Summary,
    pub cold_start_ms: Summary,
    pub peak_rss_mb: Summary,
    pub warm_ms: Summary,
    /// The first answer was an error document (kept visible: the figures then time the
    /// error path).
    pub answered_with_error: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionStartup {
    pub function: String,
    pub binary_bytes: u64,
    /// The Rust function's AWS calls while handling the event, as metered.
    pub first_calls: Vec<String>,
    /// Whether the peer made exactly those calls.
    pub same_calls: bool,
    pub rust: RuntimeFigures,
    pub python: RuntimeFigures,
    /// Python's median initialisation over Rust's.
    pub init_ratio: f64,
    pub cold_start_ratio: f64,
}

/// Where to find what the measurement needs.
#[derive(Debug, Clone)]
pub struct Programs {
    pub release_dir: PathBuf,
    pub python: PathBuf,
    pub peer_script: PathBuf,
}

pub async fn measure(
    cloud: &LocalCloud,
    stack: &Stack,
    programs: &Programs,
    runs: usize,
    warm_runs: usize,
) -> Result<Vec<FunctionStartup>> {
    let lambda = aws_sdk_lambda::Client::new(&cloud.sdk_config().await);
    let table = stack
        .outputs
        .get("TableName")
        .cloned()
        .ok_or_else(|| BenchError::Setup("the stack has no TableName output".into()))?;
    let mut results = Vec::new();
    for case in CASES {
        let env = function_env(cloud, stack, &lambda, case.logical_id).await?;
        let mut event = e2e_tests::sample_event(case.event);
        if let Some(host) = case.host {
            event["headers"]["host"] = serde_json::Value::from(host);
        }
        let event = Bytes::from(event.to_string().into_bytes());
        let binary = programs.release_dir.join(case.binary);
        let binary_bytes = std::fs::metadata(&binary)
            .map_err(|e| {
                BenchError::Setup(format!(
                    "{}: {e}; `make bench` builds the release binaries first",
                    binary.display()
                ))
            })?
            .len();
        // One metered run shows which AWS calls the event makes: the peer makes the same.
        let metered = with_var(&env, "RUST_LOG", "info,orchestrator::metering=debug");
        let first_calls = metered_calls(&binary, &metered, &event).await?;
        // Timed at the production log level: the metering lines would cost time.
        let env = with_var(&env, "RUST_LOG", "info");
        let rust = figures(&binary, &[], &env, &event, runs, warm_runs).await?;

        let mut peer_env = env.clone();
        peer_env.push(("PEER_CLIENTS".into(), case.clients.join(",")));
        let peer_calls: Vec<serde_json::Value> =
            case.calls.iter().map(|c| c.boto3(&table)).collect();
        peer_env.push((
            "PEER_CALLS".into(),
            serde_json::Value::from(peer_calls).to_string(),
        ));
        let same_calls = case
            .calls
            .iter()
            .map(|c| c.key())
            .eq(first_calls.iter().map(String::as_str));
        if !same_calls {
            eprintln!(
                "[bench] WARNING: {} made {first_calls:?} for its event, the peer is set up for {:?}: the comparison is not like for like",
                case.logical_id,
                case.calls.iter().map(|c| c.key()).collect::<Vec<_>>()
            );
        }
        let script = programs.peer_script.to_string_lossy().to_string();
        let python = figures(
            &programs.python,
            &[script],
            &peer_env,
            &event,
            runs,
            warm_runs,
        )
        .await?;
        let init_ratio = python.init_ms.median / rust.init_ms.median.max(1e-3);
        let cold_start_ratio = python.cold_start_ms.median / rust.cold_start_ms.median.max(1e-3);
        eprintln!(
            "[bench] {:<24} init {:>6.1} ms (python {:>7.1} ms, {:>5.1}x)  cold {:>6.1} ms  rss {:>5.1} MB  warm {:>5.2} ms  calls {:?}",
            case.logical_id,
            rust.init_ms.median,
            python.init_ms.median,
            init_ratio,
            rust.cold_start_ms.median,
            rust.peak_rss_mb.max,
            rust.warm_ms.median,
            first_calls
        );
        results.push(FunctionStartup {
            function: case.logical_id.to_string(),
            binary_bytes,
            first_calls,
            same_calls,
            rust,
            python,
            init_ratio,
            cold_start_ratio,
        });
    }
    Ok(results)
}

fn with_var(env: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != name).cloned().collect();
    env.push((name.to_string(), value.to_string()));
    env
}

/// The deployed function's environment (its configuration, and what Lambda itself sets),
/// pointed at the local cloud.
pub async fn function_env(
    cloud: &LocalCloud,
    stack: &Stack,
    lambda: &aws_sdk_lambda::Client,
    logical_id: &str,
) -> Result<Vec<(String, String)>> {
    let name = stack
        .physical_id(logical_id)
        .ok_or_else(|| BenchError::Setup(format!("{logical_id} is not in the stack")))?;
    let configuration = lambda
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .map_err(|e| BenchError::Setup(format!("GetFunctionConfiguration {name}: {e:?}")))?;
    let mut env: Vec<(String, String)> = configuration
        .environment()
        .and_then(|e| e.variables())
        .map(|vars| vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    env.extend(cloud.aws_env().into_iter().map(|(k, v)| (k.to_string(), v)));
    for (key, value) in [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", std::env::var("HOME").unwrap_or_default()),
    ] {
        env.push((key.to_string(), value));
    }
    Ok(env)
}

async fn figures(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    event: &Bytes,
    runs: usize,
    warm_runs: usize,
) -> Result<RuntimeFigures> {
    let mut samples = Vec::with_capacity(runs);
    let mut warm = Vec::new();
    let mut answered_with_error = false;
    for run in 0..runs {
        // The last process also serves the warm invocations.
        let warm_here = if run + 1 == runs { warm_runs } else { 0 };
        let (sample, warm_ms, error) = run_process(program, args, env, event, warm_here).await?;
        samples.push(sample);
        warm.extend(warm_ms);
        answered_with_error |= error;
    }
    Ok(RuntimeFigures {
        init_ms: Summary::of(samples.iter().map(|s| s.init_ms)),
        cold_start_ms: Summary::of(samples.iter().map(|s| s.cold_ms)),
        peak_rss_mb: Summary::of(samples.iter().map(|s| s.peak_rss_mb)),
        warm_ms: Summary::of(warm),
        answered_with_error,
    })
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A function process with a Runtime API of its own, as Lambda runs one.
struct Runtime {
    server: Arc<Server>,
    api: tokio::task::JoinHandle<()>,
    child: tokio::process::Child,
    started: Instant,
    program: PathBuf,
}

impl Runtime {
    async fn start(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        stdout: Stdio,
    ) -> Result<Self> {
        let server = Arc::new(Server::without_reports(
            "arn:aws:lambda:us-east-1:000000000000:function:bench".into(),
        ));
        let (listener, port) = bind_loopback()
            .await
            .map_err(|e| BenchError::Setup(format!("Runtime API port: {e}")))?;
        let api = server.serve_runtime(listener);
        let started = Instant::now();
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("start {}: {e}", program.display())))?;
        Ok(Self {
            server,
            api,
            child,
            started,
            program: program.to_path_buf(),
        })
    }

    /// One event; its answer (the response or the error document).
    async fn invoke(&mut self, event: &Bytes) -> Result<Bytes> {
        let answer =
            tokio::time::timeout(ANSWER_TIMEOUT, self.server.invoke_payload(event.clone()))
                .await
                .ok()
                .flatten();
        match answer {
            Some(answer) => Ok(answer),
            None => {
                let _ = self.child.start_kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                Err(BenchError::Run(format!(
                    "{} did not answer within {ANSWER_TIMEOUT:?}; its stderr:\n{stderr}",
                    self.program.display()
                )))
            }
        }
    }

    /// Stop the process; what it wrote to stdout, when that was piped.
    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        self.api.abort();
        match self.child.wait_with_output().await {
            Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }
}

/// Start `program` as a Lambda runtime, hand it `event` once cold and `warm_runs` times
/// warm; returns its figures, the warm latencies and whether the first answer was an error.
async fn run_process(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    event: &Bytes,
    warm_runs: usize,
) -> Result<(Run, Vec<f64>, bool)> {
    let mut runtime = Runtime::start(program, args, env, Stdio::null()).await?;
    let answer = runtime.invoke(event).await?;
    let cold_ms = ms(runtime.started.elapsed());
    let init_ms = runtime
        .server
        .first_poll()
        .map(|at| ms(at.duration_since(runtime.started)))
        .unwrap_or(cold_ms);
    let mut warm = Vec::with_capacity(warm_runs);
    for _ in 0..warm_runs {
        let sent = Instant::now();
        runtime.invoke(event).await?;
        warm.push(ms(sent.elapsed()));
    }
    let peak_rss_mb = peak_rss_kb(runtime.child.id().unwrap_or_default()) as f64 / 1024.0;
    runtime.stop().await;
    let error = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .is_some_and(|v| v.get("errorType").is_some());
    Ok((
        Run {
            init_ms,
            cold_ms,
            peak_rss_mb,
        },
        warm,
        error,
    ))
}

/// The AWS calls one cold invocation makes, read from its metering lines.
async fn metered_calls(
    binary: &Path,
    env: &[(String, String)],
    event: &Bytes,
) -> Result<Vec<String>> {
    let mut runtime = Runtime::start(binary, &[], env, Stdio::piped()).await?;
    runtime.invoke(event).await?;
    let stdout = runtime.stop().await;
    let mut activity = crate::logs::Activity::default();
    for line in stdout.lines() {
        crate::logs::parse_line("", line, &mut activity);
    }
    Ok(activity
        .calls
        .iter()
        .map(crate::logs::AwsCall::key)
        .collect())
}

/// `VmHWM`: the process's peak resident set, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
