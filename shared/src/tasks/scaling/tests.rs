//! Scenario tests of the alarm reaction and the recheck, on mocked CloudWatch, DynamoDB
//! and Step Functions clients.

use super::*;
use crate::aws::workflow::Workflow;
use crate::domain::scaling::alarm_name;
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::types::{MetricAlarm, StateValue};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use std::collections::HashMap;

const ID: &str = "c-0123456789ab";

fn text(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The META item with `web` instances within 2-4, optionally scaled `ago` seconds ago.
fn meta(phase: &str, web: u32, scaled_ago: Option<i64>) -> HashMap<String, AttributeValue> {
    let spec = serde_json::json!({
        "name": "shop",
        "web": {"count": web, "instanceType": "t3.small"},
        "db": {"count": 3, "instanceType": "r6i.large"},
        "scaling": {"minWeb": 2, "maxWeb": 4},
    });
    let mut item = HashMap::from([
        ("pk".to_string(), text(&format!("CLUSTER#{ID}"))),
        ("sk".to_string(), text("META")),
        ("id".to_string(), text(ID)),
        ("phase".to_string(), text(phase)),
        ("spec".to_string(), text(&spec.to_string())),
        ("generation".to_string(), number(5)),
        ("version".to_string(), number(17)),
        ("created_at".to_string(), text("2026-11-23T10:00:00Z")),
        ("updated_at".to_string(), text("2026-11-23T10:00:00Z")),
    ]);
    if let Some(ago) = scaled_ago {
        item.insert(
            "last_scaled_at".into(),
            number(crate::domain::cluster::epoch_seconds() - ago),
        );
    }
    item
}

/// Every call a recheck may make, each answered, so a test can count them.
struct Calls {
    describe: Rule,
    get: Rule,
    query: Rule,
    update: Rule,
    put: Rule,
    start: Rule,
}

impl Calls {
    fn new(in_alarm: &[&str], item: HashMap<String, AttributeValue>) -> Self {
        let names: Vec<String> = in_alarm.iter().map(|n| n.to_string()).collect();
        let describe = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .match_requests(|r| {
                r.alarm_name_prefix() == Some(CLUSTER_ALARM_PREFIX)
                    && r.state_value() == Some(&StateValue::Alarm)
            })
            .then_output(move || {
                DescribeAlarmsOutput::builder()
                    .set_metric_alarms(Some(
                        names
                            .iter()
                            .map(|name| {
                                MetricAlarm::builder()
                                    .alarm_name(name)
                                    .state_value(StateValue::Alarm)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
        let read = item.clone();
        let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(read.clone()))
                .build()
        });
        let query = mock!(aws_sdk_dynamodb::Client::query)
            .then_output(move || QueryOutput::builder().items(item.clone()).build());
        let update = mock!(aws_sdk_dynamodb::Client::update_item)
            .then_output(|| UpdateItemOutput::builder().build());
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .then_output(|| PutItemOutput::builder().build());
        let start = mock!(aws_sdk_sfn::Client::start_execution).then_output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:aws:states:us-east-1:1:execution:w:x")
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .unwrap()
        });
        Self {
            describe,
            get,
            query,
            update,
            put,
            start,
        }
    }

    fn scaler(&self) -> Scaler {
        self.scaler_with(ClusterStore::new(
            crate::mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&self.get, &self.query, &self.update, &self.put]
            ),
            "table",
        ))
    }

    /// The scaler on `store` (its reads and its runs' requests), with these calls'
    /// CloudWatch and Step Functions.
    fn scaler_with(&self, store: ClusterStore) -> Scaler {
        let workflow = Workflow::new(
            crate::mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&self.start]),
            "arn:aws:states:us-east-1:1:stateMachine:w",
        );
        Scaler {
            runs: Runs::new(store.clone(), workflow),
            store,
            alarms: AlarmStates::new(crate::mocked_client!(
                aws_sdk_cloudwatch,
                RuleMode::MatchAny,
                [&self.describe]
            )),
            cooldown_seconds: 300,
        }
    }

    /// No UpdateItem, no PutItem, no StartExecution.
    fn assert_nothing_mutated(&self) {
        assert_eq!(self.update.num_calls(), 0, "UpdateItem");
        assert_eq!(self.put.num_calls(), 0, "PutItem (action log)");
        assert_eq!(self.start.num_calls(), 0, "StartExecution");
    }
}

fn reaction(recheck: &Recheck) -> &ScaleReaction {
    assert_eq!(recheck.alarms.len(), 1, "{recheck:?}");
    &recheck.alarms[0].1
}

#[tokio::test]
async fn an_alarm_still_in_alarm_after_the_cooldown_steps_again() {
    let high = alarm_name(ID, Direction::Out);
    let calls = Calls::new(&[&high], meta("READY", 3, Some(400)));
    let recheck = calls.scaler().recheck().await.unwrap();
    assert_eq!(
        reaction(&recheck),
        &ScaleReaction::Started {
            cluster_id: ID.into(),
            generation: 6,
            from: 3,
            to: 4
        }
    );
    assert_eq!(calls.describe.num_calls(), 1);
    assert_eq!(calls.update.num_calls(), 1, "the step's conditional write");
    assert_eq!(calls.start.num_calls(), 1, "the scaling run");
    assert_eq!(calls.put.num_calls(), 1, "the action log entry");
}

