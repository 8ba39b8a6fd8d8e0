//! The native Lambda runner: what fakecloud believes is a container CLI.
//!
//! fakecloud runs Lambda functions only through `docker`/`podman` (see LOCAL-CLOUD.md). With
//! `FAKECLOUD_CONTAINER_CLI` pointing at `lambda-runner`, its Lambda backend calls these
//! verbs, which we answer without any container:
//!
//! | verb | what fakecloud means | what we do |
//! |---|---|---|
//! | `info`, `version` | is the runtime alive? | yes |
//! | `create [-e K=V]... IMAGE HANDLER` | make a container | a state folder with the env |
//! | `cp DIR/. ID:/var/task` | copy the code in | copy into the state folder |
//! | `start ID` | boot | spawn `lambda-runner serve ID`, detached |
//! | `port ID 8080` | where is the RIE? | `127.0.0.1:<port>` |
//! | `logs --tail N ID` | log tail | the function's stdout/stderr |
//! | `rm -f ID` | remove | stop the process group, delete the folder |
//!
//! `serve` is the runtime interface emulator: it accepts fakecloud's invocations on
//! `/2015-03-31/functions/function/invocations` and serves the Lambda Runtime API
//! (`/2018-06-01/runtime/...`) on the same port to the function's own `bootstrap`, run as
//! a native child process. Only `provided.*` (custom runtime) images are run; anything else
//! (EC2, ECS, RDS also probe the CLI) is refused, so those services fall back to their
//! metadata-only emulation.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, oneshot};

/// Environment variable naming the folder that holds one sub-folder per "container".
pub const STATE_DIR_ENV: &str = "LAMBDA_RUNNER_STATE_DIR";
/// Image prefix of custom-runtime Lambda functions: the only kind we run natively.
const PROVIDED_IMAGE_PREFIX: &str = "public.ecr.aws/lambda/provided";
/// How long `start` waits for the server to publish its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{STATE_DIR_ENV} is not set; the local-cloud harness sets it when it starts fakecloud")]
    NoStateDir,
    #[error("usage: {0}")]
    Usage(String),
    #[error(
        "lambda-runner runs only custom-runtime Lambda functions ({PROVIDED_IMAGE_PREFIX}:*) natively; refusing image {0:?}"
    )]
    UnsupportedImage(String),
    #[error("no such container {0}")]
    NoSuchContainer(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to run a function without its execution role's credentials ({0}): on AWS a function always calls with its role's session, and fakecloud mints one per instance (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
    )]
    NoRoleCredentials(String),
    #[error("container {0} did not publish its port within {1:?}; see its log")]
    StartTimeout(String, Duration),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunnerError {
    let context = context.into();
    move |source| RunnerError::Io { context, source }
}

/// What `create` recorded about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    pub handler: Option<String>,
    pub env: Vec<(String, String)>,
    /// The process that created us (fakecloud): when it is gone, the server stops too, so an
    /// emulator that crashed or was killed leaves no function processes behind.
    pub owner_pid: u32,
}

/// One container's folder and the files in it.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
}

