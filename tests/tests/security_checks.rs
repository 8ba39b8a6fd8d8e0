//! The project's security checks (cfn-lint custom rules in `scripts/cfn-rules/`) fail each
//! deliberately bad fragment in `tests/security/` with the rule meant for it, and nothing
//! else; the stack's own template passes them all, as written and after the SAM transform.
//! `make template-lint` runs the same two passes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which template cfn-lint reads: the file as written, or what CloudFormation gets after
/// the SAM transform (`scripts/sam-transform.py`; cfn-lint checks SAM resources against
/// SAM's schemas without transforming them, so the IAM policies SAM writes are only
/// checked in the second pass).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pass {
    AsWritten,
    Transformed,
}

fn venv_tool(name: &str) -> PathBuf {
    let binary = local_cloud::project_root().join(".venv/bin").join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `make setup` (scripts/setup.sh installs the pinned tools)",
        binary.display()
    );
    binary
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn cfn_lint(template: &Path, pass: Pass) -> (i32, String) {
    let root = local_cloud::project_root();
    let scratch = tempfile::tempdir().expect("temp dir");
    let linted = match pass {
        Pass::AsWritten => template.to_path_buf(),
        Pass::Transformed => {
            let json = scratch.path().join("transformed.json");
            let output = Command::new(venv_tool("python"))
                .arg(root.join("scripts/sam-transform.py"))
                .arg(template)
                .arg(&json)
                .current_dir(&root)
                .output()
                .expect("run scripts/sam-transform.py");
            assert!(
                output.status.success(),
                "the SAM transform of {} failed:\n{}",
                template.display(),
                output_text(&output)
            );
            json
        }
    };
    let mut command = Command::new(venv_tool("cfn-lint"));
    command
        .arg(&linted)
        .arg("--append-rules")
        .arg(root.join("scripts/cfn-rules"));
    if pass == Pass::Transformed {
        // As in the Makefile: the transform writes the region's partition itself.
        command.args(["--ignore-checks", "E9107"]);
    }
    let output = command.current_dir(&root).output().expect("run cfn-lint");
    (output.status.code().unwrap_or(-1), output_text(&output))
}

/// The rule ids cfn-lint reported (`E9101`, `W3005`, ...).
fn rule_ids(output: &str) -> Vec<String> {
    let mut ids: Vec<String> = output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| {
            word.len() == 5
                && word.starts_with(['E', 'W', 'I'])
                && word[1..].chars().all(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn each_bad_fragment_fails_its_own_check_only() {
    use Pass::{AsWritten, Transformed};
    let cases = [
        ("open-ingress.yaml", AsWritten, "E9101", "opens tcp 22"),
        ("imdsv1.yaml", AsWritten, "E9102", "allows IMDSv1"),
        ("unencrypted.yaml", AsWritten, "E9103", "not encrypted"),
        (
            "iam-untagged.yaml",
            AsWritten,
            "E9104",
            "without a condition",
        ),
        ("iam-star.yaml", AsWritten, "E9104", "on \"*\""),
        ("api-no-auth.yaml", AsWritten, "E9105", "Authorizer: NONE"),
        (
            "ssm-document-replace.yaml",
            AsWritten,
            "E9106",
            "set UpdateMethod: NewVersion",
        ),
        ("literal-partition.yaml", AsWritten, "E9107", "arn:aws:"),
        ("shared-nat.yaml", AsWritten, "E9108", "through one NAT"),
        (
            "no-audit-trail.yaml",
            AsWritten,
            "E9109",
            "name the target group in SourceArn",
        ),
        (
            "bucket-public-or-plain-http.yaml",
            AsWritten,
            "E9111",
            "answers requests without TLS",
        ),
        (
            "iam-narrow-inputs.yaml",
            AsWritten,
            "E9110",
            "with an ec2:Vpc condition",
        ),
        (
            "iam-prefix-listbucket.yaml",
            AsWritten,
            "E9110",
            "which a GetObject of a missing key does not carry",
        ),
        (
            "iam-unknown-action.yaml",
            Transformed,
            "W3037",
            "'transactwriteitems' is not one of",
        ),
    ];
    let dir: PathBuf = local_cloud::project_root().join("tests/security");
    let mut fragments: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    fragments.sort();
    let mut tested: Vec<String> = cases.iter().map(|(f, ..)| f.to_string()).collect();
    tested.sort();
    assert_eq!(fragments, tested, "every fragment needs a case here");
    for (fragment, pass, rule, says) in cases {
        let (code, output) = cfn_lint(&dir.join(fragment), pass);
        assert_ne!(
            code, 0,
            "{fragment} passed the checks ({pass:?}):\n{output}"
        );
        assert_eq!(
            rule_ids(&output),
            vec![rule.to_string()],
            "{fragment} should fail {rule} alone:\n{output}"
        );
        assert!(output.contains(says), "{fragment}: {output}");
    }
}

/// The transformed pass is what catches a SAM function's bad IAM action: linted as
/// written, the same fragment passes.
#[test]
fn an_unknown_iam_action_in_a_sam_function_is_found_only_after_the_transform() {
    let fragment = local_cloud::project_root().join("tests/security/iam-unknown-action.yaml");
    let (code, output) = cfn_lint(&fragment, Pass::AsWritten);
    assert_eq!(
        code, 0,
        "cfn-lint now checks SAM policies itself:\n{output}"
    );
}

#[test]
fn the_stack_template_passes_every_check() {
    let template = local_cloud::project_root().join("template.yaml");
    for pass in [Pass::AsWritten, Pass::Transformed] {
        let (code, output) = cfn_lint(&template, pass);
        assert_eq!(
            code, 0,
            "template.yaml fails the checks ({pass:?}):\n{output}"
        );
    }
}
