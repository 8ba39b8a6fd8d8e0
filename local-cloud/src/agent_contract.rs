//! What the real SSM agent does with a Run Command invocation of one of the stack's
//! documents (`schemaVersion: 2.2`, one `aws:runShellScript` step), as far as the
//! orchestrator relies on it. The stand-in ([`crate::agent`]) does exactly this; each rule
//! names the file of amazon-ssm-agent it was read from (github.com/aws/amazon-ssm-agent,
//! commit 1c217c89, release 3.3.1142.0; paths below are relative to its `agent/` folder).
//!
//! Where the local cloud cannot do what the agent does, the rule says so, and where a
//! behaviour is not in the agent's source (it is the SSM service's), it says that it is an
//! assumption and where it comes from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shell script plugin's name; `aws:runShellScript` in a document's `action`
/// (`appconfig/constants.go`, `PluginNameAwsRunShellScript`).
pub const RUN_SHELL_SCRIPT: &str = "aws:runShellScript";
/// The file the plugin writes a step's commands into (`plugins/runscript/runshellscript.go`,
/// `shellScriptName`; `appconfig/constants_unix.go`, `RunCommandScriptName`).
pub const SCRIPT_NAME: &str = "_script.sh";
/// The stream file names, which are also the last element of their S3 keys
/// (`framework/processor/executer/iohandler/iohandler.go`, `DefaultOutputConfig`).
pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";
/// `framework/processor/executer/iohandler/iohandler.go`, `DefaultOutputConfig`:
/// `MaxStdoutLength` 24000 and `OutputTruncatedSuffix`.
pub const MAX_STDOUT_CONTENT: usize = 24_000;
/// The agent cuts stderr for the service at 24,000 too (`framework/runpluginutil/
/// runpluginutil.go` uses `MaxStdoutLength` for both streams), but `GetCommandInvocation`'s
/// `StandardErrorContent` is documented as "the first 8,000 characters written by the plugin
/// to stderr" (SSM API reference): the service cuts further. Assumption: it keeps the first
/// 8,000 characters with the agent's suffix, the same way.
pub const MAX_STDERR_CONTENT: usize = 8_000;
pub const TRUNCATED_SUFFIX: &str = "--output truncated--";

/// `plugins/pluginutil/pluginutil.go`: `defaultExecutionTimeoutInSeconds`,
/// `minExecutionTimeoutInSeconds`, `maxExecutionTimeoutInSeconds`.
pub const DEFAULT_EXECUTION_TIMEOUT_SECS: u64 = 3600;
const MIN_EXECUTION_TIMEOUT_SECS: i64 = 5;
const MAX_EXECUTION_TIMEOUT_SECS: i64 = 172_800;

/// `appconfig/constants_unix.go`: `CommandStoppedPreemptivelyExitCode` (128 + SIGKILL), the
/// exit code the agent reports for a step it killed at its execution timeout.
pub const STOPPED_PREEMPTIVELY_EXIT_CODE: i32 = 137;
/// `appconfig/constants_unix.go`: `RebootExitCode`: the step asks for a reboot.
pub const REBOOT_EXIT_CODE: i32 = 194;
/// `contracts/model.go`: `ExitWithSuccess` / `ExitWithFailure`: end the document here.
pub const EXIT_WITH_SUCCESS: i32 = 168;
pub const EXIT_WITH_FAILURE: i32 = 169;

/// The PATH of a process started by systemd, which the agent's own environment (and so the
/// script's, `executers/executers.go`, `prepareEnvironment` starts from `os.Environ()`)
/// carries. Assumption: the agent unit on Amazon Linux 2023 sets no PATH of its own.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One step of a document, as the agent reads it from `mainSteps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The plugin: `aws:runShellScript`.
    pub action: String,
    /// The step's `name`, which the agent uses as the plugin id and in the S3 key.
    pub name: String,
    /// `inputs.timeoutSeconds` as written (a string in our documents), if any.
    pub timeout_seconds: Option<String>,
    /// `inputs.workingDirectory`, if any.
    pub working_directory: Option<String>,
}