impl Container {
    fn spec_path(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn task_dir(&self) -> PathBuf {
        self.dir.join("task")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }
    fn port_path(&self) -> PathBuf {
        self.dir.join("port")
    }
    fn pid_path(&self) -> PathBuf {
        self.dir.join("pid")
    }

    pub fn spec(&self) -> Result<ContainerSpec, RunnerError> {
        let text = std::fs::read_to_string(self.spec_path()).map_err(io("read spec.json"))?;
        serde_json::from_str(&text).map_err(|e| RunnerError::Io {
            context: "parse spec.json".into(),
            source: std::io::Error::other(e),
        })
    }

    pub fn port(&self) -> Option<u16> {
        std::fs::read_to_string(self.port_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

pub fn state_dir() -> Result<PathBuf, RunnerError> {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .ok_or(RunnerError::NoStateDir)
}

fn container(id: &str) -> Result<Container, RunnerError> {
    let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let dir = state_dir()?.join(id);
    if !valid || !dir.is_dir() || dir.join(REMOVED).exists() {
        return Err(RunnerError::NoSuchContainer(id.to_string()));
    }
    Ok(Container { dir })
}

/// Every container folder under the state dir (the harness uses it to stop leftovers and to
/// read function logs).
pub fn containers(state_dir: &Path) -> Vec<Container> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("spec.json").is_file())
        .map(|e| Container { dir: e.path() })
        .collect()
}

/// What `create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub image: String,
    pub handler: Option<String>,
    pub env: Vec<(String, String)>,
}

/// Parse `create` arguments: docker's flags that take a value are skipped by name, the
/// first positional is the image, the second the handler.
pub fn parse_create(
    args: &[String],
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<CreateRequest, RunnerError> {
    const FLAGS_WITH_VALUE: &[&str] = &[
        "-p",
        "--publish",
        "--label",
        "--add-host",
        "--tmpfs",
        "--name",
        "--network",
        "--memory",
        "--cpus",
        "--entrypoint",
        "-v",
        "--volume",
        "--user",
        "-u",
        "-w",
        "--workdir",
        "--platform",
    ];
    let mut env = Vec::new();
    let mut positionals = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-e" || arg == "--env" {
            let pair = iter
                .next()
                .ok_or_else(|| RunnerError::Usage("-e needs KEY=VALUE or KEY".into()))?;
            match pair.split_once('=') {
                Some((k, v)) => env.push((k.to_string(), v.to_string())),
                // `-e KEY` copies the value from the caller's environment (fakecloud passes
                // credentials this way so they stay out of argv).
                None => {
                    if let Some(v) = lookup_env(pair) {
                        env.push((pair.clone(), v));
                    }
                }
            }
        } else if FLAGS_WITH_VALUE.contains(&arg.as_str()) {
            iter.next();
        } else if arg.starts_with('-') {
            // A boolean flag or `--flag=value`: nothing for us to keep.
        } else {
            positionals.push(arg.clone());
        }
    }
    let mut positionals = positionals.into_iter();
    let image = positionals
        .next()
        .ok_or_else(|| RunnerError::Usage("create needs an image".into()))?;
    if !image.starts_with(PROVIDED_IMAGE_PREFIX) {
        return Err(RunnerError::UnsupportedImage(image));
    }
    Ok(CreateRequest {
        image,
        handler: positionals.next(),
        env,
    })
}

/// A function must call AWS as its execution role, as on AWS: fakecloud passes the role's
/// session credentials it minted for this instance as `-e AWS_ACCESS_KEY_ID` (and the
/// secret and session token) with the values in our environment
/// (`fakecloud-lambda/src/runtime/docker.rs`, `docker_env_args`; minted in
/// `runtime/facade.rs`). Without them, or with a `test*` key (fakecloud's root identity,
/// which bypasses IAM enforcement, e.g. the harness's own key inherited from fakecloud's
/// environment), the function's calls would not be checked against its role: refuse.
pub fn require_role_credentials(env: &[(String, String)]) -> Result<(), RunnerError> {
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let key = value("AWS_ACCESS_KEY_ID")
        .ok_or_else(|| RunnerError::NoRoleCredentials("no AWS_ACCESS_KEY_ID".into()))?;
    if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("test")) {
        return Err(RunnerError::NoRoleCredentials(format!(
            "AWS_ACCESS_KEY_ID {key} is fakecloud's root bypass identity"
        )));
    }
    for required in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if value(required).is_none() {
            return Err(RunnerError::NoRoleCredentials(format!("no {required}")));
        }
    }
    Ok(())
}

/// The function process talks to fakecloud on the host, not through a container alias.
pub fn rewrite_host_aliases(value: &str) -> String {
    value
        .replace("host.docker.internal", "127.0.0.1")
        .replace("host.containers.internal", "127.0.0.1")
}

