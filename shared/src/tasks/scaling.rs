//! Scaling the web tier on its CloudWatch alarms.
//!
//! A cluster's alarms are named `ha-<cluster id>-web-high` (scale out by one when it goes
//! to ALARM) and `ha-<cluster id>-web-low` (scale in by one). A step stays within the
//! cluster's scaling bounds, and a change within the cooldown of the last one is refused, so
//! an alarm that keeps firing does not flap the fleet. The scaling run itself is
//! `ClusterWorkflow` with reason `scale`: scale-out launches and registers; scale-in
//! deregisters the newest slot, waits for its connections to drain, then terminates it.
//!
//! ## A sustained breach keeps stepping
//! CloudWatch sends "CloudWatch Alarm State Change" to EventBridge when an alarm changes
//! state, and only then
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html>);
//! its alarm actions, too, run once per transition and are not repeated while the condition
//! lasts, with Auto Scaling actions as the one exception
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-actions.html>).
//! That exception is what makes EC2 Auto Scaling's step and simple scaling policies act
//! again and again while their alarm stays in ALARM
//! (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-scaling-simple-step.html>).
//! Our alarms have no actions (EventBridge routes them), so on the event alone an alarm
//! that stays in ALARM would scale once and never again.
//!
//! Decision: a schedule (`ScalingRecheckSchedule`, every minute) invokes the function with a
//! Scheduled Event, and [`Scaler::recheck`] asks CloudWatch once which `ha-c-` alarms are in
//! ALARM (DescribeAlarms filtered by name prefix and state, one page per 100 alarms). For
//! each, it steps again through the same path as the event (same bounds, same cooldown,
//! same run and action log entry, which says it is a sustained breach) when
//! - the cluster is READY: the previous step's run has finished, so its instances are in
//!   the metric the alarm watches. Simple scaling policies likewise wait for the scaling
//!   activity to complete before they answer an alarm again, and step scaling counts
//!   instances still warming up as already there; a new generation would also supersede
//!   the run half-way;
//! - the cooldown has passed since the cluster's last change of the web count;
//! - the step would not leave the bounds (at a bound it logs why and does nothing).
//!
//! A recheck that finds nothing due reads one DynamoDB item per alarm in ALARM and writes
//! nothing; with no alarm in ALARM it makes the one DescribeAlarms call. The low alarm of an
//! idle cluster stays in ALARM (no traffic counts as below), so an idle web tier now shrinks
//! step by step to its minimum, as the alarm was meant to make it; an operator's `PATCH`
//! above what the load needs is likewise undone one step per cooldown, as an Auto Scaling
//! group's policies undo a manual desired capacity.

use crate::aws::alarms::AlarmStates;
use crate::aws::store::{ClusterStore, ScaleTarget, Scaled};
use crate::aws::workflow::Workflow;
use crate::domain::cluster::Phase;
use crate::domain::runs::{RunReason, WorkflowInput};
use crate::domain::scaling::{CLUSTER_ALARM_PREFIX, Direction, parse_alarm_name};
use crate::error::Result;
use crate::tasks::events::{AlarmEvent, AlarmValue};

/// What an alarm event or a recheck led to (logged, and returned for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleReaction {
    /// Not one of the orchestrator's alarms.
    ForeignAlarm,
    /// The alarm went to OK or INSUFFICIENT_DATA: nothing to do.
    NotAlarming,
    Unchanged {
        cluster_id: String,
        why: String,
    },
    Started {
        cluster_id: String,
        generation: u64,
        from: u32,
        to: u32,
    },
}

/// What one recheck found and did, alarm by alarm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recheck {
    /// (alarm name, what it led to) for every cluster alarm in ALARM.
    pub alarms: Vec<(String, ScaleReaction)>,
}

#[derive(Debug, Clone)]
pub struct Scaler {
    pub store: ClusterStore,
    pub workflow: Workflow,
    pub alarms: AlarmStates,
    pub cooldown_seconds: i64,
}

impl Scaler {
    #[tracing::instrument(skip_all, fields(alarm = %event.detail.alarm_name, state = ?event.detail.state.value))]
    pub async fn on_alarm(&self, event: &AlarmEvent) -> Result<ScaleReaction> {
        let Some((cluster_id, direction)) = parse_alarm_name(&event.detail.alarm_name) else {
            return Ok(ScaleReaction::ForeignAlarm);
        };
        if event.detail.state.value != AlarmValue::Alarm {
            return Ok(ScaleReaction::NotAlarming);
        }
        self.step(
            cluster_id.into(),
            direction,
            &format!("by alarm {}", event.detail.alarm_name),
        )
        .await
    }