impl Step {
    /// The one step of `document` (its name without the stack prefix, e.g. `DbReport`) as
    /// `template.yaml` deploys it: the resource `<document>Document`'s `Content.mainSteps`.
    /// Read from the template, not assumed, so that a renamed step or another plugin changes
    /// what the stand-in does exactly as it would change what the agent does. Only what the
    /// generated block writes is understood (one step, scalar inputs); anything else is an
    /// error, so the stand-in never guesses.
    pub fn from_template(template: &str, document: &str) -> Result<Self, String> {
        let header = format!("  {document}Document:");
        let start = template
            .lines()
            .position(|l| l == header)
            .ok_or_else(|| format!("template.yaml has no resource {document}Document"))?;
        let body: Vec<&str> = template
            .lines()
            .skip(start + 1)
            .take_while(|l| l.is_empty() || l.starts_with("   "))
            .collect();
        let schema = body
            .iter()
            .find_map(|l| l.trim().strip_prefix("schemaVersion:"))
            .map(unquote);
        if schema.as_deref() != Some("2.2") {
            return Err(format!(
                "{document}: schemaVersion {schema:?}; the stand-in knows the 2.2 layout only"
            ));
        }
        let actions: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("- action:"))
            .map(|(i, _)| i)
            .collect();
        let [first] = actions[..] else {
            return Err(format!(
                "{document}: {} steps in mainSteps; the stand-in runs documents of one step",
                actions.len()
            ));
        };
        let step_indent = body[first].find('-').unwrap_or_default() + 2;
        let field = |lines: &[&str], key: &str, indent: usize| {
            lines
                .iter()
                .filter(|l| l.len() > indent && l[..indent].trim().is_empty())
                .filter(|l| !l[indent..].starts_with(' '))
                .find_map(|l| l[indent..].strip_prefix(&format!("{key}:")))
                .map(unquote)
        };
        let action = unquote(
            body[first]
                .trim_start()
                .trim_start_matches("- action:")
                .trim(),
        );
        let rest = &body[first + 1..];
        let name = field(rest, "name", step_indent)
            .ok_or_else(|| format!("{document}: the step has no name"))?;
        let inputs = rest
            .iter()
            .position(|l| l.trim() == "inputs:")
            .map(|i| &rest[i + 1..])
            .unwrap_or_default();
        Ok(Self {
            action,
            name,
            timeout_seconds: field(inputs, "timeoutSeconds", step_indent + 2),
            working_directory: field(inputs, "workingDirectory", step_indent + 2),
        })
    }
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value)
        .to_string()
}

/// Go's `path.Join`: the non-empty elements joined by `/`, then cleaned (no empty, `.` or
/// resolvable `..` elements, no trailing slash); empty when every element is.
pub fn go_path_join(elements: &[&str]) -> String {
    let joined = elements
        .iter()
        .filter(|e| !e.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return String::new();
    }
    let rooted = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let cleaned = parts.join("/");
    match (rooted, cleaned.is_empty()) {
        (true, _) => format!("/{cleaned}"),
        (false, true) => ".".into(),
        (false, false) => cleaned,
    }
}

/// Where the agent uploads one stream of one invocation of a 2.2 document:
/// - `messageservice/utils/messageutil.go`, `ParseSendCommandMessage`: the document's prefix
///   is `path.Join(OutputS3KeyPrefix, commandId, instanceId)`;
/// - `framework/runpluginutil/runpluginutil.go`, `executePlugin`: `output.Init(pluginName,
///   stepName)`, where for a 2.2 step the step name is the step's `name`
///   (`getStepName`: the plugin id, set from `name` in `framework/docparser/docparser.go`);
/// - `framework/processor/executer/iohandler/iohandler.go`, `Init`: each of those is added
///   with `fileutil.BuildS3Path`, which drops every `:` (`fileutil/fileutil.go`,
///   `removeInvalidColon`): `aws:runShellScript` becomes `awsrunShellScript`;
/// - `iomodule/fileS3.go`, `Read`: the key is `BuildS3Path(prefix, "stdout" | "stderr")`.
pub fn output_key(
    prefix: &str,
    command_id: &str,
    instance_id: &str,
    plugin: &str,
    step: &str,
    stream: &str,
) -> String {
    let document = go_path_join(&[prefix, command_id, instance_id]);
    go_path_join(&[
        &document,
        &plugin.replace(':', ""),
        &step.replace(':', ""),
        stream,
    ])
}