#[tokio::test]
async fn the_step_is_logged_as_a_sustained_breach_and_keeps_the_cooldown_condition() {
    let low = alarm_name(ID, Direction::In);
    let calls = Calls::new(&[&low], meta("READY", 4, Some(301)));
    let logged = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            let data = r
                .item()
                .and_then(|i| i.get("data"))
                .and_then(|v| v.as_s().ok());
            data.is_some_and(|d| {
                d.contains("web 4 -> 3 by alarm ha-c-0123456789ab-web-low")
                    && d.contains("sustained breach")
                    && d.contains("scaling run, generation 6")
            })
        })
        .then_output(|| PutItemOutput::builder().build());
    let cooled = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| {
            r.condition_expression()
                .is_some_and(|c| c.contains("last_scaled_at <= :cutoff"))
        })
        .then_output(|| UpdateItemOutput::builder().build());
    let scaler = calls.scaler_with(ClusterStore::new(
        crate::mocked_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&calls.get, &calls.query, &cooled, &logged]
        ),
        "table",
    ));
    let recheck = scaler.recheck().await.unwrap();
    assert!(
        matches!(
            reaction(&recheck),
            ScaleReaction::Started { from: 4, to: 3, .. }
        ),
        "{recheck:?}"
    );
    assert_eq!(
        cooled.num_calls(),
        1,
        "the write carries the cooldown condition"
    );
    assert_eq!(
        logged.num_calls(),
        1,
        "the action says it is a sustained breach"
    );
}

#[tokio::test]
async fn within_the_cooldown_a_recheck_reads_one_item_and_writes_nothing() {
    for direction in [Direction::Out, Direction::In] {
        let calls = Calls::new(&[&alarm_name(ID, direction)], meta("READY", 3, Some(120)));
        let recheck = calls.scaler().recheck().await.unwrap();
        match reaction(&recheck) {
            ScaleReaction::Unchanged { why, .. } => {
                assert!(why.contains("cooldown"), "{why}")
            }
            other => panic!("{direction:?}: {other:?}"),
        }
        assert_eq!(calls.get.num_calls(), 1);
        assert_eq!(calls.query.num_calls(), 0, "no full cluster read");
        calls.assert_nothing_mutated();
    }
}

#[tokio::test]
async fn at_the_bound_a_recheck_says_so_and_writes_nothing() {
    for (direction, web) in [(Direction::Out, 4), (Direction::In, 2)] {
        let calls = Calls::new(&[&alarm_name(ID, direction)], meta("READY", web, None));
        let recheck = calls.scaler().recheck().await.unwrap();
        match reaction(&recheck) {
            ScaleReaction::Unchanged { why, .. } => {
                assert!(why.contains("at the bound") && why.contains("2-4"), "{why}")
            }
            other => panic!("{direction:?}: {other:?}"),
        }
        calls.assert_nothing_mutated();
    }
}

#[tokio::test]
async fn the_low_alarm_still_in_alarm_steps_in_again() {
    let calls = Calls::new(&[&alarm_name(ID, Direction::In)], meta("READY", 3, None));
    let recheck = calls.scaler().recheck().await.unwrap();
    assert!(
        matches!(
            reaction(&recheck),
            ScaleReaction::Started {
                from: 3,
                to: 2,
                generation: 6,
                ..
            }
        ),
        "{recheck:?}"
    );
    assert_eq!(calls.start.num_calls(), 1);
}

#[tokio::test]
async fn while_a_run_is_under_way_the_next_step_waits() {
    let calls = Calls::new(
        &[&alarm_name(ID, Direction::Out)],
        meta("SCALING", 3, Some(900)),
    );
    let recheck = calls.scaler().recheck().await.unwrap();
    match reaction(&recheck) {
        ScaleReaction::Unchanged { why, .. } => assert!(why.contains("SCALING"), "{why}"),
        other => panic!("{other:?}"),
    }
    calls.assert_nothing_mutated();
}

#[tokio::test]
async fn with_no_alarm_in_alarm_a_recheck_makes_one_call() {
    let calls = Calls::new(&[], meta("READY", 3, None));
    let recheck = calls.scaler().recheck().await.unwrap();
    assert!(recheck.alarms.is_empty());
    assert_eq!(calls.describe.num_calls(), 1);
    assert_eq!(calls.get.num_calls(), 0);
    assert_eq!(calls.query.num_calls(), 0);
    calls.assert_nothing_mutated();
}

#[tokio::test]
async fn alarms_of_other_stacks_or_gone_clusters_change_nothing() {
    let calls = Calls::new(&["ha-c-0123456789ab-web-high"], HashMap::new());
    let none =
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let scaler = calls.scaler_with(ClusterStore::new(
        crate::mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&none, &calls.update]),
        "table",
    ));
    let recheck = scaler.recheck().await.unwrap();
    assert_eq!(
        reaction(&recheck),
        &ScaleReaction::Unchanged {
            cluster_id: ID.into(),
            why: "no such cluster".into()
        }
    );
    calls.assert_nothing_mutated();
}

