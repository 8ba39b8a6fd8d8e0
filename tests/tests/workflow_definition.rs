//! The state machine definition agrees with the template and with the Rust error types, and
//! its waiting states recover from errors in a way that works the same on AWS and fakecloud.

use std::collections::BTreeSet;

use orchestrator::error::{
    ERROR_TYPE_COMMAND_FAILED, ERROR_TYPE_RETRYABLE, ERROR_TYPE_SUPERSEDED, ERROR_TYPE_TERMINAL,
};
use serde_json::{Value, json};

const DEFINITION: &str = "statemachine/cluster-workflow.asl.json";

fn read(path: &str) -> String {
    let full = local_cloud::project_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn definition() -> Value {
    serde_json::from_str(&read(DEFINITION)).expect("valid JSON")
}

fn placeholders(definition: &str) -> BTreeSet<String> {
    definition
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// The keys of the `DefinitionSubstitutions` block of the template's state machine (the
/// lines indented below it, comments skipped).
fn substitutions(template: &str) -> BTreeSet<String> {
    let mut lines = template.lines();
    let header = lines
        .by_ref()
        .find(|l| l.trim() == "DefinitionSubstitutions:")
        .expect("the state machine has DefinitionSubstitutions");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let depth = indent(header);
    lines
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .take_while(|l| indent(l) > depth)
        .filter_map(|l| l.trim().split_once(':').map(|(key, _)| key.to_string()))
        .collect()
}

fn is_waiting(state: &Value) -> bool {
    state["Resource"]
        .as_str()
        .is_some_and(|r| r.ends_with(".waitForTaskToken"))
}

#[test]
fn every_placeholder_has_a_definition_substitution_and_every_substitution_is_used() {
    let names = placeholders(&read(DEFINITION));
    let keys = substitutions(&read("template.yaml"));
    assert!(!names.is_empty());
    for name in &names {
        assert!(
            keys.contains(name),
            "${{{name}}} in the definition has no DefinitionSubstitutions entry (entries: {keys:?})"
        );
    }
    for key in &keys {
        assert!(
            names.contains(key),
            "DefinitionSubstitutions sets {key}, which the definition never uses"
        );
    }
}

#[test]
fn every_resource_arn_uses_the_partition() {
    // `arn:aws:` is wrong in aws-cn and aws-us-gov: the partition comes from the template.
    let text = read(DEFINITION);
    assert!(
        !text.contains("arn:aws:"),
        "the definition hard-codes the aws partition"
    );
    for (name, state) in definition()["States"].as_object().expect("States") {
        if let Some(resource) = state["Resource"].as_str() {
            assert!(
                resource.starts_with("arn:${Partition}:"),
                "{name}: Resource {resource} does not take its partition from ${{Partition}}"
            );
        }
    }
}

#[test]
fn retries_match_the_retryable_error_type_and_never_the_terminal_one() {
    let definition = definition();
    let states = definition["States"].as_object().expect("States");
    let mut task_count = 0;
    for (name, state) in states {
        if state["Type"] != "Task" || is_waiting(state) {
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
    for (name, state) in definition()["States"].as_object().expect("States") {
        if let Some(path) = state.get("ResultPath") {
            assert!(!path.is_null(), "{name} has a null ResultPath");
        }
    }
}

// ---- A small interpreter for the states between a Catch and the next Task: Pass (with
// Parameters, States.MathAdd and ResultPath), Choice and Wait, as the States Language spec
// defines them (https://states-language.net/spec.html). Anything else it meets fails the
// test, so a change of shape has to come here too.

fn get<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('$')?;
    rest.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(data, |at, key| at.get(key))
}

fn set(data: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = path
        .strip_prefix('$')
        .expect("a path")
        .split('.')
        .filter(|s| !s.is_empty())
        .collect();
    let Some((last, parents)) = keys.split_last() else {
        *data = value;
        return;
    };
    let mut at = data;
    for key in parents {
        at = at
            .as_object_mut()
            .expect("an object on the path")
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    at.as_object_mut()
        .expect("an object on the path")
        .insert(last.to_string(), value);
}

fn evaluate(template: &Value, input: &Value) -> Value {
    let Some(fields) = template.as_object() else {
        return template.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, value) in fields {
        match key.strip_suffix(".$") {
            None => {
                out.insert(key.clone(), evaluate(value, input));
            }
            Some(name) => {
                let expr = value.as_str().expect("a path or intrinsic");
                let resolved = if let Some(args) = expr
                    .strip_prefix("States.MathAdd(")
                    .and_then(|a| a.strip_suffix(')'))
                {
                    let (path, step) = args.split_once(',').expect("two arguments");
                    let base = get(input, path.trim())
                        .and_then(Value::as_i64)
                        .unwrap_or_else(|| panic!("{expr}: {path} is not a number in {input}"));
                    json!(base + step.trim().parse::<i64>().expect("a whole number"))
                } else if expr.starts_with("$$.") {
                    json!("(context)")
                } else {
                    get(input, expr)
                        .unwrap_or_else(|| panic!("{expr} is not in {input}"))
                        .clone()
                };
                out.insert(name.to_string(), resolved);
            }
        }
    }
    Value::Object(out)
}

fn choose(state: &Value, data: &Value) -> String {
    for rule in state["Choices"].as_array().expect("Choices") {
        let path = rule["Variable"].as_str().expect("Variable");
        let value = get(data, path).unwrap_or_else(|| panic!("{path} is not in {data}"));
        let matched = if let Some(n) = rule.get("NumericGreaterThan") {
            value.as_f64() > n.as_f64()
        } else if let Some(n) = rule.get("NumericGreaterThanEquals") {
            value.as_f64() >= n.as_f64()
        } else if let Some(b) = rule.get("BooleanEquals") {
            value == b
        } else if let Some(s) = rule.get("StringEquals") {
            value == s
        } else {
            panic!("a Choice rule this test does not know: {rule}")
        };
        if matched {
            return rule["Next"].as_str().expect("Next").to_string();
        }
    }
    state["Default"].as_str().expect("Default").to_string()
}

/// Where a Catch sends `error` (the spec: the first catcher whose ErrorEquals names it,
/// `States.ALL` matching everything and `States.TaskFailed` everything but a timeout).
fn catcher<'a>(state: &'a Value, error: &str) -> &'a Value {
    state["Catch"]
        .as_array()
        .expect("Catch")
        .iter()
        .find(|c| {
            c["ErrorEquals"]
                .as_array()
                .expect("ErrorEquals")
                .iter()
                .any(|e| {
                    e == error
                        || e == "States.ALL"
                        || (e == "States.TaskFailed" && error != "States.Timeout")
                })
        })
        .unwrap_or_else(|| panic!("nothing catches {error}"))
}

/// From `next`, run the non-Task states; returns the Task or final state reached and how
/// many Wait states were passed.
fn walk(states: &Value, mut next: String, data: &mut Value) -> (String, usize) {
    let mut waits = 0;
    for _ in 0..100 {
        let state = &states[&next];
        match state["Type"].as_str().expect("Type") {
            "Pass" => {
                let result = match state.get("Parameters") {
                    Some(template) => evaluate(template, data),
                    None => state.get("Result").cloned().unwrap_or_else(|| data.clone()),
                };
                set(data, state["ResultPath"].as_str().unwrap_or("$"), result);
            }
            "Choice" => {
                next = choose(state, data);
                continue;
            }
            "Wait" => waits += 1,
            _ => return (next, waits),
        }
        next = state["Next"].as_str().expect("Next").to_string();
    }
    panic!("no Task reached from {next} in 100 states")
}

/// What the run's data looks like when it reaches its first Task: the Start Pass state
/// applied to an execution input.
fn data_of_a_run(definition: &Value) -> Value {
    let mut data = json!({"clusterId": "c-1", "generation": 1, "reason": "create"});
    let start = definition["StartAt"].as_str().expect("StartAt").to_string();
    let (first_task, _) = walk(&definition["States"], start, &mut data);
    assert_eq!(first_task, "Begin");
    data
}

/// fakecloud 0.51 makes a waitForTaskToken state's token once per state entry and keeps it
/// across `Retry`; once an attempt timed out or was answered the token is deleted, and the
/// retried attempt fails at once with `States.TaskFailed: Task token disappeared`
/// (fakecloud-stepfunctions 0.51.0, src/interpreter.rs and src/interpreter_helpers.rs
/// `poll_task_token`). A state entered again gets a new token there as on AWS. So a waiting
/// state has no Retry: an error a second try may fix is caught, counted, waited out, and
/// the state entered again, at most a fixed number of times per run; a terminal error ends
/// the run at once.
#[test]
fn waiting_states_have_no_retry_and_reenter_after_errors_boundedly() {
    let definition = definition();
    let states = &definition["States"];
    let waiting: Vec<&String> = states
        .as_object()
        .expect("States")
        .iter()
        .filter(|(_, s)| is_waiting(s))
        .map(|(name, _)| name)
        .collect();
    assert!(waiting.len() >= 4, "the database steps wait on task tokens");
    let transient = [
        ERROR_TYPE_RETRYABLE,
        ERROR_TYPE_COMMAND_FAILED,
        "Runtime.ExitError",
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Lambda.SdkClientException",
        "Lambda.AWSLambdaException",
        "States.Timeout",
    ];
    for name in waiting {
        let state = &states[name];
        assert!(
            state.get("Retry").is_none(),
            "{name} waits on a task token and has a Retry: on fakecloud a retried attempt polls the token the last one deleted"
        );
        for error in transient {
            let mut data = data_of_a_run(&definition);
            let mut reentries = 0;
            loop {
                let catch = catcher(state, error);
                set(
                    &mut data,
                    catch["ResultPath"].as_str().expect("ResultPath"),
                    json!({"Error": error, "Cause": "injected by the test"}),
                );
                let (reached, waits) = walk(
                    states,
                    catch["Next"].as_str().expect("Next").into(),
                    &mut data,
                );
                if reached == *name {
                    assert!(
                        waits > 0,
                        "{name} is entered again after {error} without a Wait"
                    );
                    reentries += 1;
                    assert!(
                        reentries <= 100,
                        "{name} re-enters itself after {error} without bound"
                    );
                    continue;
                }
                assert_eq!(
                    reached, "RecordFailure",
                    "{name} after {error} went to {reached}"
                );
                assert!(
                    reentries >= 3,
                    "{name} gives up on {error} after {reentries} re-entries"
                );
                assert_eq!(
                    data["error"]["Error"], error,
                    "the failure recorded is not the last error"
                );
                break;
            }
        }
        for (error, end) in [
            (ERROR_TYPE_TERMINAL, "RecordFailure"),
            ("States.Permissions", "RecordFailure"),
            (ERROR_TYPE_SUPERSEDED, "Superseded"),
        ] {
            let mut data = data_of_a_run(&definition);
            let catch = catcher(state, error);
            let (reached, _) = walk(
                states,
                catch["Next"].as_str().expect("Next").into(),
                &mut data,
            );
            assert_eq!(reached, end, "{name} after {error}");
        }
    }
}