/// The streams the agent uploads, in order: only those with something in them
/// (`framework/processor/executer/iohandler/iomodule/fileS3.go`, `Read`: the upload is
/// guarded by `fi.Size() > 0`). An empty stdout or stderr leaves no object, and a reader
/// of an absent key gets NoSuchKey, or AccessDenied without `s3:ListBucket`.
pub fn uploaded_streams<'a>(stdout: &'a str, stderr: &'a str) -> Vec<(&'static str, &'a str)> {
    [(STDOUT, stdout), (STDERR, stderr)]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .collect()
}

/// `plugins/pluginutil/pluginutil.go`, `ValidateExecutionTimeout` (with
/// `extractIntFromString`): a whole number of seconds, a float cut to its whole part, and
/// the 3,600 s default for a missing or unreadable value or one outside 5..=172,800.
pub fn execution_timeout(input: Option<&str>) -> Duration {
    let seconds = match input.map(str::trim) {
        Some(text) => text
            .parse::<i64>()
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(DEFAULT_EXECUTION_TIMEOUT_SECS as i64),
        None => DEFAULT_EXECUTION_TIMEOUT_SECS as i64,
    };
    let seconds = if (MIN_EXECUTION_TIMEOUT_SECS..=MAX_EXECUTION_TIMEOUT_SECS).contains(&seconds) {
        seconds as u64
    } else {
        DEFAULT_EXECUTION_TIMEOUT_SECS
    };
    Duration::from_secs(seconds)
}

/// The script file's content (`plugins/pluginutil/pluginutil.go`, `CreateScriptFile`): the
/// step's `runCommand` lines joined by newlines, with a final newline.
pub fn script_text(run_command: &[String]) -> String {
    format!("{}\n", run_command.join("\n"))
}

/// A step's outcome as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Success,
    Failed,
    TimedOut,
    /// Exit code 194: the agent reboots the instance and runs the step again.
    SuccessAndReboot,
}

impl StepStatus {
    /// The `CommandInvocationStatus` the service shows (and the status event carries).
    /// `SuccessAndReboot` is not one: the invocation stays `InProgress` across the reboot.
    pub fn as_invocation_status(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Failed => "Failed",
            Self::TimedOut => "TimedOut",
            Self::SuccessAndReboot => "InProgress",
        }
    }
}

/// The plugin's status for `exit_code` (`plugins/pluginutil/pluginutil_unix.go`,
/// `GetStatus`): 0 is Success, 194 SuccessAndReboot, 137 TimedOut (even when the script
/// itself exits 137: the agent cannot tell it from its own kill), anything else Failed.
fn plugin_status(exit_code: i32) -> StepStatus {
    match exit_code {
        0 => StepStatus::Success,
        REBOOT_EXIT_CODE => StepStatus::SuccessAndReboot,
        STOPPED_PREEMPTIVELY_EXIT_CODE => StepStatus::TimedOut,
        _ => StepStatus::Failed,
    }
}

/// The status reported for a step that ended with `exit_code`: the plugin's
/// ([`plugin_status`]), except that `framework/runpluginutil/runpluginutil.go` turns 168
/// into Success (169 stays Failed; both end the document, which has one step here).
pub fn step_status(exit_code: i32) -> StepStatus {
    match exit_code {
        EXIT_WITH_SUCCESS => StepStatus::Success,
        code => plugin_status(code),
    }
}

/// The `ResponseCode` the agent reports: the exit code, but 1 for a Failed step that exited
/// 0 (`contracts/aggregator.go`, `prepareRuntimeStatus`).
pub fn response_code(exit_code: i32) -> i32 {
    if step_status(exit_code) == StepStatus::Failed && exit_code == 0 {
        1
    } else {
        exit_code
    }
}

/// `plugins/pluginutil/pluginutil.go`, `StringPrefix`: the text whole when shorter than
/// `max`, else its beginning and the suffix, `max` long in all. (Go cuts bytes; this cuts at
/// the character boundary at or before the same byte.)
pub fn api_content(text: &str, max: usize) -> String {
    if text.len() < max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub(TRUNCATED_SUFFIX.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATED_SUFFIX}", &text[..cut])
}

