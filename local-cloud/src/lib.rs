//! The local cloud harness: fakecloud (pinned, see LOCAL-CLOUD.md) started on a free port
//! with our native Lambda runner as its "container CLI", and the project's SAM template
//! deployed into it with the SAM CLI, exactly as a user deploys to AWS.
//!
//! Everything it starts it stops: dropping [`LocalCloud`] ends fakecloud, and every
//! function process ends with it (the runner watches its owner). fakecloud itself is
//! started under `setpriv --pdeathsig KILL`, so even a killed test process leaks nothing.

pub mod agent;
pub mod agent_contract;
pub mod documents;
pub mod runner;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fakecloud version the project is tested against. Setup installs exactly this one.
pub const FAKECLOUD_VERSION: &str = "0.51.0";
pub const REGION: &str = "us-east-1";
/// Dummy credentials: fakecloud accepts any, and they must never be real ones.
const ACCESS_KEY: &str = "AKIALOCALCLOUD000000";
const SECRET_KEY: &str = "local-cloud-secret-key-not-a-real-one";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{tool} not found at {path}; {fix}")]
    ToolMissing {
        tool: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    #[error(
        "step `{step}` failed: {message}\n--- last lines of the fakecloud log ({log}) ---\n{tail}"
    )]
    Step {
        step: &'static str,
        message: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Where the tools the harness drives are. Each can be overridden by an environment
/// variable; the defaults are where `scripts/setup.sh` installs them.
#[derive(Debug, Clone)]
pub struct Tools {
    pub project_root: PathBuf,
    pub fakecloud: PathBuf,
    pub sam: PathBuf,
    pub lambda_runner: PathBuf,
}

impl Tools {
    pub fn locate() -> Result<Self> {
        let project_root = project_root();
        let tools_dir = std::env::var_os("HA_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/ha-orchestrator/tools")
            });
        let fakecloud = env_path("FAKECLOUD_BIN").unwrap_or_else(|| {
            tools_dir
                .join(format!("fakecloud-{FAKECLOUD_VERSION}"))
                .join("fakecloud")
        });
        let sam = env_path("SAM_BIN").unwrap_or_else(|| project_root.join(".venv/bin/sam"));
        let lambda_runner =
            env_path("LAMBDA_RUNNER_BIN").unwrap_or_else(|| built_binary("lambda-runner"));
        let tools = Self {
            project_root,
            fakecloud,
            sam,
            lambda_runner,
        };
        for (tool, path, fix) in [
            (
                "fakecloud",
                &tools.fakecloud,
                "run `make setup` (or `scripts/setup.sh`), which installs it once into the tools folder",
            ),
            (
                "sam",
                &tools.sam,
                "run `make setup`, which creates the project's .venv with the pinned SAM CLI",
            ),
            (
                "lambda-runner",
                &tools.lambda_runner,
                "build the workspace first (`cargo build --workspace --bins`)",
            ),
        ] {
            if !path.is_file() {
                return Err(HarnessError::ToolMissing {
                    tool,
                    path: path.clone(),
                    fix,
                });
            }
        }
        Ok(tools)
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The workspace root: this crate lives in `<root>/local-cloud`.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A binary of this workspace, built into the same target folder as whatever is running:
/// the `local-cloud` binary sits beside it, a test binary one level down in `deps/`.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [
        dir.join(name),
        dir.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

/// Stands in for nginx on the web instances. fakecloud's instances run nothing, and its
/// ALB health-checks an instance target at `127.0.0.1:<target group port>`; the stack is
/// deployed with `WebPort` set to this server's port, so health checks get the answer a
/// real web instance gives on the health check path.
#[derive(Debug)]
pub struct WebStandIn {
    port: u16,
    /// What the health check gets: 200 while true, 503 while false (a broken web tier).
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebStandIn {
    pub fn start() -> Result<Self> {
        use std::io::{Read, Write};
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind the web stand-in"))?;
        let port = listener
            .local_addr()
            .map_err(io("web stand-in address"))?
            .port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let answer_healthy = healthy.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let answer: &[u8] = if answer_healthy.load(std::sync::atomic::Ordering::Relaxed) {
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndown\n"
                };
                let _ = stream.write_all(answer);
            }
        });
        Ok(Self {
            port,
            healthy,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Make every web target pass (true) or fail (false) the ALB's health checks.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy
            .store(healthy, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for WebStandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running fakecloud with the native Lambda runner.
#[derive(Debug)]
pub struct LocalCloud {
    child: Option<Child>,
    port: u16,
    work_dir: tempfile::TempDir,
    tools: Tools,
    web: WebStandIn,
}

impl LocalCloud {
    /// Start fakecloud on a free loopback port and wait until it answers.
    pub fn start(tools: &Tools) -> Result<Self> {
        let work_dir = tempfile::Builder::new()
            .prefix("local-cloud-")
            .tempdir()
            .map_err(io("create the harness work folder"))?;
        let runner_state = work_dir.path().join("lambda-runner");
        std::fs::create_dir_all(&runner_state).map_err(io("create runner state folder"))?;
        let port = free_port()?;
        let log_path = work_dir.path().join("fakecloud.log");
        let log = std::fs::File::create(&log_path).map_err(io("create fakecloud log"))?;
        let log_err = log.try_clone().map_err(io("clone log handle"))?;
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&tools.fakecloud)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .env("FAKECLOUD_CONTAINER_CLI", &tools.lambda_runner)
            .env(runner::STATE_DIR_ENV, &runner_state)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env(
                "RUST_LOG",
                std::env::var("FAKECLOUD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("start {}", tools.fakecloud.display())))?;
        let mut cloud = Self {
            child: Some(child),
            port,
            work_dir,
            tools: tools.clone(),
            web: WebStandIn::start()?,
        };
        cloud.wait_healthy(Duration::from_secs(30))?;
        Ok(cloud)
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let address = format!("127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.step_failed(
                    "start fakecloud",
                    format!("fakecloud exited at start with {status}"),
                ));
            }
            if let Ok(addr) = address.parse()
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && http_get_ok(&address, "/_fakecloud/health")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.step_failed(
            "start fakecloud",
            format!("no answer on {address}/_fakecloud/health within {timeout:?}"),
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The stand-in for nginx on every web instance (see [`WebStandIn`]).
    pub fn web(&self) -> &WebStandIn {
        &self.web
    }

    pub fn log_path(&self) -> PathBuf {
        self.work_dir.path().join("fakecloud.log")
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// The last `lines` lines of fakecloud's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of(&self.log_path(), lines)
    }

    /// Everything every function process printed so far (for log assertions).
    pub fn function_logs(&self) -> String {
        runner::containers(&self.work_dir.path().join("lambda-runner"))
            .iter()
            .map(|c| std::fs::read_to_string(c.log_path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Each function process's log file, with the function's name (a function can have
    /// more than one: fakecloud starts another container for concurrent invocations).
    pub fn function_log_files(&self) -> Vec<(String, PathBuf)> {
        runner::containers(&self.work_dir.path().join("lambda-runner"))
            .iter()
            .filter_map(|c| {
                let spec = c.spec().ok()?;
                let name = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "AWS_LAMBDA_FUNCTION_NAME")
                    .map(|(_, v)| v.clone())?;
                Some((name, c.log_path()))
            })
            .collect()
    }

    pub fn step_failed(&self, step: &'static str, message: impl Into<String>) -> HarnessError {
        HarnessError::Step {
            step,
            message: message.into(),
            log: self.log_path(),
            tail: self.log_tail(40),
        }
    }

    /// An SDK configuration pointed at this local cloud.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "local-cloud",
            ))
            .load()
            .await
    }

    /// The environment under which AWS tools (the SAM CLI) talk to this local cloud.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("SAM_CLI_TELEMETRY", "0".into()),
        ]
    }

    /// Deploy the built SAM application (`.aws-sam/build`, made by `sam build`) as `stack`
    /// with the user's own command, then read back its outputs and resources.
    pub async fn deploy(&self, stack: &str) -> Result<Stack> {
        self.deploy_with(stack, &[]).await
    }

    /// [`Self::deploy`] with template parameters set (`WebPort` is always the stand-in's).
    pub async fn deploy_with(&self, stack: &str, parameters: &[(&str, &str)]) -> Result<Stack> {
        let built = self.tools.project_root.join(".aws-sam/build/template.yaml");
        self.deploy_template(stack, &built, parameters).await
    }

    /// [`Self::deploy_with`] from another built template (a changed copy of
    /// `.aws-sam/build/template.yaml`, to prove a redeploy); deploying to an existing stack
    /// updates it.
    pub async fn deploy_template(
        &self,
        stack: &str,
        built: &Path,
        parameters: &[(&str, &str)],
    ) -> Result<Stack> {
        if !built.is_file() {
            return Err(self.step_failed(
                "sam deploy",
                format!(
                    "{} is missing: run `make build` (sam build) before deploying",
                    built.display()
                ),
            ));
        }
        let sam_log = self.work_dir.path().join("sam-deploy.log");
        let log = std::fs::File::create(&sam_log).map_err(io("create sam log"))?;
        let log_err = log.try_clone().map_err(io("clone sam log"))?;
        let status = Command::new(&self.tools.sam)
            .current_dir(&self.tools.project_root)
            .args(["deploy", "--template-file"])
            .arg(built)
            .args([
                "--stack-name",
                stack,
                "--resolve-s3",
                "--capabilities",
                "CAPABILITY_IAM",
                "--no-confirm-changeset",
                "--no-fail-on-empty-changeset",
                "--region",
                REGION,
                "--parameter-overrides",
            ])
            .arg(format!("WebPort={}", self.web.port()))
            .args(
                parameters
                    .iter()
                    .map(|(key, value)| format!("{key}={value}")),
            )
            .envs(self.aws_env())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .status()
            .map_err(io(format!("run {}", self.tools.sam.display())))?;
        if !status.success() {
            return Err(self.step_failed(
                "sam deploy",
                format!(
                    "sam deploy exited with {status}; its output ends with:\n{}",
                    tail_of(&sam_log, 30)
                ),
            ));
        }
        self.describe(stack).await
    }

    /// Outputs and resources of a deployed stack; fails unless it is complete.
    pub async fn describe(&self, stack: &str) -> Result<Stack> {
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk_config().await);
        let described = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| self.step_failed("describe stack", format!("{e:?}")))?;
        let Some(found) = described.stacks().first() else {
            return Err(self.step_failed("describe stack", format!("stack {stack} not found")));
        };
        let status = found
            .stack_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if !matches!(status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE") {
            return Err(self.step_failed(
                "describe stack",
                format!(
                    "stack {stack} is {status}: {}",
                    found.stack_status_reason().unwrap_or("no reason given")
                ),
            ));
        }
        let outputs: BTreeMap<String, String> = found
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
            .collect();
        let mut resources = Vec::new();
        let mut pages = cfn
            .list_stack_resources()
            .stack_name(stack)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| self.step_failed("list stack resources", format!("{e:?}")))?;
            for r in page.stack_resource_summaries() {
                resources.push(StackResource {
                    logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: r.resource_type().unwrap_or_default().to_string(),
                    physical_id: r.physical_resource_id().unwrap_or_default().to_string(),
                    status: r
                        .resource_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                });
            }
        }
        resources.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
        let api_url = outputs
            .get("ApiId")
            .map(|id| format!("{}/_aws/execute-api/{id}", self.endpoint()));
        Ok(Stack {
            name: stack.to_string(),
            status,
            outputs,
            resources,
            api_url,
        })
    }

    /// Invoke a function of `stack` synchronously through the Lambda API, as Step Functions
    /// and EventBridge do. A function error is an answer, not a harness failure.
    pub async fn invoke(
        &self,
        stack: &Stack,
        logical_id: &str,
        event: &serde_json::Value,
    ) -> Result<Invocation> {
        let name = stack.physical_id(logical_id).ok_or_else(|| {
            self.step_failed(
                "invoke",
                format!("{logical_id} is not a resource of {}", stack.name),
            )
        })?;
        let lambda = aws_sdk_lambda::Client::new(&self.sdk_config().await);
        let output = lambda
            .invoke()
            .function_name(name)
            .payload(aws_sdk_lambda::primitives::Blob::new(event.to_string()))
            .send()
            .await
            .map_err(|e| self.step_failed("invoke", format!("{logical_id}: {e:?}")))?;
        let bytes = output
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let payload = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Ok(Invocation {
            function_error: output.function_error().map(str::to_string),
            payload,
        })
    }

    /// Publish an event on the default bus as the AWS service named by `source` would
    /// (fakecloud's EC2, SSM and CloudWatch emit none themselves; see LOCAL-CLOUD.md).
    pub async fn publish_event(
        &self,
        source: &str,
        detail_type: &str,
        detail: &serde_json::Value,
        resources: &[String],
    ) -> Result<String> {
        let events = aws_sdk_eventbridge::Client::new(&self.sdk_config().await);
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .set_resources(Some(resources.to_vec()))
            .build();
        let output = events
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| self.step_failed("publish event", format!("{e:?}")))?;
        let result = output.entries().first();
        match result.and_then(|r| r.event_id()) {
            Some(id) if output.failed_entry_count() == 0 => Ok(id.to_string()),
            _ => Err(self.step_failed(
                "publish event",
                format!("PutEvents refused the {detail_type} event: {result:?}"),
            )),
        }
    }

    /// Wait until some function has logged a line containing every one of `needles`;
    /// returns that line. Polls the log files: the functions log as they run.
    pub async fn wait_for_log_line(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.function_logs();
            if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.to_string());
            }
            if Instant::now() >= deadline {
                return Err(self.step_failed(
                    "wait for a function log line",
                    format!(
                        "no line with {needles:?} within {timeout:?}; function logs:\n{}",
                        logs.lines()
                            .rev()
                            .take(40)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop fakecloud (and with it every function process). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The runners stop by themselves within half a second of fakecloud; do not wait.
        for container in runner::containers(&self.work_dir.path().join("lambda-runner")) {
            runner::stop(&container);
        }
    }
}

impl Drop for LocalCloud {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A deployed stack as the tests and the CLI need it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub status: String,
    pub outputs: BTreeMap<String, String>,
    pub resources: Vec<StackResource>,
    /// Base URL of the HTTP API on the local cloud (path-style execute-api URL).
    pub api_url: Option<String>,
}

impl Stack {
    /// The physical id (for a function: its name) of a resource, by logical id.
    pub fn physical_id(&self, logical_id: &str) -> Option<&str> {
        self.resources
            .iter()
            .find(|r| r.logical_id == logical_id)
            .map(|r| r.physical_id.as_str())
    }
}

/// What a synchronous invocation answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub payload: serde_json::Value,
    /// Set when the function returned an error (then `payload` is the error envelope).
    /// AWS says `Unhandled` for runtime-reported errors; fakecloud 0.51 says `Handled`.
    pub function_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StackResource {
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: String,
    pub status: String,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io("read the free port"))?
        .port();
    Ok(port)
}

/// A minimal GET for the health probe, so the harness needs no HTTP client before start.
fn http_get_ok(address: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn tail_of(path: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