#[tokio::test]
async fn every_page_of_alarms_is_read() {
    let first = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|r| r.next_token().is_none() && r.max_records() == Some(100))
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(
                    MetricAlarm::builder()
                        .alarm_name("ha-c-000000000001-web-high")
                        .state_value(StateValue::Alarm)
                        .build(),
                )
                .next_token("page-2")
                .build()
        });
    let second = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(
                    MetricAlarm::builder()
                        .alarm_name("ha-c-000000000002-web-low")
                        .state_value(StateValue::Alarm)
                        .build(),
                )
                .build()
        });
    let states = AlarmStates::new(crate::mocked_client!(
        aws_sdk_cloudwatch,
        RuleMode::MatchAny,
        [&first, &second]
    ));
    assert_eq!(
        states.in_alarm(CLUSTER_ALARM_PREFIX).await.unwrap(),
        vec!["ha-c-000000000001-web-high", "ha-c-000000000002-web-low"]
    );
}

/// The alarm sample in `events/` as EventBridge delivers it, renamed to `name` and in
/// state `value`.
fn alarm_event(name: &str, value: &str) -> AlarmEvent {
    let mut json: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/alarm-high-request-count.json"
    )))
    .expect("the sample parses");
    json["detail"]["alarmName"] = name.into();
    json["detail"]["state"]["value"] = value.into();
    match crate::tasks::events::ScalingTrigger::from_json(json).expect("an alarm event") {
        crate::tasks::events::ScalingTrigger::Alarm(event) => *event,
        other => panic!("not an alarm event: {other:?}"),
    }
}

/// No call to any client: the reaction decided from the event alone.
fn assert_nothing_called(calls: &Calls) {
    assert_eq!(calls.describe.num_calls(), 0, "DescribeAlarms");
    assert_eq!(calls.get.num_calls(), 0, "GetItem");
    assert_eq!(calls.query.num_calls(), 0, "Query");
    calls.assert_nothing_mutated();
}

#[tokio::test]
async fn an_alarm_going_to_alarm_steps_once_and_starts_the_scaling_run() {
    for (direction, from, to) in [(Direction::Out, 3, 4), (Direction::In, 3, 2)] {
        let calls = Calls::new(&[], meta("READY", from, None));
        let event = alarm_event(&alarm_name(ID, direction), "ALARM");
        let reaction = calls.scaler().on_alarm(&event).await.unwrap();
        assert_eq!(
            reaction,
            ScaleReaction::Started {
                cluster_id: ID.into(),
                generation: 6,
                from,
                to
            },
            "{direction:?}"
        );
        assert_eq!(calls.describe.num_calls(), 0, "the event says the state");
        assert_eq!(calls.update.num_calls(), 1, "the step's conditional write");
        assert_eq!(calls.put.num_calls(), 1, "the action log entry");
        assert_eq!(calls.start.num_calls(), 1, "the scaling run");
    }
}

#[tokio::test]
async fn an_alarm_back_to_ok_or_without_data_does_nothing() {
    for value in ["OK", "INSUFFICIENT_DATA"] {
        let calls = Calls::new(&[], meta("READY", 3, None));
        let event = alarm_event(&alarm_name(ID, Direction::Out), value);
        let reaction = calls.scaler().on_alarm(&event).await.unwrap();
        assert_eq!(reaction, ScaleReaction::NotAlarming, "{value}");
        assert_nothing_called(&calls);
    }
}

#[tokio::test]
async fn an_alarm_not_named_after_a_cluster_is_foreign() {
    // Another application's alarm, and one whose id is not a valid cluster id (uppercase).
    for name in [
        "my-app-cpu-high",
        "ha-c-0123456789AB-web-high",
        "ha-c-0123456789ab-db-high",
    ] {
        let calls = Calls::new(&[], meta("READY", 3, None));
        let reaction = calls
            .scaler()
            .on_alarm(&alarm_event(name, "ALARM"))
            .await
            .unwrap();
        assert_eq!(reaction, ScaleReaction::ForeignAlarm, "{name}");
        assert_nothing_called(&calls);
    }
}

/// An alarm of a cluster being deleted (its alarms go with the teardown, and may fire
/// meanwhile): nothing to scale and nothing for EventBridge to retry.
#[tokio::test]
async fn an_alarm_of_a_cluster_being_deleted_changes_nothing() {
    let calls = Calls::new(&[], meta("DELETING", 3, None));
    let event = alarm_event(&alarm_name(ID, Direction::Out), "ALARM");
    let reaction = calls.scaler().on_alarm(&event).await.unwrap();
    match reaction {
        ScaleReaction::Unchanged { cluster_id, why } => {
            assert_eq!(cluster_id, ID);
            assert_eq!(
                why,
                format!("cluster {ID} is DELETING; it is not scaled any more")
            );
        }
        other => panic!("{other:?}"),
    }
    calls.assert_nothing_mutated();
}