/// What the step wrote and how it ended, after the agent's own additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The script's exit code; 137 when the agent killed it at its timeout, -1 when a
    /// signal ended it (Go's `WaitStatus.ExitStatus()`).
    pub exit_code: i32,
    pub stdout: String,
    /// The script's stderr, with the agent's line for a failed step appended.
    pub stderr: String,
    pub status: StepStatus,
    pub timed_out: bool,
}

/// How a script process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    /// The agent killed it at the execution timeout.
    TimedOut,
}

impl Finished {
    /// The agent's view of a script that wrote `stdout`/`stderr` and ended so.
    /// `executers/executers.go`, `ExecuteCommand`: at the timeout the process group is
    /// killed, the writers are cut off and the exit code is 137; a signal gives -1.
    /// `plugins/runscript/runscript.go`, `runCommands`: when the command returned an error
    /// (any non-zero end) and the status is not Cancelled, TimedOut or SuccessAndReboot, it
    /// calls `MarkAsFailed("failed to run commands: <error>")`, which writes that line into
    /// the stderr stream (`iohandler.go`, `AppendError`) while the writers are still open, so
    /// it is part of the uploaded stderr and of `StandardErrorContent`. No newline precedes
    /// it: `AppendError` adds one only when its copy of stderr, filled when the writers
    /// close, is non-empty, which it is not yet. The error text is Go's
    /// `ProcessState.String()`: `exit status N` or `signal: NAME`.
    pub fn new(ending: Ending, stdout: String, mut stderr: String) -> Self {
        let (exit_code, error) = match ending {
            Ending::Exited(0) => (0, None),
            Ending::Exited(code) => (code, Some(format!("exit status {code}"))),
            Ending::Signalled(signal) => (-1, Some(format!("signal: {}", signal_name(signal)))),
            Ending::TimedOut => (STOPPED_PREEMPTIVELY_EXIT_CODE, None),
        };
        if let Some(error) = error
            && plugin_status(exit_code) == StepStatus::Failed
        {
            stderr.push_str(&format!("failed to run commands: {error}"));
        }
        Self {
            exit_code,
            stdout,
            stderr,
            status: step_status(exit_code),
            timed_out: ending == Ending::TimedOut,
        }
    }

    /// `StandardErrorContent` of `GetCommandInvocation`: `runpluginutil.go` empties it for
    /// exit code 168, and the service keeps its beginning (see [`MAX_STDERR_CONTENT`]).
    pub fn stderr_content(&self) -> String {
        if self.exit_code == EXIT_WITH_SUCCESS {
            return String::new();
        }
        api_content(&self.stderr, MAX_STDERR_CONTENT)
    }
}

/// Go's names for the signals a script is likely to die of (`syscall` signal table).
/// Assumption for the others: Go prints `signal N`.
fn signal_name(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        other => format!("signal {other}"),
    }
}

/// Where and how to run one step.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The document's orchestration folder on the instance: the real agent's is
    /// `/var/lib/amazon/ssm/<instance>/document/orchestration/<command>`.
    pub orchestration_dir: PathBuf,
    pub step: String,
    pub run_command: Vec<String>,
    /// The process's working folder. The agent leaves it empty for Run Command without a
    /// `workingDirectory` (no `DefaultWorkingDir` in `messageservice/utils/messageutil.go`;
    /// `runscript.go` falls back to it), so the script inherits the agent's, which systemd
    /// makes `/`. The stand-in passes the instance's root.
    pub working_dir: PathBuf,
    /// The whole environment (the agent's plus its own variables; see [`SERVICE_PATH`]).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// The real host (`crate::hosts`) the script runs in, when the instance is one:
    /// `orchestration_dir` and `working_dir` are then paths under that host's root, and the
    /// shell runs inside it (its network namespace, its `/`), with `env` added to the host's
    /// own PATH and stand-ins.
    pub host: Option<HostRun>,
}

/// Where a script runs when its instance is a real host.
#[derive(Debug, Clone)]
pub struct HostRun {
    /// `local-cloud/hosts/ha-host`.
    pub ha_host: PathBuf,
    pub name: String,
    /// The host's `/` seen from outside.
    pub root: PathBuf,
}

