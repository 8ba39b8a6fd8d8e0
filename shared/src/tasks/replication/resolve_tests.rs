//! Command resolution scenarios on mocked DynamoDB, SSM, S3 and Step Functions: a
//! command's final status events for a recorded inspection, and what reaches the waiting
//! workflow (success with the outputs, failure with the stderr excerpt, nothing twice).

use super::tests::{ID, replicator};
use super::{CommandResult, InstanceOutput, Replicator};
use crate::aws::commands::{CommandSettings, Commands};
use crate::aws::store::{ClusterStore, CommandRecord, CommandTarget};
use crate::domain::cluster::Slot;
use crate::domain::commands::Document;
use crate::error::ERROR_TYPE_COMMAND_FAILED;
use crate::mocked_client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ssm::types::CommandInvocationStatus;
use aws_smithy_mocks::{MockResponse, RuleMode, mock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const COMMAND: &str = "cmd-1";
const TOKEN: &str = "token-1";
/// The inspection's two targets: db-0 and db-1.
const TARGETS: [(&str, &str); 2] = [
    ("i-00000000000000000", "db-0"),
    ("i-00000000000000001", "db-1"),
];

/// What one target did with the command, as SSM and the output bucket tell it.
#[derive(Clone)]
struct Ran {
    status: CommandInvocationStatus,
    code: i32,
    /// The streams the agent uploaded (`None`: no object under the key).
    bucket_stdout: Option<&'static str>,
    bucket_stderr: Option<&'static str>,
    /// What GetCommandInvocation carries (SSM truncates it; the bucket has it all).
    api_stdout: &'static str,
}

fn succeeded(report: &'static str) -> Ran {
    Ran {
        status: CommandInvocationStatus::Success,
        code: 0,
        bucket_stdout: Some(report),
        bucket_stderr: None,
        api_stdout: report,
    }
}

/// The mocked services around one recorded inspection, and what reached Step Functions
/// and the step's failure count.
struct Scene {
    replicator: Replicator,
    /// Every `SendTaskSuccess`: (token, output).
    successes: Arc<Mutex<Vec<(String, String)>>>,
    /// Every `SendTaskFailure`: (token, error, cause).
    failures: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Every message a failure added to the step's count.
    step_failures: Arc<Mutex<Vec<String>>>,
}

/// `ran[i]` is what `TARGETS[i]` did; the command record waits on `TOKEN`, and both
/// targets' final status events have arrived.
fn scene(ran: [Ran; 2]) -> Scene {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let record = CommandRecord {
        command_id: COMMAND.into(),
        cluster_id: ID.into(),
        generation: 1,
        step: "db-inspect".into(),
        document: Document::DbReport,
        targets: TARGETS
            .iter()
            .map(|(instance, slot)| CommandTarget {
                instance_id: instance.to_string(),
                slot: slot.to_string(),
            })
            .collect(),
        step_key: "g1#inspect".into(),
        sent_at: "2026-11-23T12:02:00Z".into(),
    };
    let item = HashMap::from([
        ("pk".to_string(), s(&format!("COMMAND#{COMMAND}"))),
        ("sk".to_string(), s("COMMAND")),
        ("cluster_id".to_string(), s(ID)),
        ("task_token".to_string(), s(TOKEN)),
        (
            "data".to_string(),
            s(&serde_json::to_string(&record).unwrap()),
        ),
    ]);
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
        aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
            .set_item(Some(item.clone()))
            .build()
    });
    let finished = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| r.update_expression() == Some("ADD finished :instance"))
        .then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder()
                .attributes(
                    "finished",
                    AttributeValue::Ss(TARGETS.iter().map(|(i, _)| i.to_string()).collect()),
                )
                .build()
        });
    // The claim's condition as DynamoDB evaluates it: the token is the one recorded and
    // was not claimed before (ClusterStore::claim_resolution).
    let claimed = Arc::new(Mutex::new(Vec::<String>::new()));
    let claim = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| {
            r.update_expression()
                .is_some_and(|e| e.starts_with("SET resolved_token"))
        })
        .then_compute_response(move |r| {
            let token = r
                .expression_attribute_values()
                .and_then(|v| v.get(":token"))
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            let mut claimed = claimed.lock().unwrap();
            if token == TOKEN && !claimed.contains(&token) {
                claimed.push(token);
                MockResponse::Output(
                    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build(),
                )
            } else {
                MockResponse::Error(
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                        crate::testing::conditional_check_failed(),
                    ),
                )
            }
        });
    let step_failures = Arc::new(Mutex::new(Vec::new()));
    let seen = step_failures.clone();
    let step_failure = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |r| {
            let counted =
                r.update_expression() == Some("ADD failures :one SET last_failure = :message");
            if counted {
                let message = r
                    .expression_attribute_values()
                    .and_then(|v| v.get(":message"))
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                seen.lock().unwrap().push(message);
            }
            counted
        })
        .then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
        });
    let store = ClusterStore::new(
        mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&get, &finished, &claim, &step_failure]
        ),
        "table",
    );

    let listed = ran.clone();
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        let invocations = TARGETS.iter().zip(&listed).map(|((instance, _), ran)| {
            aws_sdk_ssm::types::CommandInvocation::builder()
                .command_id(COMMAND)
                .instance_id(*instance)
                .status(ran.status.clone())
                .status_details(ran.status.as_str())
                .build()
        });
        aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput::builder()
            .set_command_invocations(Some(invocations.collect()))
            .build()
    });
    let detailed = ran.clone();
    let detail = mock!(aws_sdk_ssm::Client::get_command_invocation).then_compute_output(move |r| {
        let i = TARGETS
            .iter()
            .position(|(instance, _)| r.instance_id() == Some(instance))
            .expect("an invocation of a target");
        aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
            .response_code(detailed[i].code)
            .standard_output_content(detailed[i].api_stdout)
            .build()
    });
    let stored = ran.clone();
    let object = mock!(aws_sdk_s3::Client::get_object).then_compute_response(move |r| {
        let key = r.key().unwrap_or_default();
        let i = TARGETS
            .iter()
            .position(|(instance, _)| key.contains(&format!("/{COMMAND}/{instance}/")))
            .expect("a key of a target's output");
        let body = if key.ends_with("/stdout") {
            stored[i].bucket_stdout
        } else {
            stored[i].bucket_stderr
        };
        match body {
            Some(body) => MockResponse::Output(
                aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(
                        body.as_bytes(),
                    ))
                    .build(),
            ),
            // What S3 answers for an absent key when the role may list the bucket.
            None => {
                MockResponse::Error(aws_sdk_s3::operation::get_object::GetObjectError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("NoSuchKey")
                        .build(),
                ))
            }
        }
    });
    let commands = Commands::new(
        mocked_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &detail]),
        mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&object]),
        CommandSettings {
            document_prefix: "stack".into(),
            output_bucket: "bucket".into(),
        },
    );

    let successes = Arc::new(Mutex::new(Vec::new()));
    let seen = successes.clone();
    let success = mock!(aws_sdk_sfn::Client::send_task_success)
        .match_requests(move |r| {
            seen.lock().unwrap().push((
                r.task_token().unwrap_or_default().to_string(),
                r.output().unwrap_or_default().to_string(),
            ));
            true
        })
        .then_output(|| {
            aws_sdk_sfn::operation::send_task_success::SendTaskSuccessOutput::builder().build()
        });
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let failure = mock!(aws_sdk_sfn::Client::send_task_failure)
        .match_requests(move |r| {
            seen.lock().unwrap().push((
                r.task_token().unwrap_or_default().to_string(),
                r.error().unwrap_or_default().to_string(),
                r.cause().unwrap_or_default().to_string(),
            ));
            true
        })
        .then_output(|| {
            aws_sdk_sfn::operation::send_task_failure::SendTaskFailureOutput::builder().build()
        });
    let sfn = mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&success, &failure]);
    Scene {
        replicator: replicator(store, commands, sfn, mocked_client!(aws_sdk_ec2, [])),
        successes,
        failures,
        step_failures,
    }
}