pub fn create(args: &[String]) -> Result<String, RunnerError> {
    let CreateRequest {
        image,
        handler,
        env,
    } = parse_create(args, |k| std::env::var(k).ok())?;
    require_role_credentials(&env)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let id = format!("lr{:x}{:x}", std::process::id(), nanos);
    let container = Container {
        dir: state_dir()?.join(&id),
    };
    std::fs::create_dir_all(container.task_dir()).map_err(io("create container folder"))?;
    let spec = ContainerSpec {
        image,
        handler,
        env: env
            .into_iter()
            .map(|(k, v)| (k, rewrite_host_aliases(&v)))
            .collect(),
        owner_pid: std::os::unix::process::parent_id(),
    };
    let json = serde_json::to_vec_pretty(&spec)
        .map_err(|e| io("encode spec")(std::io::Error::other(e)))?;
    std::fs::write(container.spec_path(), json).map_err(io("write spec.json"))?;
    Ok(id)
}

/// `cp SRC ID:DEST`: `/var/task` is where the code goes. `/var/runtime` gets the same zip
/// again for custom runtimes, and `/opt` the layers; we keep only the code (no layers used).
pub fn copy(src: &str, dest: &str) -> Result<(), RunnerError> {
    let (id, target) = dest
        .split_once(':')
        .ok_or_else(|| RunnerError::Usage(format!("cp SRC ID:PATH, got {dest:?}")))?;
    let container = container(id)?;
    if target != "/var/task" {
        return Ok(());
    }
    let src = Path::new(src.trim_end_matches("/.").trim_end_matches('.'));
    copy_tree(src, &container.task_dir())
}

fn copy_tree(src: &Path, dest: &Path) -> Result<(), RunnerError> {
    std::fs::create_dir_all(dest).map_err(io(format!("create {}", dest.display())))?;
    for entry in std::fs::read_dir(src).map_err(io(format!("read {}", src.display())))? {
        let entry = entry.map_err(io("read dir entry"))?;
        let to = dest.join(entry.file_name());
        if entry.file_type().map_err(io("stat"))?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to).map_err(io(format!("copy to {}", to.display())))?;
        }
    }
    Ok(())
}

/// `start ID`: spawn the server detached (own process group, output to the log file) and
/// wait until it has published its port, so fakecloud's readiness probe finds it.
pub fn start(id: &str, runner_exe: &Path) -> Result<(), RunnerError> {
    use std::os::unix::process::CommandExt;
    let container = container(id)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(container.log_path())
        .map_err(io("open log"))?;
    let log_err = log.try_clone().map_err(io("clone log handle"))?;
    let child = std::process::Command::new(runner_exe)
        .arg("serve")
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(io("spawn lambda-runner serve"))?;
    std::fs::write(container.pid_path(), child.id().to_string()).map_err(io("write pid"))?;
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if container.port().is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(RunnerError::StartTimeout(id.to_string(), START_TIMEOUT))
}

pub fn port(id: &str) -> Result<String, RunnerError> {
    let container = container(id)?;
    let port = container
        .port()
        .ok_or_else(|| RunnerError::Usage(format!("container {id} is not started")))?;
    Ok(format!("127.0.0.1:{port}"))
}