impl ScriptRun {
    /// `plugins/runscript/runscript.go`, `runCommands`: the script goes to
    /// `<orchestration>/<step>/_script.sh` (folder made with execute access, file 0700:
    /// `appconfig/constants.go`, `ReadWriteExecuteAccess`).
    pub fn script_path(&self) -> PathBuf {
        self.orchestration_dir.join(&self.step).join(SCRIPT_NAME)
    }
}

/// Run one `aws:runShellScript` step the way the agent does:
/// - `plugins/runscript/runshellscript.go`: the command is `sh -c <script path>`. The
///   script has no `#!` line, so `sh` runs it itself. On Amazon Linux 2023 `/bin/sh` is
///   bash, which started as `sh` runs in POSIX mode; here `/bin/sh` may be another shell,
///   so the stand-in starts bash under the name `sh` to get the same shell in the same mode.
/// - `executers/executers_unix.go`: the shell leads its own process group, and at the
///   timeout the whole group gets SIGKILL (`killProcess`); `executers/executers.go`,
///   `ExecuteCommand`: stdin is empty, and without a timeout the agent waits for the
///   process and for the end of both output streams (Go's `exec.Cmd.Wait` with writers), so
///   a background process that keeps stdout open keeps the step running until the timeout.
pub async fn run_script(run: &ScriptRun) -> std::io::Result<Finished> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = run.script_path();
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)?;
    std::fs::write(&path, script_text(&run.run_command))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;

    let mut command = match &run.host {
        None => {
            let mut command = tokio::process::Command::new("bash");
            command
                .arg0("sh")
                .arg("-c")
                .arg(&path)
                .current_dir(&run.working_dir)
                .env_clear()
                .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            command
        }
        Some(host) => {
            // Inside the host: the same bash-as-sh, started in the working folder, with the
            // agent's variables (the host sets PATH to its own tools and stand-ins).
            let inside = |outside: &Path| {
                Path::new("/").join(outside.strip_prefix(&host.root).unwrap_or(outside))
            };
            let mut command = tokio::process::Command::new(&host.ha_host);
            command.arg("exec").arg(&host.name);
            for (key, value) in run.env.iter().filter(|(k, _)| k != "PATH") {
                command.arg(format!("{key}={value}"));
            }
            command
                .arg("--")
                .arg("bash")
                .arg("-c")
                .arg("cd \"$1\" && exec -a sh bash -c \"$2\"")
                .arg("ha-ssm-run")
                .arg(inside(&run.working_dir))
                .arg(inside(&path))
                .env_clear()
                .env("PATH", SERVICE_PATH);
            // Where ha-host finds the rootfs and keeps its hosts (outside the instance).
            for name in ["HOME", "HA_TOOLS_DIR", "HA_MYSQL_ROOTFS", "HA_HOSTS_DIR"] {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
            command
        }
    };
    let mut child = command
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut readers = [
        collect(child.stdout.take(), stdout.clone()),
        collect(child.stderr.take(), stderr.clone()),
    ];
    let finished = async {
        let status = child.wait().await?;
        for reader in readers.iter_mut() {
            let _ = reader.await;
        }
        Ok::<_, std::io::Error>(status)
    };
    let ending = match tokio::time::timeout(run.timeout, finished).await {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let status = status?;
            match (status.code(), status.signal()) {
                (Some(code), _) => Ending::Exited(code),
                (None, Some(signal)) => Ending::Signalled(signal),
                (None, None) => Ending::Exited(-1),
            }
        }
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            // The agent stops reading at once (its writers are cut off), whoever still
            // holds the pipes.
            for reader in &readers {
                reader.abort();
            }
            Ending::TimedOut
        }
    };
    let text = |buffer: &Arc<Mutex<Vec<u8>>>| {
        let bytes = buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(Finished::new(ending, text(&stdout), text(&stderr)))
}

