//! Typed `detail` payloads of the EventBridge events the orchestrator reacts to, and the
//! input its Step Functions tasks receive. Field names follow what AWS documents and emits;
//! the samples in `events/` are parsed by the tests below, one test per trigger.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::domain::cluster::InstanceState;
use crate::domain::commands::CommandStatus;
use crate::error::{Error, Result};

/// `(source, detail-type)` of an EC2 instance state change: a node may be lost.
pub const EC2_STATE_CHANGE: (&str, &str) = ("aws.ec2", "EC2 Instance State-change Notification");
/// `(source, detail-type)` of an SSM command invocation status change: a command ended.
pub const SSM_COMMAND_STATUS: (&str, &str) = (
    "aws.ssm",
    "EC2 Command Invocation Status-change Notification",
);
/// `(source, detail-type)` of a CloudWatch alarm state change: a scaling alarm moved.
pub const ALARM_STATE_CHANGE: (&str, &str) = ("aws.cloudwatch", "CloudWatch Alarm State Change");
/// `(source, detail-type)` of an EventBridge schedule: the sweep and the scaling recheck.
pub const SCHEDULED: (&str, &str) = ("aws.events", "Scheduled Event");

/// `source: aws.ec2`, `detail-type: EC2 Instance State-change Notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStateChange {
    #[serde(rename = "instance-id")]
    /// The instance whose state changed (`instance-id`).
    pub instance_id: String,
    /// The state it entered; a loss is stopping, stopped, shutting-down or terminated.
    pub state: InstanceState,
}

/// `source: aws.ssm`, `detail-type: EC2 Command Invocation Status-change Notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInvocationStatusChange {
    #[serde(rename = "command-id")]
    /// The command, as SendCommand returned it; the key of its record.
    pub command_id: String,
    #[serde(rename = "document-name")]
    /// The document the command ran; tells a database step from a survey.
    pub document_name: String,
    #[serde(rename = "instance-id")]
    /// The instance this invocation ran on.
    pub instance_id: String,
    #[serde(rename = "requested-date-time")]
    /// When the command was sent, as SSM reports it.
    pub requested_date_time: String,
    /// The invocation's status; only a terminal one resolves the command.
    pub status: CommandStatus,
}

/// `source: aws.cloudwatch`, `detail-type: CloudWatch Alarm State Change`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmStateChange {
    /// The alarm's name, which carries the cluster id and the direction.
    pub alarm_name: String,
    /// The state it moved to.
    pub state: AlarmState,
    /// The state it left.
    pub previous_state: AlarmState,
}

/// One side of an alarm's transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmState {
    /// OK, ALARM or INSUFFICIENT_DATA; only ALARM scales.
    pub value: AlarmValue,
    /// CloudWatch's explanation, kept for the log.
    #[serde(default)]
    pub reason: String,
    /// When the alarm entered this state.
    #[serde(default)]
    pub timestamp: String,
}

/// A CloudWatch alarm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmValue {
    /// The metric is within the threshold.
    Ok,
    /// The metric breached the threshold: step the web tier.
    Alarm,
    /// Not enough data to decide: nothing is done.
    InsufficientData,
}

/// `source: aws.events`, `detail-type: Scheduled Event`: the detail is an empty object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledTick {}

/// The whole EventBridge envelope of an instance state change.
pub type InstanceStateChangeEvent = EventBridgeEvent<InstanceStateChange>;
/// The whole EventBridge envelope of a command status change.
pub type CommandStatusEvent = EventBridgeEvent<CommandInvocationStatusChange>;
/// The whole EventBridge envelope of an alarm state change.
pub type AlarmEvent = EventBridgeEvent<AlarmStateChange>;
/// The whole EventBridge envelope of a scheduled tick.
pub type ScheduleEvent = EventBridgeEvent<ScheduledTick>;

/// `(source, detail-type)` of an EventBridge event, if it is one.
fn envelope(value: &Value) -> Option<(&str, &str)> {
    Some((
        value.get("source")?.as_str()?,
        value.get("detail-type")?.as_str()?,
    ))
}

fn parse_as<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::MalformedEvent(format!("{what}: {e}")))
}

/// What the `instance-events` function is invoked with.
#[derive(Debug, Clone, PartialEq)]
pub enum HealingTrigger {
    /// An instance changed state: heal it if it was lost.
    InstanceStateChange(InstanceStateChangeEvent),
    /// The sweep schedule: look for what events missed.
    Sweep(ScheduleEvent),
}

impl HealingTrigger {
    /// Classify by `source` and `detail-type`; anything else is a [`Error::MalformedEvent`]
    /// the caller logs and drops (EventBridge would only retry it).
    pub fn from_json(value: Value) -> Result<Self> {
        match envelope(&value) {
            Some(EC2_STATE_CHANGE) => Ok(Self::InstanceStateChange(parse_as(
                value,
                EC2_STATE_CHANGE.1,
            )?)),
            Some(SCHEDULED) => Ok(Self::Sweep(parse_as(value, SCHEDULED.1)?)),
            other => Err(Error::MalformedEvent(format!(
                "instance-events handles EC2 state changes and the sweep schedule, not {other:?}"
            ))),
        }
    }
}