pub fn logs(id: &str, tail: usize) -> Result<String, RunnerError> {
    let container = container(id)?;
    let text = std::fs::read_to_string(container.log_path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(tail);
    Ok(lines[from..].join("\n"))
}

/// Stop a container's process group (server and function) and delete its code and
/// process files. Its spec and log stay (marked `removed`): what a retired function
/// instance did still counts for the harness's log assertions and IAM coverage check, as
/// a retired Lambda's logs stay in CloudWatch Logs.
pub fn remove(id: &str) -> Result<(), RunnerError> {
    retire(&container(id)?)
}

fn retire(container: &Container) -> Result<(), RunnerError> {
    stop(container);
    std::fs::write(container.dir.join(REMOVED), b"").map_err(io("mark container removed"))?;
    for file in [container.pid_path(), container.port_path()] {
        let _ = std::fs::remove_file(file);
    }
    match std::fs::remove_dir_all(container.task_dir()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove container code")(e)),
        _ => Ok(()),
    }
}

/// The marker file of a removed container.
const REMOVED: &str = "removed";

/// Send SIGTERM, then SIGKILL, to a container's process group. Harmless when it is gone.
pub fn stop(container: &Container) {
    let Some(pid) = container.pid() else { return };
    for signal in ["-TERM", "-KILL"] {
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The server: runtime interface emulator + Lambda Runtime API.

type Body = Full<Bytes>;

struct Invocation {
    id: String,
    payload: Bytes,
    respond: oneshot::Sender<Bytes>,
}

/// A Lambda Runtime API for one function: invocations are queued by [`Server::invoke`] and
/// handed to the function's runtime, which polls `next` and posts the answer. The runner
/// serves it to `bootstrap` processes; `make bench` serves it to the binaries it measures.
pub struct Server {
    function_arn: String,
    queue: Mutex<VecDeque<Invocation>>,
    /// Woken for every queued invocation: the runtime's `next` long-poll waits on it.
    queued: Notify,
    /// Woken for every invocation too, so a crashed `bootstrap` is restarted when work arrives.
    work_arrived: Notify,
    /// Invocations handed to the runtime and not yet answered, by request id, with when.
    in_flight: Mutex<HashMap<String, (oneshot::Sender<Bytes>, Instant)>>,
    next_id: std::sync::atomic::AtomicU64,
    /// When the runtime first asked for work: the end of its initialisation.
    first_poll: std::sync::OnceLock<Instant>,
    /// Print Lambda's `REPORT` line per invocation (into the function's log, where
    /// `make bench` reads it); off for the bench's own measurements.
    reports: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("function_arn", &self.function_arn)
            .finish_non_exhaustive()
    }
}

fn error_envelope(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn read_body(request: Request<Incoming>) -> Result<(Method, String, Bytes), Response<Body>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match request.into_body().collect().await {
        Ok(collected) => Ok((method, path, collected.to_bytes())),
        Err(e) => Err(reply(
            StatusCode::BAD_REQUEST,
            format!("unreadable body: {e}"),
        )),
    }
}

impl Server {
    /// The emulator endpoint fakecloud invokes.
    async fn route_invoke(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        match read_body(request).await {
            Ok((Method::POST, path, body))
                if path == "/2015-03-31/functions/function/invocations" =>
            {
                self.invoke(body).await
            }
            Ok(_) => reply(StatusCode::NOT_FOUND, "unknown route"),
            Err(response) => response,
        }
    }

    /// The Lambda Runtime API the function's `bootstrap` polls.
    async fn route_runtime(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let (method, path, body) = match read_body(request).await {
            Ok(parts) => parts,
            Err(response) => return response,
        };
        let Some(route) = path.strip_prefix("/2018-06-01/runtime/") else {
            return reply(StatusCode::NOT_FOUND, "unknown route");
        };
        match (method, route) {
            (Method::GET, "invocation/next") => self.next_invocation().await,
            (Method::POST, "init/error") => {
                eprintln!(
                    "lambda-runner: function reported an init error: {}",
                    String::from_utf8_lossy(&body)
                );
                self.fail_in_flight(body).await;
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            }
            (Method::POST, rest) => match rest
                .strip_prefix("invocation/")
                .and_then(|r| r.split_once('/'))
            {
                Some((id, "response" | "error")) => self.complete(id, body).await,
                _ => reply(StatusCode::NOT_FOUND, "unknown runtime route"),
            },
            _ => reply(StatusCode::NOT_FOUND, "unknown runtime route"),
        }
    }

    pub fn new(function_arn: String) -> Self {
        Self {
            function_arn,
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            work_arrived: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            first_poll: std::sync::OnceLock::new(),
            reports: true,
        }
    }

    /// The same, without `REPORT` lines.
    pub fn without_reports(function_arn: String) -> Self {
        Self {
            reports: false,
            ..Self::new(function_arn)
        }
    }

    /// Serve the Runtime API on `listener` (a runtime's `AWS_LAMBDA_RUNTIME_API`) until the
    /// returned task is aborted.
    pub fn serve_runtime(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        serve_http(listener, move |request| {
            server.clone().route_runtime(request)
        })
    }

    /// When the runtime first polled for work, if it has.
    pub fn first_poll(&self) -> Option<Instant> {
        self.first_poll.get().copied()
    }

    async fn invoke(&self, payload: Bytes) -> Response<Body> {
        match self.invoke_payload(payload).await {
            Some(body) => reply(StatusCode::OK, body),
            None => reply(
                StatusCode::OK,
                error_envelope("Runtime.ExitError", "the function exited before answering"),
            ),
        }
    }

    /// Queue one invocation and wait for the runtime's answer (the response or the error
    /// document); `None` when the runtime went away without answering.
    pub async fn invoke_payload(&self, payload: Bytes) -> Option<Bytes> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            std::process::id(),
            n & 0xffff,
            n
        );
        let (respond, answer) = oneshot::channel();
        self.queue.lock().await.push_back(Invocation {
            id,
            payload,
            respond,
        });
        self.queued.notify_one();
        self.work_arrived.notify_one();
        answer.await.ok()
    }

    async fn next_invocation(&self) -> Response<Body> {
        let _ = self.first_poll.set(Instant::now());
        let invocation = loop {
            if let Some(invocation) = self.queue.lock().await.pop_front() {
                break invocation;
            }
            self.queued.notified().await;
        };
        self.in_flight
            .lock()
            .await
            .insert(invocation.id.clone(), (invocation.respond, Instant::now()));
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() + 900_000)
            .unwrap_or_default();
        let mut response = reply(StatusCode::OK, invocation.payload);
        let headers = response.headers_mut();
        let pairs = [
            ("lambda-runtime-aws-request-id", invocation.id),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                self.function_arn.clone(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
            ),
        ];
        for (name, value) in pairs {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        response
    }

    async fn complete(&self, id: &str, body: Bytes) -> Response<Body> {
        match self.in_flight.lock().await.remove(id) {
            Some((respond, handed_out)) => {
                // Lambda's own REPORT line: what `make bench` sums as handler time.
                if self.reports {
                    eprintln!(
                        "lambda-runner: REPORT RequestId: {id} Duration: {:.2} ms",
                        handed_out.elapsed().as_secs_f64() * 1000.0
                    );
                }
                let _ = respond.send(body);
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            }
            None => reply(StatusCode::BAD_REQUEST, format!("unknown request id {id}")),
        }
    }

    /// Answer invocations no runtime has picked up: the runtime that should have is gone.
    async fn fail_queued(&self, body: Bytes) {
        for invocation in self.queue.lock().await.drain(..) {
            let _ = invocation.respond.send(body.clone());
        }
    }

    async fn fail_in_flight(&self, body: Bytes) {
        for (_, (respond, _)) in self.in_flight.lock().await.drain() {
            let _ = respond.send(body.clone());
        }
    }
}

