//! The project's security checks (cfn-lint custom rules in `scripts/cfn-rules/`) fail each
//! deliberately bad fragment in `tests/security/` with the rule meant for it, and nothing
//! else; the stack's own template passes them all. `make lint` runs the same rules.

use std::path::PathBuf;
use std::process::Command;

fn cfn_lint(template: &std::path::Path) -> (i32, String) {
    let root = local_cloud::project_root();
    let binary = root.join(".venv/bin/cfn-lint");
    assert!(
        binary.is_file(),
        "{} is missing: run `make setup` (scripts/setup.sh installs the pinned tools)",
        binary.display()
    );
    let output = Command::new(&binary)
        .arg(template)
        .arg("--append-rules")
        .arg(root.join("scripts/cfn-rules"))
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
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
    let cases = [
        ("open-ingress.yaml", "E9101", "opens tcp 22"),
        ("imdsv1.yaml", "E9102", "allows IMDSv1"),
        ("unencrypted.yaml", "E9103", "not encrypted"),
        ("iam-untagged.yaml", "E9104", "without a condition"),
        ("iam-star.yaml", "E9104", "on \"*\""),
        ("api-no-auth.yaml", "E9105", "Authorizer: NONE"),
    ];
    let dir: PathBuf = local_cloud::project_root().join("tests/security");
    let mut fragments: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    fragments.sort();
    let mut tested: Vec<String> = cases.iter().map(|(f, _, _)| f.to_string()).collect();
    tested.sort();
    assert_eq!(fragments, tested, "every fragment needs a case here");
    for (fragment, rule, says) in cases {
        let (code, output) = cfn_lint(&dir.join(fragment));
        assert_ne!(code, 0, "{fragment} passed the checks:\n{output}");
        assert_eq!(
            rule_ids(&output),
            vec![rule.to_string()],
            "{fragment} should fail {rule} alone:\n{output}"
        );
        assert!(output.contains(says), "{fragment}: {output}");
    }
}

#[test]
fn the_stack_template_passes_every_check() {
    let (code, output) = cfn_lint(&local_cloud::project_root().join("template.yaml"));
    assert_eq!(code, 0, "template.yaml fails the checks:\n{output}");
}
