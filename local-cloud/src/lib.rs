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
pub mod hosts;
pub mod iam;
pub mod package;
pub mod runner;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fakecloud version the project is tested against. Setup installs exactly this one.
pub const FAKECLOUD_VERSION: &str = "0.51.0";
pub const REGION: &str = "us-east-1";
/// Dummy credentials for the deployer (`sam deploy`) and the tests' own clients; never real
/// ones. The `test` prefix is fakecloud's reserved root identity, which bypasses IAM
/// enforcement and SigV4 verification (`is_root_bypass`, fakecloud-core 0.51.0 auth.rs):
/// the operator deploying, like an account admin, is not what the stack's roles restrict.
/// The functions never use it: they call with their execution role's session credentials,
/// which fakecloud mints per function instance (and the runner refuses to start a function
/// without them, see `runner::require_role_credentials`).
const ACCESS_KEY: &str = "TESTLOCALCLOUD000000";
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
                .join(format!("fakecloud-{FAKECLOUD_VERSION}-release"))
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

/// A loopback port for a fakecloud of this machine, held (an exclusive `flock` on
/// `$TMPDIR/ha-local-cloud-ports/<port>.lock`) while that local cloud lives.
///
/// fakecloud binds the address it is given, so the port must be chosen before it starts.
/// Asking the kernel for a free one and handing it over leaves a gap in which a test
/// running beside this one can be given the same port, and then the health probe finds the
/// other test's fakecloud. These ports come from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 and up by default), which no `bind(0)`
/// of any process uses, and a port is only ever handed to the process holding its lock.
#[derive(Debug)]
struct PortLease {
    port: u16,
    _lock: std::fs::File,
}

impl PortLease {
    const RANGE: std::ops::Range<u16> = 21000..29000;

    fn reserve() -> Result<Self> {
        let dir = std::env::temp_dir().join("ha-local-cloud-ports");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let span = Self::RANGE.end - Self::RANGE.start;
        // Start somewhere else each time so concurrent starts rarely try the same locks.
        let offset = (std::process::id() as u64)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as u64)
                    .unwrap_or_default(),
            ) as u16
            % span;
        for i in 0..span {
            let port = Self::RANGE.start + (offset + i) % span;
            let path = dir.join(format!("{port}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            if file.try_lock().is_err() {
                continue;
            }
            // Something outside the project may listen there: skip it.
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            return Ok(Self { port, _lock: file });
        }
        Err(HarnessError::Io {
            context: "reserving a port for fakecloud".into(),
            source: std::io::Error::other(format!(
                "every port of {}..{} is held or in use",
                Self::RANGE.start,
                Self::RANGE.end
            )),
        })
    }
}

/// One of the machine's deploy slots, held while `sam deploy` runs.
///
/// A deploy is the CPU-heavy part of a test (the SAM CLI, and fakecloud creating about a
/// hundred resources), and fakecloud runs a change set inside the ExecuteChangeSet request
/// itself, where CloudFormation answers at once and works in the background: with more
/// deploys at once than the machine has cores, that request outlasted botocore's 60 s read
/// timeout, the SAM CLI sent it again, and the second answer (InvalidChangeSetStatus:
/// EXECUTE_COMPLETE) failed the deploy. Tests side by side therefore deploy at most
/// `HA_CONCURRENT_DEPLOYS` (default: the number of cores) at a time, and wait for the rest
/// of their work (workflows, health checks, real servers) together.
#[derive(Debug)]
struct DeploySlot {
    _lock: std::fs::File,
}