/// The `SendTaskSuccess` output, parsed.
fn answered(scene: &Scene) -> Vec<(String, CommandResult)> {
    scene
        .successes
        .lock()
        .unwrap()
        .iter()
        .map(|(token, output)| (token.clone(), serde_json::from_str(output).unwrap()))
        .collect()
}

const REPORT_0: &str = "{\"memberState\":\"ONLINE\",\"n\":0}\n";
const REPORT_1: &str = "{\"memberState\":\"ONLINE\",\"n\":1}\n";

#[tokio::test]
async fn a_success_answers_the_token_with_every_instances_output() {
    let scene = scene([succeeded(REPORT_0), succeeded(REPORT_1)]);
    let done = scene
        .replicator
        .resolve(COMMAND, Some(TARGETS[1].0))
        .await
        .unwrap();
    assert!(done);
    let answers = answered(&scene);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (token, result) = &answers[0];
    assert_eq!(token, TOKEN);
    assert_eq!(
        *result,
        CommandResult {
            done: false,
            wait: false,
            step: "db-inspect".into(),
            detail: "DbReport succeeded on 2 instance(s)".into(),
            outputs: vec![
                InstanceOutput {
                    instance_id: TARGETS[0].0.into(),
                    slot: Slot::parse("db-0").unwrap(),
                    stdout: REPORT_0.trim().into(),
                },
                InstanceOutput {
                    instance_id: TARGETS[1].0.into(),
                    slot: Slot::parse("db-1").unwrap(),
                    stdout: REPORT_1.trim().into(),
                },
            ],
        }
    );
    // The slot travels as its name, as the workflow's next task reads it.
    let (_, output) = scene.successes.lock().unwrap()[0].clone();
    let output: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output["outputs"][1]["slot"], "db-1");
    assert!(scene.failures.lock().unwrap().is_empty());
    assert!(scene.step_failures.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failure_answers_the_token_with_the_stderr_excerpt_and_counts_it() {
    let failed = Ran {
        status: CommandInvocationStatus::Failed,
        code: 1,
        bucket_stdout: None,
        bucket_stderr: Some("noise\nmysqlsh: access denied for user 'admin'\n"),
        api_stdout: "",
    };
    let scene = scene([succeeded(REPORT_0), failed]);
    let done = scene
        .replicator
        .resolve(COMMAND, Some(TARGETS[0].0))
        .await
        .unwrap();
    assert!(done);
    assert!(scene.successes.lock().unwrap().is_empty());
    let failures = scene.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (token, error, cause) = &failures[0];
    assert_eq!(token, TOKEN);
    assert_eq!(error, ERROR_TYPE_COMMAND_FAILED);
    let message = "DbReport Failed on i-00000000000000001 (db-1), exit code 1: \
                   noise\nmysqlsh: access denied for user 'admin'";
    let cause: serde_json::Value = serde_json::from_str(cause).unwrap();
    assert_eq!(
        cause,
        serde_json::json!({"errorType": ERROR_TYPE_COMMAND_FAILED, "errorMessage": message})
    );
    assert_eq!(
        *scene.step_failures.lock().unwrap(),
        vec![message.to_string()]
    );
}

#[tokio::test]
async fn a_duplicate_event_for_an_answered_command_answers_nothing() {
    let scene = scene([succeeded(REPORT_0), succeeded(REPORT_1)]);
    let last = Some(TARGETS[1].0);
    assert!(scene.replicator.resolve(COMMAND, last).await.unwrap());
    // EventBridge delivers at least once: the same final event again.
    assert!(!scene.replicator.resolve(COMMAND, last).await.unwrap());
    assert_eq!(answered(&scene).len(), 1);
    assert!(scene.failures.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_success_without_an_output_object_answers_with_what_the_api_carries() {
    // The agent uploads no object for an empty stream, and an upload can fail; the
    // answer then carries GetCommandInvocation's (truncated) stdout, or nothing.
    let unuploaded = Ran {
        bucket_stdout: None,
        ..succeeded(REPORT_0)
    };
    let empty = Ran {
        bucket_stdout: None,
        api_stdout: "",
        ..succeeded(REPORT_1)
    };
    let scene = scene([unuploaded, empty]);
    assert!(
        scene
            .replicator
            .resolve(COMMAND, Some(TARGETS[1].0))
            .await
            .unwrap()
    );
    let answers = answered(&scene);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let stdout: Vec<&str> = answers[0]
        .1
        .outputs
        .iter()
        .map(|o| o.stdout.as_str())
        .collect();
    assert_eq!(stdout, vec![REPORT_0.trim(), ""]);
    assert_eq!(answers[0].1.detail, "DbReport succeeded on 2 instance(s)");
    assert!(scene.failures.lock().unwrap().is_empty());
}