/// Serve HTTP/1 on `listener` with `route` until the returned task is aborted; aborting it
/// drops every connection it accepted (and any request still waiting in them).
fn serve_http<F, Fut>(listener: tokio::net::TcpListener, route: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let route = route.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let route = route.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

pub async fn bind_loopback() -> Result<(tokio::net::TcpListener, u16), RunnerError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("bind a loopback port"))?;
    let port = listener.local_addr().map_err(io("local addr"))?.port();
    Ok((listener, port))
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `serve ID`: run until the owner (fakecloud) is gone or we are signalled.
pub async fn serve(id: &str) -> Result<(), RunnerError> {
    let container = container(id)?;
    let spec = container.spec()?;
    let (listener, port) = bind_loopback().await?;

    let env: HashMap<String, String> = spec.env.iter().cloned().collect();
    let region = env
        .get("AWS_REGION")
        .cloned()
        .unwrap_or_else(|| "us-east-1".into());
    let name = env
        .get("AWS_LAMBDA_FUNCTION_NAME")
        .cloned()
        .unwrap_or_else(|| "function".into());
    let server = Arc::new(Server::new(format!(
        "arn:aws:lambda:{region}:000000000000:function:{name}"
    )));

    let invoke_server = server.clone();
    let endpoint = serve_http(listener, move |request| {
        invoke_server.clone().route_invoke(request)
    });
    // Publish the port only once the listener is bound (atomic rename: readers never see a
    // half-written file).
    let tmp = container.dir.join("port.tmp");
    std::fs::write(&tmp, port.to_string()).map_err(io("write port"))?;
    std::fs::rename(&tmp, container.port_path()).map_err(io("publish port"))?;
    eprintln!("lambda-runner: {name} listening on 127.0.0.1:{port}");

    let owner = spec.owner_pid;
    let folder = container.dir.clone();
    let mut spec = spec;
    let tls = match spec
        .env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v.clone())
    {
        Some(upstream) if upstream.starts_with("http://") => {
            let (listener, proxy_port) = bind_loopback().await?;
            for (key, value) in spec.env.iter_mut() {
                if key == "AWS_ENDPOINT_URL" {
                    *value = format!("http://127.0.0.1:{proxy_port}");
                }
            }
            Some(serve_tls_stand_in(listener, upstream))
        }
        _ => None,
    };
    let supervisor = tokio::spawn(supervise(server, container, spec));
    // Stop with fakecloud, or when our folder is removed: never outlive the emulator.
    let owner_gone = async {
        while process_alive(owner) && folder.is_dir() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("install SIGTERM handler"))?;
    tokio::select! {
        _ = owner_gone => eprintln!("lambda-runner: fakecloud is gone; stopping"),
        _ = terminate.recv() => eprintln!("lambda-runner: terminated"),
    }
    supervisor.abort();
    endpoint.abort();
    if let Some(tls) = tls {
        tls.abort();
    }
    Ok(())
}