impl DeploySlot {
    async fn acquire() -> Result<Self> {
        let slots = std::env::var("HA_CONCURRENT_DEPLOYS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(2)
            });
        let dir = std::env::temp_dir().join("ha-local-cloud-deploys");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        loop {
            for slot in 0..slots {
                let path = dir.join(format!("slot-{slot}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("opening {}", path.display())))?;
                if file.try_lock().is_ok() {
                    return Ok(Self { _lock: file });
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A running fakecloud with the native Lambda runner.
#[derive(Debug)]
pub struct LocalCloud {
    child: Option<Child>,
    port: u16,
    /// Keeps `port` this local cloud's until it is dropped (after `child` is stopped).
    _port_lease: PortLease,
    work_dir: tempfile::TempDir,
    tools: Tools,
    web: WebStandIn,
    /// Every stack deployed here, with each function's role policies, for the IAM check.
    deployed: std::sync::Mutex<Vec<DeployedRoles>>,
    /// Check IAM coverage when dropped (see [`Self::check_iam_on_drop`]).
    check_iam_on_drop: std::sync::atomic::AtomicBool,
}

/// The fakecloud IAM mode the harness runs: `soft` unless `FAKECLOUD_IAM` says otherwise.
///
/// Not `strict`: fakecloud 0.51.0 authorises S3's ListObjectsV2 as `s3:ListObjectsV2` (and
/// HeadObject as `s3:HeadObject`), actions that do not exist on AWS, which authorises them
/// as `s3:ListBucket` and `s3:GetObject`; strict mode would deny the purge's listing that
/// AWS allows. In `soft` mode fakecloud logs every denial it would make
/// (`fakecloud::iam::audit`) and the IAM coverage check fails the test on each one except
/// those [`iam::ACCEPTED_FAKECLOUD_DENIALS`] lists with its reason, and evaluates the action
/// AWS uses instead.
pub fn iam_mode() -> String {
    std::env::var("FAKECLOUD_IAM")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "soft".into())
}

/// A deployed stack's functions: logical id -> physical name, role ARN and policies.
#[derive(Debug, Clone)]
struct DeployedRoles {
    functions: Vec<(String, String, String, Vec<iam::Policy>)>,
    place: iam::Place,
}

/// The log level that turns the `aws call` lines on (what the IAM coverage check reads).
pub const METERED_LOG_LEVEL: &str = "info,orchestrator::metering=debug";

/// A function log level with the `aws call` lines on: a test's own level keeps its
/// choices, and gets `orchestrator::metering=debug` added unless it already logs them,
/// so no deploy escapes the IAM coverage check.
pub fn metered(level: Option<&str>) -> String {
    match level {
        None => METERED_LOG_LEVEL.to_string(),
        Some(level)
            if level.contains("orchestrator::metering=debug")
                || level.contains("orchestrator::metering=trace")
                || level.starts_with("debug")
                || level.starts_with("trace") =>
        {
            level.to_string()
        }
        Some(level) => format!("{level},orchestrator::metering=debug"),
    }
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
        let port = PortLease::reserve()?;
        let log_path = work_dir.path().join("fakecloud.log");
        let log = std::fs::File::create(&log_path).map_err(io("create fakecloud log"))?;
        let log_err = log.try_clone().map_err(io("clone log handle"))?;
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&tools.fakecloud)
            .args(["--addr", &format!("127.0.0.1:{}", port.port)])
            .env("FAKECLOUD_CONTAINER_CLI", &tools.lambda_runner)
            // IAM evaluated by fakecloud where it can (see `iam` for the services it does
            // not enforce, and `iam_mode` for why soft plus the coverage check), and
            // signatures checked, so a function's session credentials are proven to be
            // the ones it signs with. `FAKECLOUD_IAM` in the caller's environment
            // overrides the mode.
            .env("FAKECLOUD_IAM", iam_mode())
            .env("FAKECLOUD_VERIFY_SIGV4", "true")
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
            port: port.port,
            _port_lease: port,
            work_dir,
            tools: tools.clone(),
            web: WebStandIn::start()?,
            deployed: std::sync::Mutex::new(Vec::new()),
            check_iam_on_drop: std::sync::atomic::AtomicBool::new(false),
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

    /// [`Self::deploy`] with template parameters set (`WebPort` is always the stand-in's;
    /// `LogLevel` is [`METERED_LOG_LEVEL`] unless given, so every AWS request a function
    /// makes is logged for the IAM coverage check).
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
        // The functions' folders zipped once for every deploy (see `package`); the SAM
        // CLI's own Python makes the zips.
        let zipped = package::zipped_template(built, &self.tools.sam.with_file_name("python"))
            .map_err(|e| self.step_failed("sam deploy", e.to_string()))?;
        let _slot = DeploySlot::acquire().await?;
        let sam_log = self.work_dir.path().join("sam-deploy.log");
        let log = std::fs::File::create(&sam_log).map_err(io("create sam log"))?;
        let log_err = log.try_clone().map_err(io("clone sam log"))?;
        let status = Command::new(&self.tools.sam)
            .current_dir(&self.tools.project_root)
            .args(["deploy", "--template-file"])
            .arg(&zipped)
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
                    .filter(|(key, _)| *key != "LogLevel")
                    .map(|(key, value)| format!("{key}={value}")),
            )
            .arg(format!(
                "LogLevel={}",
                metered(
                    parameters
                        .iter()
                        .find(|(key, _)| *key == "LogLevel")
                        .map(|(_, level)| *level)
                )
            ))
            .envs(self.aws_env())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .status()
            .map_err(io(format!("run {}", self.tools.sam.display())))?;
        let _ = std::fs::remove_file(&zipped);
        if !status.success() {
            return Err(self.step_failed(
                "sam deploy",
                format!(
                    "sam deploy exited with {status}; its output ends with:\n{}",
                    tail_of(&sam_log, 30)
                ),
            ));
        }
        let described = self.describe(stack).await?;
        self.record_roles(&described).await?;
        Ok(described)
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

    /// One IAM query-API call (signed with the harness's key), answering the XML body.
    async fn iam_query(&self, parameters: &[(&str, &str)]) -> Result<String> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let body: String = std::iter::once(("Version", "2010-05-08"))
            .chain(parameters.iter().copied())
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{}/", self.endpoint());
        let failed = |message: String| self.step_failed("read role policies", message);
        let identity = aws_credential_types::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "local-cloud",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("iam")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(e.to_string()))?
            .into();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let signable = SignableRequest::new(
            "POST",
            &url,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| failed(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(e.to_string()))?
            .into_parts();
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failed(format!("{parameters:?}: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(failed(format!("{parameters:?} -> {status}: {text}")));
        }
        Ok(text)
    }

    /// Each function's role and its policies as IAM holds them: the SAM-transformed
    /// template's role, with every reference resolved by the deployment.
    async fn record_roles(&self, stack: &Stack) -> Result<()> {
        let lambda = aws_sdk_lambda::Client::new(&self.sdk_config().await);
        let mut functions = Vec::new();
        let mut place = None;
        for resource in stack
            .resources
            .iter()
            .filter(|r| r.resource_type == "AWS::Lambda::Function")
        {
            let configuration = lambda
                .get_function_configuration()
                .function_name(&resource.physical_id)
                .send()
                .await
                .map_err(|e| self.step_failed("read role policies", format!("{e:?}")))?;
            let role_arn = configuration.role().unwrap_or_default().to_string();
            let role_name = role_arn.rsplit('/').next().unwrap_or_default().to_string();
            let parts: Vec<&str> = role_arn.split(':').collect();
            place.get_or_insert_with(|| iam::Place {
                partition: parts.get(1).copied().unwrap_or("aws").to_string(),
                region: REGION.to_string(),
                account: parts.get(4).copied().unwrap_or_default().to_string(),
            });
            let mut policies = Vec::new();
            let listed = self
                .iam_query(&[("Action", "ListRolePolicies"), ("RoleName", &role_name)])
                .await?;
            for name in xml_values(&listed, "member") {
                let answer = self
                    .iam_query(&[
                        ("Action", "GetRolePolicy"),
                        ("RoleName", &role_name),
                        ("PolicyName", &name),
                    ])
                    .await?;
                let document = xml_values(&answer, "PolicyDocument")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                policies.push(self.parse_policy(&name, &document)?);
            }
            let attached = self
                .iam_query(&[
                    ("Action", "ListAttachedRolePolicies"),
                    ("RoleName", &role_name),
                ])
                .await?;
            for arn in xml_values(&attached, "PolicyArn") {
                let policy = self
                    .iam_query(&[("Action", "GetPolicy"), ("PolicyArn", &arn)])
                    .await?;
                let version = xml_values(&policy, "DefaultVersionId")
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "v1".into());
                let answer = self
                    .iam_query(&[
                        ("Action", "GetPolicyVersion"),
                        ("PolicyArn", &arn),
                        ("VersionId", &version),
                    ])
                    .await?;
                let document = xml_values(&answer, "Document")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                policies.push(self.parse_policy(&arn, &document)?);
            }
            functions.push((
                resource.logical_id.clone(),
                resource.physical_id.clone(),
                role_arn,
                policies,
            ));
        }
        if let Some(place) = place {
            let mut deployed = self.deployed.lock().unwrap_or_else(|e| e.into_inner());
            deployed.push(DeployedRoles { functions, place });
        }
        Ok(())
    }

    /// A policy document from IAM: URL-encoded inside the XML, as AWS answers it.
    fn parse_policy(&self, name: &str, document: &str) -> Result<iam::Policy> {
        let text = if document.trim_start().starts_with('{') {
            document.to_string()
        } else {
            url_decode(document)
        };
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| self.step_failed("read role policies", format!("{name}: {e}: {text}")))?;
        iam::Policy::parse(name, &json)
            .map_err(|e| self.step_failed("read role policies", e.to_string()))
    }

    /// Every AWS request each function of every stack deployed here made so far (their
    /// `aws call` lines), checked against its role, plus fakecloud's audited denials.
    pub fn iam_report(&self) -> iam::Report {
        let mut report = iam::Report::default();
        let files = self.function_log_files();
        let deployed = self.deployed.lock().unwrap_or_else(|e| e.into_inner());
        for stack in deployed.iter() {
            for (logical, physical, role, policies) in &stack.functions {
                let calls: Vec<iam::Call> = files
                    .iter()
                    .filter(|(name, _)| name == physical)
                    .flat_map(|(_, path)| {
                        std::fs::read_to_string(path)
                            .unwrap_or_default()
                            .lines()
                            .filter_map(iam::parse_call)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                report.add(logical, role, policies, &calls, &stack.place);
            }
        }
        let (failing, accepted) = iam::triage_denials(iam::fakecloud_denials(
            &std::fs::read_to_string(self.log_path()).unwrap_or_default(),
        ));
        report.fakecloud_denials = failing;
        report.accepted_fakecloud_denials = accepted;
        report
    }

    /// Write the IAM coverage report (`target/iam-coverage/<suite>/<test>.json`) and fail,
    /// naming function, action and resource, on every request
    /// a function's role does not allow, every request that cannot be mapped to IAM
    /// actions, and every denial fakecloud audited. What depends on conditions the
    /// requests do not show is printed (and in the report), not failed.
    pub fn assert_iam_coverage(&self) {
        assert_coverage(self.iam_report());
    }

    /// Run [`Self::assert_iam_coverage`] when this local cloud is dropped at the end of a
    /// test that did not already fail (the e2e fixtures turn it on for every test).
    pub fn check_iam_on_drop(&self) {
        self.check_iam_on_drop
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
        // Read the logs before stopping: the check fails the test, and stopping first
        // keeps nothing running while it unwinds.
        let check = self
            .check_iam_on_drop
            .load(std::sync::atomic::Ordering::Relaxed)
            && !std::thread::panicking();
        let report = check.then(|| self.iam_report());
        self.stop();
        if let Some(report) = report {
            assert_coverage(report);
        }
    }
}

/// See [`LocalCloud::assert_iam_coverage`].
fn assert_coverage(report: iam::Report) {
    let path = write_coverage_report(&report);
    let unresolved = report.unresolved();
    if !unresolved.is_empty() {
        eprintln!(
            "[iam] allowed only if conditions or resources the requests do not show hold:\n  {}",
            unresolved.join("\n  ")
        );
    }
    for accepted in &report.accepted_fakecloud_denials {
        eprintln!("[iam] {accepted}");
    }
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "IAM coverage: {} request(s) the functions' roles do not allow (report: {}):\n  {}",
        failures.len(),
        path.display(),
        failures.join("\n  ")
    );
    let checked: usize = report.functions.values().map(|f| f.checked.len()).sum();
    eprintln!(
        "[iam] {checked} distinct authorisations of {} functions allowed (report: {})",
        report.functions.len(),
        path.display()
    );
}

/// Write the coverage report of the test running now to
/// `target/iam-coverage/<suite>/<test>.json` (a second report of the same test in one
/// process gets `#2`, ...); returns its path. One file per test, so tests that run side by
/// side, each in its own process, never write the same file.
fn write_coverage_report(report: &iam::Report) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "suite".into());
    // Test binaries are named `<suite>-<hash>`.
    let suite = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    let dir = target.join("iam-coverage").join(suite);
    let _ = std::fs::create_dir_all(&dir);
    // nextest runs each test as `<binary> <test path> --exact`; under `cargo test` the
    // thread carries the test's name.
    let test = std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map(str::to_string)
        .or_else(|| {
            let args: Vec<String> = std::env::args().collect();
            args.iter().skip(1).find(|a| !a.starts_with('-')).cloned()
        })
        .unwrap_or_else(|| "test".into())
        .replace("::", "-");
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = match WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => dir.join(format!("{test}.json")),
        n => dir.join(format!("{test}#{}.json", n + 1)),
    };
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(report).unwrap_or_default(),
    );
    path
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of every `<tag>...</tag>` in an XML answer, with the XML entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v))
        .map(|v| {
            v.replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deploy_logs_its_aws_calls() {
        assert_eq!(metered(None), "info,orchestrator::metering=debug");
        assert_eq!(metered(Some("warn")), "warn,orchestrator::metering=debug");
        assert_eq!(metered(Some("debug")), "debug");
        assert_eq!(
            metered(Some("info,orchestrator::metering=debug")),
            "info,orchestrator::metering=debug"
        );
    }

    #[test]
    fn iam_answers_are_read_from_their_xml() {
        let xml = "<GetRolePolicyResult><PolicyName>p</PolicyName><PolicyDocument>%7B%22a%22%3A1%7D</PolicyDocument></GetRolePolicyResult>\
            <ListRolePoliciesResult><PolicyNames><member>a&amp;b</member><member>c</member></PolicyNames></ListRolePoliciesResult>";
        assert_eq!(xml_values(xml, "member"), ["a&b", "c"]);
        assert_eq!(
            url_decode(&xml_values(xml, "PolicyDocument")[0]),
            r#"{"a":1}"#
        );
        assert_eq!(form_encode("a b/c"), "a%20b%2Fc");
    }
}
