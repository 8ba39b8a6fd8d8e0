//! The state machine definition agrees with the template and with the Rust error types.

use std::collections::BTreeSet;

use orchestrator::error::{ERROR_TYPE_RETRYABLE, ERROR_TYPE_TERMINAL};

fn read(path: &str) -> String {
    let full = local_cloud::project_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn placeholders(definition: &str) -> BTreeSet<String> {
    definition
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn every_placeholder_has_a_definition_substitution() {
    let definition = read("statemachine/cluster-workflow.asl.json");
    let template = read("template.yaml");
    let section = template
        .split("DefinitionSubstitutions:")
        .nth(1)
        .expect("the state machine has DefinitionSubstitutions");
    let names = placeholders(&definition);
    assert!(!names.is_empty());
    for name in names {
        assert!(
            section.contains(&format!("{name}:")),
            "${{{name}}} in the definition has no DefinitionSubstitutions entry"
        );
    }
}

#[test]
fn retries_match_the_retryable_error_type_and_never_the_terminal_one() {
    let definition: serde_json::Value =
        serde_json::from_str(&read("statemachine/cluster-workflow.asl.json")).expect("valid JSON");
    let states = definition["States"].as_object().expect("States");
    let mut task_count = 0;
    for (name, state) in states {
        if state["Type"] != "Task" {
            continue;
        }
        task_count += 1;
        let retried: Vec<&str> = state["Retry"]
            .as_array()
            .unwrap_or_else(|| panic!("task {name} has no Retry"))
            .iter()
            .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
            .filter_map(|e| e.as_str())
            .collect();
        assert!(
            retried.contains(&ERROR_TYPE_RETRYABLE),
            "{name} does not retry {ERROR_TYPE_RETRYABLE}"
        );
        assert!(
            !retried.contains(&ERROR_TYPE_TERMINAL),
            "{name} retries terminal errors"
        );
        // A function process that died mid-task (killed, out of memory) is retried: every
        // task is idempotent.
        assert!(
            retried.contains(&"Runtime.ExitError"),
            "{name} does not retry a crashed function (Runtime.ExitError)"
        );
        assert!(
            !retried.contains(&"States.ALL"),
            "{name} retries everything"
        );
        let caught = state["Catch"]
            .as_array()
            .map(|c| !c.is_empty())
            .unwrap_or(false);
        assert!(caught, "task {name} has no Catch to the failure state");
    }
    assert!(task_count > 0);
}

#[test]
fn no_task_discards_its_result_with_a_null_result_path() {
    // fakecloud 0.51 treats `"ResultPath": null` as `"$"` and loses the run's context.
    let definition: serde_json::Value =
        serde_json::from_str(&read("statemachine/cluster-workflow.asl.json")).expect("valid JSON");
    for (name, state) in definition["States"].as_object().expect("States") {
        if let Some(path) = state.get("ResultPath") {
            assert!(!path.is_null(), "{name} has a null ResultPath");
        }
    }
}