/// The function's AWS endpoint, as if reached over TLS. On AWS every SDK request goes over
/// HTTPS, so `aws:SecureTransport` is true, and the stack's bucket policies deny anything
/// else (`TlsOnly`). fakecloud listens on plain HTTP and reads the transport from
/// `X-Forwarded-Proto` (`is_secure_transport`, fakecloud-core 0.51.0 dispatch.rs), as behind
/// a TLS-terminating proxy; this is that proxy: it forwards each request unchanged (Host
/// included, so the SigV4 signature still verifies) with `X-Forwarded-Proto: https`.
fn serve_tls_stand_in(
    listener: tokio::net::TcpListener,
    upstream: String,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    serve_http(listener, move |request: Request<Incoming>| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            match forward(&client, &upstream, request).await {
                Ok(response) => response,
                Err(message) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Full::new(Bytes::from(message)))
                    .unwrap_or_default(),
            }
        }
    })
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, String> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("read request: {e}"))?
        .to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method =
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut outgoing = client.request(method, format!("{}{path}", upstream.trim_end_matches('/')));
    // The body's framing is the client's own (it sets the same length again).
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = outgoing
        .header("x-forwarded-proto", "https")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("forward to {upstream}: {e}"))?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "transfer-encoding" | "connection") {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| format!("read answer: {e}"))?;
    response.body(Full::new(bytes)).map_err(|e| e.to_string())
}