    /// Step again for every cluster alarm still in ALARM whose cluster is due (see the
    /// module doc). One cluster's failure does not stop the others; the first error is
    /// returned once all were tried, so the invocation fails visibly and the next tick
    /// tries again.
    #[tracing::instrument(skip_all)]
    pub async fn recheck(&self) -> Result<Recheck> {
        let mut recheck = Recheck::default();
        let mut first_error = None;
        for name in self.alarms.in_alarm(CLUSTER_ALARM_PREFIX).await? {
            let reaction = match parse_alarm_name(&name) {
                None => Ok(ScaleReaction::ForeignAlarm),
                Some((cluster_id, direction)) => {
                    self.step_if_due(cluster_id.into(), direction, &name).await
                }
            };
            match reaction {
                Ok(reaction) => {
                    tracing::info!(alarm = %name, ?reaction, "alarm still in ALARM rechecked");
                    recheck.alarms.push((name, reaction));
                }
                Err(error) => {
                    tracing::warn!(alarm = %name, error = %error, "alarm still in ALARM: recheck failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(recheck),
        }
    }

    /// The step for an alarm that stayed in ALARM, when the cluster is READY, out of its
    /// cooldown and not at the bound; otherwise why not, from one read and no write.
    async fn step_if_due(
        &self,
        cluster_id: String,
        direction: Direction,
        alarm: &str,
    ) -> Result<ScaleReaction> {
        let unchanged =
            |cluster_id: String, why: String| ScaleReaction::Unchanged { cluster_id, why };
        let Some(state) = self.store.scale_state(&cluster_id).await? else {
            return Ok(unchanged(cluster_id, "no such cluster".into()));
        };
        if state.phase != Phase::Ready {
            let why = format!(
                "the cluster is {}, not READY: the next step waits for the running one to finish",
                state.phase.as_str()
            );
            return Ok(unchanged(cluster_id, why));
        }
        if let Some(last) = state.last_scaled_at {
            let since = crate::domain::cluster::epoch_seconds() - last;
            if since < self.cooldown_seconds {
                let why = format!(
                    "the last scaling of cluster {cluster_id} is {since}s ago, less than the \
                     cooldown ({}s)",
                    self.cooldown_seconds
                );
                return Ok(unchanged(cluster_id, why));
            }
        }
        let at_bound = match direction {
            Direction::Out => state.web >= state.bounds.max_web,
            Direction::In => state.web <= state.bounds.min_web,
        };
        if at_bound {
            let why = format!(
                "at the bound: the web tier has {} (bounds {}-{})",
                state.web, state.bounds.min_web, state.bounds.max_web
            );
            return Ok(unchanged(cluster_id, why));
        }
        self.step(
            cluster_id,
            direction,
            &format!("by alarm {alarm}, still in ALARM after the cooldown (sustained breach)"),
        )
        .await
    }

    /// One step in `direction` and its run: the path every alarm-driven change takes.
    async fn step(
        &self,
        cluster_id: String,
        direction: Direction,
        why: &str,
    ) -> Result<ScaleReaction> {
        let scaled = match self
            .store
            .request_scale(
                &cluster_id,
                ScaleTarget::Step(direction.step()),
                Some(self.cooldown_seconds),
            )
            .await
        {
            // The alarm names a cluster that is gone: nothing to scale, nothing to retry.
            Err(crate::Error::NotFound { .. }) => {
                return Ok(ScaleReaction::Unchanged {
                    cluster_id,
                    why: "no such cluster".into(),
                });
            }
            Err(deleting @ crate::Error::ClusterDeleting { .. }) => {
                return Ok(ScaleReaction::Unchanged {
                    cluster_id,
                    why: deleting.to_string(),
                });
            }
            other => other?,
        };
        match scaled {
            Scaled::Unchanged(why) => Ok(ScaleReaction::Unchanged { cluster_id, why }),
            Scaled::Started {
                generation,
                from,
                to,
            } => {
                self.workflow
                    .start_explained(
                        &self.store,
                        WorkflowInput {
                            cluster_id: cluster_id.clone(),
                            generation,
                            reason: RunReason::Scale,
                        },
                        "ScaleRequested",
                        &format!("web {from} -> {to} {why}"),
                    )
                    .await?;
                Ok(ScaleReaction::Started {
                    cluster_id,
                    generation,
                    from,
                    to,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            Scaler {
                store: ClusterStore::new(
                    crate::mocked_client!(
                        aws_sdk_dynamodb,
                        RuleMode::MatchAny,
                        [&self.get, &self.query, &self.update, &self.put]
                    ),
                    "table",
                ),
                workflow: Workflow::new(
                    crate::mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&self.start]),
                    "arn:aws:states:us-east-1:1:stateMachine:w",
                ),
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
        let mut scaler = calls.scaler();
        scaler.store = ClusterStore::new(
            crate::mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&calls.get, &calls.query, &cooled, &logged]
            ),
            "table",
        );
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
        let mut scaler = calls.scaler();
        let none = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().build());
        scaler.store = ClusterStore::new(
            crate::mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&none, &calls.update]),
            "table",
        );
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
}
