//! Every function, as `sam build` packaged it for deployment, fails fast at cold start,
//! naming the missing configuration and where it is set, instead of failing on each event.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Template logical id -> binary name.
const FUNCTIONS: [(&str, &str); 6] = [
    ("ApiFunction", "api"),
    ("ProvisionFunction", "provision"),
    ("ReplicationFunction", "replication"),
    ("InstanceEventsFunction", "instance-events"),
    ("ScalingFunction", "scaling"),
    ("AlbTargetFunction", "alb-target"),
];

#[test]
fn every_function_refuses_to_start_without_its_table() {
    for (logical_id, name) in FUNCTIONS {
        let binary = local_cloud::project_root()
            .join(".aws-sam/build")
            .join(logical_id)
            .join("bootstrap");
        assert!(
            binary.is_file(),
            "{} is missing: run `make build` (sam build) first",
            binary.display()
        );
        let mut child = Command::new(&binary)
            .env_clear()
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("poll child").is_none() {
            assert!(
                Instant::now() < deadline,
                "{name} did not exit without TABLE_NAME"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("collect output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "{name} started without TABLE_NAME:\n{text}"
        );
        assert!(
            text.contains("TABLE_NAME") && text.contains("template.yaml"),
            "{name} did not say what is missing and where it is set:\n{text}"
        );
    }
}