/// Keep one `bootstrap` process running while there is work: start it with a Runtime API
/// endpoint of its own; when it exits, close that endpoint (so no request of the dead
/// process can take the next invocation), fail what it was doing, and start a new one when
/// the next invocation arrives.
async fn supervise(server: Arc<Server>, container: Container, spec: ContainerSpec) {
    let task_dir = container.task_dir();
    let bootstrap = task_dir.join("bootstrap");
    loop {
        let outcome = match bind_loopback().await {
            Err(e) => format!("cannot open the Runtime API: {e}"),
            Ok((listener, runtime_port)) => {
                let runtime_api = server.serve_runtime(listener);
                let mut command = tokio::process::Command::new(&bootstrap);
                command
                    .current_dir(&task_dir)
                    .env_clear()
                    .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env(
                        "AWS_LAMBDA_RUNTIME_API",
                        format!("127.0.0.1:{runtime_port}"),
                    )
                    .env("LAMBDA_TASK_ROOT", &task_dir)
                    .env(
                        "_HANDLER",
                        spec.handler.clone().unwrap_or_else(|| "bootstrap".into()),
                    )
                    .kill_on_drop(true);
                let outcome = match command.spawn() {
                    Ok(mut child) => match child.wait().await {
                        Ok(status) => format!("bootstrap exited with {status}"),
                        Err(e) => format!("waiting for bootstrap failed: {e}"),
                    },
                    Err(e) => format!("cannot start {}: {e}", bootstrap.display()),
                };
                runtime_api.abort();
                outcome
            }
        };
        eprintln!("lambda-runner: {outcome}");
        // The function's own last words (it logs to the same file) make the error useful.
        let tail = std::fs::read_to_string(container.log_path())
            .map(|text| {
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with("lambda-runner:"))
                    .collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            })
            .unwrap_or_default();
        let envelope = error_envelope(
            "Runtime.ExitError",
            &format!("{outcome}; last output:\n{tail}"),
        );
        server.fail_in_flight(envelope.clone()).await;
        server.fail_queued(envelope).await;
        server.work_arrived.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_keeps_env_image_and_handler_and_skips_docker_flags() {
        let CreateRequest {
            image,
            handler,
            env,
        } = parse_create(
            &args(&[
                "-p",
                ":8080",
                "--label",
                "fakecloud-lambda=api",
                "--add-host",
                "host.docker.internal:172.17.0.1",
                "-e",
                "TABLE_NAME=t",
                "-e",
                "AWS_SECRET_ACCESS_KEY",
                "--tmpfs",
                "/tmp:size=512m,exec",
                "public.ecr.aws/lambda/provided:al2023",
                "bootstrap",
            ]),
            |key| (key == "AWS_SECRET_ACCESS_KEY").then(|| "s3cr3t".to_string()),
        )
        .unwrap();
        assert_eq!(image, "public.ecr.aws/lambda/provided:al2023");
        assert_eq!(handler.as_deref(), Some("bootstrap"));
        assert_eq!(
            env,
            vec![
                ("TABLE_NAME".to_string(), "t".to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t".to_string()),
            ]
        );
    }

    #[test]
    fn a_removed_container_keeps_its_spec_and_log_for_the_harness() {
        let state = tempfile::tempdir().unwrap();
        let container = Container {
            dir: state.path().join("lr1"),
        };
        std::fs::create_dir_all(container.task_dir()).unwrap();
        std::fs::write(container.task_dir().join("bootstrap"), b"code").unwrap();
        std::fs::write(container.spec_path(), b"{}").unwrap();
        std::fs::write(container.log_path(), b"aws call\n").unwrap();
        std::fs::write(container.port_path(), b"1").unwrap();
        retire(&container).unwrap();
        assert!(!container.task_dir().exists());
        assert_eq!(container.port(), None);
        assert_eq!(std::fs::read(container.log_path()).unwrap(), b"aws call\n");
        assert_eq!(containers(state.path()).len(), 1, "its log is still listed");
    }

    #[test]
    fn functions_run_only_with_role_session_credentials() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let session = [
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
        ];
        require_role_credentials(&env(&session)).unwrap();
        let bypass = [
            ("AWS_ACCESS_KEY_ID", "TESTLOCALCLOUD000000"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
        ];
        let err = require_role_credentials(&env(&bypass)).unwrap_err();
        assert!(err.to_string().contains("root bypass"), "{err}");
        let err = require_role_credentials(&env(&session[..2])).unwrap_err();
        assert!(err.to_string().contains("AWS_SESSION_TOKEN"), "{err}");
        assert!(require_role_credentials(&[]).is_err());
    }

    #[test]
    fn non_lambda_images_are_refused() {
        let err = parse_create(&args(&["-p", ":80", "amazonlinux:2023"]), |_| None).unwrap_err();
        assert!(matches!(err, RunnerError::UnsupportedImage(_)), "{err}");
        let err = parse_create(
            &args(&["public.ecr.aws/lambda/python:3.12", "app.handler"]),
            |_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("custom-runtime"), "{err}");
    }

    #[test]
    fn container_aliases_point_back_at_the_host() {
        assert_eq!(
            rewrite_host_aliases("http://host.docker.internal:4566"),
            "http://127.0.0.1:4566"
        );
    }
}