/// What the `replication` function is invoked with: a workflow task, or the SSM status
/// change that resumes a waiting one.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicationTrigger {
    /// A `ClusterWorkflow` database task (a step to send, with its task token).
    Task(Box<crate::tasks::replication::TaskRequest>),
    /// A command ended: answer the task waiting on it.
    CommandStatus(Box<CommandStatusEvent>),
}

impl ReplicationTrigger {
    /// An EventBridge envelope is a command status change; anything without one is a
    /// workflow task's input. Another source is a [`Error::MalformedEvent`].
    pub fn from_json(value: Value) -> Result<Self> {
        match envelope(&value) {
            Some(SSM_COMMAND_STATUS) => Ok(Self::CommandStatus(Box::new(parse_as(
                value,
                SSM_COMMAND_STATUS.1,
            )?))),
            Some(other) => Err(Error::MalformedEvent(format!(
                "replication handles SSM command status changes, not {other:?}"
            ))),
            None => Ok(Self::Task(parse_as(value, "workflow task input")?)),
        }
    }
}

/// What the `scaling` function is invoked with: an alarm's state change, or the recheck
/// schedule that steps again while an alarm stays in ALARM (the scaling task's recheck).
#[derive(Debug, Clone, PartialEq)]
pub enum ScalingTrigger {
    /// A scaling alarm changed state.
    Alarm(Box<AlarmEvent>),
    /// The recheck schedule: step again while an alarm stays in ALARM.
    Recheck(ScheduleEvent),
}

