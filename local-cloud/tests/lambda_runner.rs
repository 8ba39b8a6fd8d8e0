//! `lambda-runner` driven exactly as fakecloud drives it (create, cp, start, port, invoke,
//! logs, rm), with two tiny custom runtimes written in bash: one that echoes every event
//! back through the Lambda Runtime API, and one that dies at start like a misconfigured
//! function.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUNNER: &str = env!("CARGO_BIN_EXE_lambda-runner");

/// A runtime that answers every invocation with its own payload.
const ECHO_RUNTIME: &str = r#"#!/usr/bin/env bash
set -euo pipefail
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers="$(mktemp)"
  body="$(curl -sS -D "$headers" "$api/invocation/next")"
  id="$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | cut -d' ' -f2 | tr -d '\r')"
  curl -sS -X POST -d "$body" "$api/invocation/$id/response" >/dev/null
done
"#;

/// A runtime that cannot start (as a function without its configuration).
const CRASHING_RUNTIME: &str =
    "#!/usr/bin/env bash\necho 'cannot start: TABLE_NAME is not set' >&2\nexit 3\n";

fn runner(state: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(RUNNER)
        .args(args)
        .env("LAMBDA_RUNNER_STATE_DIR", state)
        .output()
        .expect("run lambda-runner");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Create and start a container running `runtime`; returns (id, endpoint).
fn started(state: &Path, runtime: &str) -> (String, String) {
    let (ok, id, err) = runner(
        state,
        &[
            "create",
            "-p",
            ":8080",
            "--label",
            "fakecloud-lambda=test",
            "-e",
            "AWS_LAMBDA_FUNCTION_NAME=test",
            "-e",
            "AWS_ENDPOINT_URL=http://host.docker.internal:4566",
            // A role session as fakecloud mints one: the runner refuses a function without.
            "-e",
            "AWS_ACCESS_KEY_ID=ASIALOCALRUNNERTEST0",
            "-e",
            "AWS_SECRET_ACCESS_KEY=runner-test-secret",
            "-e",
            "AWS_SESSION_TOKEN=runner-test-session",
            "public.ecr.aws/lambda/provided:al2023",
            "bootstrap",
        ],
    );
    assert!(ok, "create: {err}");
    let code = tempfile::tempdir().expect("code dir");
    let bootstrap = code.path().join("bootstrap");
    std::fs::write(&bootstrap, runtime).expect("write bootstrap");
    let mut perms = std::fs::metadata(&bootstrap).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&bootstrap, perms).expect("chmod");
    let (ok, _, err) = runner(
        state,
        &[
            "cp",
            &format!("{}/.", code.path().display()),
            &format!("{id}:/var/task"),
        ],
    );
    assert!(ok, "cp: {err}");
    let (ok, _, err) = runner(state, &["start", &id]);
    assert!(ok, "start: {err}");
    let (ok, endpoint, err) = runner(state, &["port", &id, "8080"]);
    assert!(ok, "port: {err}");
    (id, endpoint)
}

async fn invoke(endpoint: &str, payload: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{endpoint}/2015-03-31/functions/function/invocations"
        ))
        .body(payload.to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON answer")
}

#[tokio::test]
async fn events_reach_the_runtime_and_answers_come_back() {
    let state = tempfile::tempdir().expect("state dir");
    let (id, endpoint) = started(state.path(), ECHO_RUNTIME);
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    for n in 0..3 {
        let answer = invoke(&endpoint, &format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(answer, serde_json::json!({ "n": n }));
    }
    // The container's environment reaches the host, not a container alias.
    let spec = std::fs::read_to_string(state.path().join(&id).join("spec.json")).expect("spec");
    assert!(
        spec.contains("http://127.0.0.1:4566") && !spec.contains("host.docker.internal"),
        "{spec}"
    );
    let (ok, _, err) = runner(state.path(), &["rm", "-f", &id]);
    assert!(ok, "rm: {err}");
    // Removed: marked so, its spec and log kept for the harness's IAM check.
    assert!(
        state.path().join(&id).join("removed").exists(),
        "rm does not mark the container removed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(&endpoint).await.is_err(),
        "the runner still listens after rm"
    );
}

#[tokio::test]
async fn a_runtime_that_dies_answers_with_its_exit_and_last_words() {
    let state = tempfile::tempdir().expect("state dir");
    let (id, endpoint) = started(state.path(), CRASHING_RUNTIME);
    // Twice: each invocation restarts the runtime and reports it dying again.
    for _ in 0..2 {
        let answer = invoke(&endpoint, "{}").await;
        assert_eq!(answer["errorType"], "Runtime.ExitError", "{answer}");
        let message = answer["errorMessage"].as_str().unwrap_or_default();
        assert!(message.contains("TABLE_NAME is not set"), "{message}");
    }
    let (ok, logs, _) = runner(state.path(), &["logs", "--tail", "20", &id]);
    assert!(ok && logs.contains("TABLE_NAME is not set"), "{logs}");
    runner(state.path(), &["rm", "-f", &id]);
}

#[test]
fn only_custom_runtime_lambda_images_are_run() {
    let state = tempfile::tempdir().expect("state dir");
    let (ok, _, err) = runner(state.path(), &["create", "-p", ":80", "amazonlinux:2023"]);
    assert!(!ok);
    assert!(err.contains("refusing image"), "{err}");
    let (ok, _, err) = runner(state.path(), &["pull", "nginx"]);
    assert!(!ok && err.contains("not supported"), "{err}");
    let (ok, out, _) = runner(state.path(), &["info"]);
    assert!(ok && out.contains("lambda-runner"), "{out}");
}