/// Read a pipe to its end, keeping what came so far in `into`, so that the output written
/// before a timeout is there even though the reading never finishes.
fn collect<R>(pipe: Option<R>, into: Arc<Mutex<Vec<u8>>>) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// SIGKILL to the whole process group `pid` leads (`executers_unix.go`, `killProcess`).
fn kill_group(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streams_with_something_in_them_are_uploaded() {
        assert_eq!(
            uploaded_streams("{\"memberState\":\"ONLINE\"}\n", ""),
            vec![(STDOUT, "{\"memberState\":\"ONLINE\"}\n")]
        );
        assert_eq!(uploaded_streams("", "oops\n"), vec![(STDERR, "oops\n")]);
        assert_eq!(uploaded_streams("", ""), Vec::<(&str, &str)>::new());
        assert_eq!(uploaded_streams("a", "b").len(), 2);
    }

    #[test]
    fn keys_follow_the_agent_layout_for_2_2_documents() {
        let key = |prefix: &str, step: &str, stream: &str| {
            output_key(prefix, "cmd-1", "i-1", RUN_SHELL_SCRIPT, step, stream)
        };
        assert_eq!(
            key("commands/c-1", "run", STDOUT),
            "commands/c-1/cmd-1/i-1/awsrunShellScript/run/stdout"
        );
        // path.Join: a trailing slash or doubled slashes in the prefix change nothing.
        assert_eq!(
            key("commands//c-1/", "run", STDERR),
            "commands/c-1/cmd-1/i-1/awsrunShellScript/run/stderr"
        );
        // No prefix: no leading slash.
        assert_eq!(
            key("", "run", STDOUT),
            "cmd-1/i-1/awsrunShellScript/run/stdout"
        );
        // Colons go from the plugin and the step name, not from the prefix.
        assert_eq!(
            key("a:b", "my:step", STDOUT),
            "a:b/cmd-1/i-1/awsrunShellScript/mystep/stdout"
        );
        assert_eq!(go_path_join(&["", ""]), "");
        assert_eq!(go_path_join(&["a", "..", "b"]), "b");
        assert_eq!(go_path_join(&["a/./b/", "c"]), "a/b/c");
    }

    #[test]
    fn the_execution_timeout_is_read_as_the_plugin_reads_it() {
        let secs = |input: Option<&str>| execution_timeout(input).as_secs();
        assert_eq!(secs(Some("1800")), 1800);
        assert_eq!(secs(Some("5")), 5);
        assert_eq!(secs(Some("172800")), 172_800);
        assert_eq!(secs(Some("12.9")), 12);
        // Missing, unreadable or out of range: the 3,600 s default.
        assert_eq!(secs(None), 3600);
        assert_eq!(secs(Some("abc")), 3600);
        assert_eq!(secs(Some("4")), 3600);
        assert_eq!(secs(Some("172801")), 3600);
        assert_eq!(secs(Some("-1")), 3600);
    }

    #[test]
    fn exit_codes_map_to_the_agent_statuses() {
        assert_eq!(step_status(0), StepStatus::Success);
        assert_eq!(step_status(1), StepStatus::Failed);
        assert_eq!(step_status(3), StepStatus::Failed);
        assert_eq!(step_status(255), StepStatus::Failed);
        assert_eq!(step_status(-1), StepStatus::Failed);
        assert_eq!(step_status(137), StepStatus::TimedOut);
        assert_eq!(step_status(168), StepStatus::Success);
        assert_eq!(step_status(169), StepStatus::Failed);
        assert_eq!(step_status(194), StepStatus::SuccessAndReboot);
        assert_eq!(StepStatus::TimedOut.as_invocation_status(), "TimedOut");
        assert_eq!(
            StepStatus::SuccessAndReboot.as_invocation_status(),
            "InProgress"
        );
        assert_eq!(response_code(3), 3);
        assert_eq!(response_code(0), 0);
        assert_eq!(response_code(137), 137);
    }

    #[test]
    fn a_failed_step_carries_the_agents_line_on_its_stderr() {
        let failed = Finished::new(Ending::Exited(3), "half\n".into(), "refused\n".into());
        assert_eq!(failed.status, StepStatus::Failed);
        assert_eq!(failed.exit_code, 3);
        assert_eq!(failed.stdout, "half\n");
        assert_eq!(
            failed.stderr,
            "refused\nfailed to run commands: exit status 3"
        );
        assert_eq!(failed.stderr_content(), failed.stderr);
        // So a failure never has an empty stderr, even when the script printed nothing.
        let silent = Finished::new(Ending::Exited(1), String::new(), String::new());
        assert_eq!(silent.stderr, "failed to run commands: exit status 1");
        let killed = Finished::new(Ending::Signalled(9), String::new(), String::new());
        assert_eq!(killed.exit_code, -1);
        assert_eq!(killed.stderr, "failed to run commands: signal: killed");
        // Success, a timeout, a reboot request: nothing is added.
        let fine = Finished::new(Ending::Exited(0), "ok\n".into(), "warning\n".into());
        assert_eq!(
            (fine.status, fine.stderr.as_str()),
            (StepStatus::Success, "warning\n")
        );
        let late = Finished::new(Ending::TimedOut, "started\n".into(), String::new());
        assert_eq!(late.exit_code, 137);
        assert_eq!(late.status, StepStatus::TimedOut);
        assert!(late.timed_out && late.stderr.is_empty());
        let reboot = Finished::new(Ending::Exited(194), String::new(), String::new());
        assert_eq!(reboot.status, StepStatus::SuccessAndReboot);
        assert!(reboot.stderr.is_empty());
        // 168: the stream keeps the line, the API's StandardErrorContent is emptied.
        let done = Finished::new(Ending::Exited(168), String::new(), String::new());
        assert_eq!(done.status, StepStatus::Success);
        assert_eq!(done.stderr, "failed to run commands: exit status 168");
        assert_eq!(done.stderr_content(), "");
    }

    #[test]
    fn api_content_keeps_the_beginning_of_a_long_stream() {
        assert_eq!(api_content("short", MAX_STDERR_CONTENT), "short");
        let long = format!("{}{}", "a".repeat(7_990), "b".repeat(2_000));
        let cut = api_content(&long, MAX_STDERR_CONTENT);
        assert_eq!(cut.len(), MAX_STDERR_CONTENT);
        assert!(
            cut.starts_with("aaaa") && cut.ends_with(TRUNCATED_SUFFIX),
            "{cut}"
        );
        // StringPrefix keeps only what is shorter than the limit.
        let exact = "x".repeat(MAX_STDERR_CONTENT);
        assert!(api_content(&exact, MAX_STDERR_CONTENT).ends_with(TRUNCATED_SUFFIX));
        let wide = "é".repeat(MAX_STDOUT_CONTENT);
        assert!(api_content(&wide, MAX_STDOUT_CONTENT).len() <= MAX_STDOUT_CONTENT);
    }

    #[test]
    fn the_script_file_is_the_run_command_lines() {
        assert_eq!(script_text(&["a".into(), "b".into()]), "a\nb\n");
        assert_eq!(script_text(&["one\n".into()]), "one\n\n");
    }

    const TEMPLATE: &str = r#"Resources:
  DbReportDocument:
    Type: AWS::SSM::Document
    Properties:
      DocumentType: Command
      UpdateMethod: NewVersion
      Content:
        schemaVersion: "2.2"
        parameters:
          adminSecretId:
            type: String
            description: "name: not the step's"
        mainSteps:
          - action: aws:runShellScript
            name: report
            inputs:
              timeoutSeconds: "600"
              runCommand:
                - |
                  echo name: nope

  TwoStepsDocument:
    Type: AWS::SSM::Document
    Properties:
      Content:
        schemaVersion: "2.2"
        mainSteps:
          - action: aws:runShellScript
            name: one
          - action: aws:runShellScript
            name: two
  OldDocument:
    Type: AWS::SSM::Document
    Properties:
      Content:
        schemaVersion: "1.2"
"#;

    #[test]
    fn the_step_is_read_from_the_deployed_document() {
        assert_eq!(
            Step::from_template(TEMPLATE, "DbReport").unwrap(),
            Step {
                action: RUN_SHELL_SCRIPT.into(),
                name: "report".into(),
                timeout_seconds: Some("600".into()),
                working_directory: None,
            }
        );
        for (document, problem) in [
            ("TwoSteps", "2 steps"),
            ("Old", "schemaVersion"),
            ("Missing", "no resource"),
        ] {
            let error = Step::from_template(TEMPLATE, document).unwrap_err();
            assert!(error.contains(problem), "{document}: {error}");
        }
    }

    fn scratch() -> (tempfile::TempDir, ScriptRun) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("root");
        let run = ScriptRun {
            orchestration_dir: dir.path().join("orchestration/cmd-1"),
            step: "run".into(),
            run_command: Vec::new(),
            working_dir: root,
            env: vec![
                ("PATH".into(), SERVICE_PATH.into()),
                ("SSM_COMMAND_ID".into(), "cmd-1".into()),
            ],
            timeout: Duration::from_secs(30),
            host: None,
        };
        (dir, run)
    }

    #[tokio::test]
    async fn the_step_runs_as_the_shell_plugin_runs_it() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, mut run) = scratch();
        run.run_command = vec![
            r#"echo "$0""#.into(),
            "echo ${BASH_VERSION:+bash} $(set -o | grep -E '^posix' | tr -s ' \t' ' ')".into(),
            "pwd".into(),
            r#"echo "command=$SSM_COMMAND_ID home=${HOME-unset} stdin=$(cat)""#.into(),
            "echo 'no such thing' >&2".into(),
            "exit 3".into(),
        ];
        let finished = run_script(&run).await.expect("run");
        let path = run.script_path();
        assert!(
            path.ends_with("orchestration/cmd-1/run/_script.sh"),
            "{path:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            script_text(&run.run_command)
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let lines: Vec<&str> = finished.stdout.lines().collect();
        assert_eq!(
            lines,
            [
                path.to_str().unwrap(),
                "bash posix on",
                run.working_dir.canonicalize().unwrap().to_str().unwrap(),
                "command=cmd-1 home=unset stdin=",
            ],
            "{finished:?}"
        );
        assert_eq!(finished.exit_code, 3);
        assert_eq!(finished.status, StepStatus::Failed);
        assert_eq!(
            finished.stderr,
            "no such thing\nfailed to run commands: exit status 3"
        );
    }

    #[tokio::test]
    async fn a_quiet_success_leaves_stderr_empty() {
        let (_dir, mut run) = scratch();
        run.run_command = vec!["echo '{\"ok\":true}'".into()];
        let finished = run_script(&run).await.expect("run");
        assert_eq!(finished.status, StepStatus::Success);
        assert_eq!(finished.exit_code, 0);
        assert_eq!(
            uploaded_streams(&finished.stdout, &finished.stderr),
            vec![(STDOUT, "{\"ok\":true}\n")]
        );
    }

    #[tokio::test]
    async fn the_execution_timeout_kills_the_whole_process_group() {
        let (_dir, mut run) = scratch();
        run.timeout = Duration::from_secs(1);
        run.run_command = vec![
            "sleep 60 & echo $! > background.pid".into(),
            "echo started".into(),
            "sleep 60".into(),
        ];
        let began = std::time::Instant::now();
        let finished = run_script(&run).await.expect("run");
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(finished.exit_code, STOPPED_PREEMPTIVELY_EXIT_CODE);
        assert_eq!(finished.status, StepStatus::TimedOut);
        assert!(finished.timed_out);
        assert_eq!(finished.stdout, "started\n");
        assert_eq!(finished.stderr, "");
        let background = std::fs::read_to_string(run.working_dir.join("background.pid"))
            .expect("background pid");
        let proc = PathBuf::from(format!("/proc/{}", background.trim()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while proc.exists() && std::time::Instant::now() < deadline {
            let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            if state.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.split_whitespace().nth(2) == Some("Z"),
            "the background process survived the timeout: {state}"
        );
    }

    #[tokio::test]
    async fn a_background_process_holding_stdout_keeps_the_step_running() {
        let (_dir, mut run) = scratch();
        run.timeout = Duration::from_secs(1);
        // Exits at once, but its child still has stdout: the agent waits for the stream's
        // end, which comes only when the child is killed at the timeout.
        run.run_command = vec!["sleep 30 &".into(), "echo detached".into(), "exit 0".into()];
        let finished = run_script(&run).await.expect("run");
        assert_eq!(finished.status, StepStatus::TimedOut, "{finished:?}");
        assert_eq!(finished.stdout, "detached\n");
    }

    #[tokio::test]
    async fn a_step_killed_by_a_signal_fails_with_exit_code_minus_one() {
        let (_dir, mut run) = scratch();
        run.run_command = vec!["kill -TERM $$".into(), "sleep 5".into()];
        let finished = run_script(&run).await.expect("run");
        assert_eq!(finished.exit_code, -1, "{finished:?}");
        assert_eq!(finished.status, StepStatus::Failed);
        assert_eq!(
            finished.stderr,
            "failed to run commands: signal: terminated"
        );
    }
}