impl ScalingTrigger {
    /// Classify by `source` and `detail-type`; anything else is a [`Error::MalformedEvent`].
    pub fn from_json(value: Value) -> Result<Self> {
        match envelope(&value) {
            Some(ALARM_STATE_CHANGE) => Ok(Self::Alarm(Box::new(parse_as(
                value,
                ALARM_STATE_CHANGE.1,
            )?))),
            Some(SCHEDULED) => Ok(Self::Recheck(parse_as(value, SCHEDULED.1)?)),
            other => Err(Error::MalformedEvent(format!(
                "scaling handles CloudWatch alarm state changes and its recheck schedule, \
                 not {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runs::{RunReason, WorkflowInput};
    use std::path::{Path, PathBuf};

    fn events_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
    }

    fn read(name: &str) -> String {
        let path = events_dir().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Parses one sample as `T`, failing with the file name and serde's message.
    fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("events/{name}: {e}"))
    }

    /// Every file in events/ with the type it must parse into. A new sample without an
    /// entry here fails `every_sample_event_has_a_typed_parser`.
    /// A sample file and the check that parses it.
    type SampleCheck = (&'static str, fn(&str));

    fn parsers() -> Vec<SampleCheck> {
        vec![
            ("ec2-instance-terminated.json", |n| {
                let e: InstanceStateChangeEvent = parse(n);
                assert_eq!(e.source, "aws.ec2");
                assert_eq!(e.detail.state, InstanceState::Terminated);
                assert!(e.detail.state.is_lost());
            }),
            ("ec2-instance-running.json", |n| {
                let e: InstanceStateChangeEvent = parse(n);
                assert_eq!(e.detail.state, InstanceState::Running);
                assert!(!e.detail.state.is_lost());
            }),
            ("ssm-command-success.json", |n| {
                let e: CommandStatusEvent = parse(n);
                assert_eq!(e.source, "aws.ssm");
                assert_eq!(e.detail.status, CommandStatus::Success);
                assert!(e.detail.status.is_terminal());
            }),
            ("ssm-command-failed.json", |n| {
                let e: CommandStatusEvent = parse(n);
                assert_eq!(e.detail.status, CommandStatus::Failed);
            }),
            ("alarm-high-request-count.json", |n| {
                let e: AlarmEvent = parse(n);
                assert_eq!(e.source, "aws.cloudwatch");
                assert_eq!(e.detail.state.value, AlarmValue::Alarm);
                assert_eq!(e.detail.previous_state.value, AlarmValue::Ok);
            }),
            ("schedule-sweep.json", |n| {
                let e: ScheduleEvent = parse(n);
                assert_eq!(e.detail_type, "Scheduled Event");
            }),
            ("schedule-scaling-recheck.json", |n| {
                let e: ScheduleEvent = parse(n);
                assert_eq!(e.source, "aws.events");
                let rule = e.resources.unwrap_or_default().concat();
                assert!(rule.contains(":rule/"), "{rule}");
            }),
            ("schedule-backups-tick.json", |n| {
                // What functions/backups takes: a Scheduled Event from its own rule.
                let e: ScheduleEvent = parse(n);
                assert_eq!((e.source.as_str(), e.detail_type.as_str()), SCHEDULED);
                let rule = e.resources.unwrap_or_default().concat();
                assert!(rule.contains(":rule/"), "{rule}");
            }),
            ("alb-health-check.json", |n| {
                let e: aws_lambda_events::alb::AlbTargetGroupRequest = parse(n);
                assert_eq!(e.path.as_deref(), Some("/_health"));
            }),
            ("alb-status-page.json", |n| {
                let e: aws_lambda_events::alb::AlbTargetGroupRequest = parse(n);
                assert_eq!(e.path.as_deref(), Some("/_status"));
            }),
            ("apigw-list-clusters.json", |n| {
                let e: aws_lambda_events::apigw::ApiGatewayV2httpRequest = parse(n);
                assert_eq!(e.raw_path.as_deref(), Some("/clusters"));
                assert_eq!(e.request_context.http.method.as_str(), "GET");
            }),
            ("apigw-list-clusters-bad-limit.json", |n| {
                let e: aws_lambda_events::apigw::ApiGatewayV2httpRequest = parse(n);
                assert_eq!(e.raw_query_string.as_deref(), Some("limit=0"));
            }),
            ("provision-task-launch.json", |n| {
                let e: crate::tasks::provision::TaskRequest = parse(n);
                assert_eq!(e.task, crate::tasks::provision::Task::Launch);
                assert_eq!(e.lease_token, Some(1));
            }),
            ("replication-task-converge.json", |n| {
                let e: crate::tasks::replication::TaskRequest = parse(n);
                assert_eq!(e.task, crate::tasks::replication::Task::DbConverge);
                let report = &e.previous.unwrap().outputs[0].stdout;
                assert!(
                    !crate::domain::report::NodeReport::from_output(report)
                        .unwrap()
                        .in_group()
                );
            }),
            ("workflow-create.json", |n| {
                let e: WorkflowInput = parse(n);
                assert_eq!(e.reason, RunReason::Create);
            }),
        ]
    }

    #[test]
    fn every_sample_event_parses_into_its_type() {
        for (name, check) in parsers() {
            check(name);
        }
    }

    #[test]
    fn every_sample_event_has_a_typed_parser() {
        let known: Vec<&str> = parsers().iter().map(|(name, _)| *name).collect();
        let mut files: Vec<String> = std::fs::read_dir(events_dir())
            .expect("events/ exists")
            .map(|entry| {
                entry
                    .expect("readable")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for file in files {
            assert!(
                known.contains(&file.as_str()),
                "events/{file} has no parser in events.rs tests; add one"
            );
        }
    }

    fn json(name: &str) -> Value {
        serde_json::from_str(&read(name)).unwrap()
    }

    #[test]
    fn triggers_are_classified_by_source_and_detail_type() {
        assert!(matches!(
            HealingTrigger::from_json(json("ec2-instance-terminated.json")),
            Ok(HealingTrigger::InstanceStateChange(_))
        ));
        assert!(matches!(
            HealingTrigger::from_json(json("schedule-sweep.json")),
            Ok(HealingTrigger::Sweep(_))
        ));
        assert!(matches!(
            ReplicationTrigger::from_json(json("ssm-command-success.json")),
            Ok(ReplicationTrigger::CommandStatus(_))
        ));
        assert!(matches!(
            ReplicationTrigger::from_json(json("replication-task-converge.json")),
            Ok(ReplicationTrigger::Task(_))
        ));
        assert!(matches!(
            ScalingTrigger::from_json(json("alarm-high-request-count.json")),
            Ok(ScalingTrigger::Alarm(_))
        ));
        assert!(matches!(
            ScalingTrigger::from_json(json("schedule-scaling-recheck.json")),
            Ok(ScalingTrigger::Recheck(_))
        ));
    }

    #[test]
    fn foreign_and_malformed_events_are_malformed_event_errors() {
        let foreign = HealingTrigger::from_json(json("alarm-high-request-count.json")).unwrap_err();
        assert!(matches!(foreign, Error::MalformedEvent(_)), "{foreign}");
        let mut no_detail = json("ec2-instance-terminated.json");
        no_detail.as_object_mut().unwrap().remove("detail");
        let missing = HealingTrigger::from_json(no_detail).unwrap_err();
        assert!(matches!(missing, Error::MalformedEvent(_)), "{missing}");
        assert!(ScalingTrigger::from_json(json("ec2-instance-terminated.json")).is_err());
        assert!(ReplicationTrigger::from_json(serde_json::json!({"clusterId": 5})).is_err());
    }

    #[test]
    fn a_foreign_detail_is_refused_not_guessed() {
        let mut alarm: serde_json::Value =
            serde_json::from_str(&read("alarm-high-request-count.json")).unwrap();
        alarm["source"] = "aws.ec2".into();
        assert!(serde_json::from_value::<InstanceStateChangeEvent>(alarm).is_err());
    }
}
