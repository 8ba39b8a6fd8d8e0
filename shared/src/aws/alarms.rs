//! CloudWatch adapter: the two scaling alarms every cluster gets on its target group's
//! `RequestCountPerTarget` (requests per web target per minute, which the ALB publishes).
//!
//! - `ha-<cluster>-web-high`: above the scale-out threshold for 3 minutes in a row;
//! - `ha-<cluster>-web-low`: below the scale-in threshold for 15 minutes in a row (no
//!   requests at all counts as below: an idle web tier shrinks to its minimum).
//!
//! They have no alarm actions: CloudWatch sends every state change to EventBridge, where
//! the stack's rule hands `ha-c-*` alarms to the `scaling` function
//! (the scaling task). The register task puts them (PutMetricAlarm overwrites, so
//! every run may), the purge task deletes them. An event comes only with a state change,
//! so the scaling function's recheck schedule also asks which of them are still in ALARM
//! ([`AlarmStates::in_alarm`]).

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic, Tag};

use crate::aws::fleet::TAG_CLUSTER;
use crate::domain::scaling::{Direction, alarm_name};
use crate::error::{Result, from_sdk};

/// Thresholds in requests per target per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmSettings {
    /// Above this for 3 minutes in a row, the cluster gets one more web instance.
    pub scale_out_requests_per_target: f64,
    /// Below this (or no requests) for 15 minutes in a row, one web instance less.
    pub scale_in_requests_per_target: f64,
}

impl AlarmSettings {
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let threshold = |name: &'static str| -> Result<f64> {
            let text = crate::config::required_from(name, &lookup)?;
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| crate::Error::InvalidConfig {
                    name,
                    value: text.clone(),
                    reason: "expected requests per target per minute, 0 or more".into(),
                })
        };
        let settings = Self {
            scale_out_requests_per_target: threshold("SCALE_OUT_REQUESTS_PER_TARGET")?,
            scale_in_requests_per_target: threshold("SCALE_IN_REQUESTS_PER_TARGET")?,
        };
        if settings.scale_in_requests_per_target >= settings.scale_out_requests_per_target {
            return Err(crate::Error::InvalidConfig {
                name: "SCALE_IN_REQUESTS_PER_TARGET",
                value: settings.scale_in_requests_per_target.to_string(),
                reason: format!(
                    "must be below SCALE_OUT_REQUESTS_PER_TARGET ({}), or the two alarms \
                     would fight",
                    settings.scale_out_requests_per_target
                ),
            });
        }
        Ok(settings)
    }

    /// From `SCALE_OUT_REQUESTS_PER_TARGET` and `SCALE_IN_REQUESTS_PER_TARGET`.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

/// The `TargetGroup` dimension CloudWatch uses: the ARN's `targetgroup/<name>/<id>`.
pub fn target_group_dimension(target_group_arn: &str) -> Option<&str> {
    target_group_arn
        .find("targetgroup/")
        .map(|at| &target_group_arn[at..])
}

/// Puts and deletes a cluster's two scaling alarms (the register and purge tasks).
#[derive(Debug, Clone)]
pub struct ScalingAlarms {
    client: aws_sdk_cloudwatch::Client,
    settings: AlarmSettings,
}

impl ScalingAlarms {
    pub(crate) fn new(client: aws_sdk_cloudwatch::Client, settings: AlarmSettings) -> Self {
        Self { client, settings }
    }

    /// Put both alarms of the cluster on its target group (created or brought up to date).
    pub async fn ensure(&self, cluster_id: &str, target_group_arn: &str) -> Result<()> {
        let dimension = target_group_dimension(target_group_arn).ok_or_else(|| {
            crate::Error::CorruptRecord {
                key: cluster_id.to_string(),
                problem: format!(
                    "target group ARN {target_group_arn} has no targetgroup/<name>/<id>"
                ),
            }
        })?;
        for direction in [Direction::Out, Direction::In] {
            let (threshold, comparison, periods, missing, verb) = match direction {
                Direction::Out => (
                    self.settings.scale_out_requests_per_target,
                    ComparisonOperator::GreaterThanThreshold,
                    3,
                    "notBreaching",
                    "add",
                ),
                Direction::In => (
                    self.settings.scale_in_requests_per_target,
                    ComparisonOperator::LessThanThreshold,
                    15,
                    "breaching",
                    "remove",
                ),
            };
            self.client
                .put_metric_alarm()
                .alarm_name(alarm_name(cluster_id, direction))
                .alarm_description(format!(
                    "ha-orchestrator: {verb} one web instance of {cluster_id} (handled by the \
                     scaling function through EventBridge)"
                ))
                .namespace("AWS/ApplicationELB")
                .metric_name("RequestCountPerTarget")
                .dimensions(
                    Dimension::builder()
                        .name("TargetGroup")
                        .value(dimension)
                        .build(),
                )
                .statistic(Statistic::Sum)
                .period(60)
                .evaluation_periods(periods)
                .threshold(threshold)
                .comparison_operator(comparison)
                .treat_missing_data(missing)
                .actions_enabled(false)
                .tags(Tag::builder().key(TAG_CLUSTER).value(cluster_id).build())
                .send()
                .await
                .map_err(|e| from_sdk("cloudwatch", "PutMetricAlarm", e))?;
        }
        Ok(())
    }

    /// Delete both alarms; deleting an absent alarm is not an error in CloudWatch.
    pub async fn delete(&self, cluster_id: &str) -> Result<()> {
        self.client
            .delete_alarms()
            .alarm_names(alarm_name(cluster_id, Direction::Out))
            .alarm_names(alarm_name(cluster_id, Direction::In))
            .send()
            .await
            .map_err(|e| from_sdk("cloudwatch", "DeleteAlarms", e))?;
        Ok(())
    }
}

/// Reads the alarms' current states (the `scaling` function holds no thresholds, so this
/// is apart from [`ScalingAlarms`]).
#[derive(Debug, Clone)]
pub struct AlarmStates {
    client: aws_sdk_cloudwatch::Client,
}

impl AlarmStates {
    pub(crate) fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        Self { client }
    }

    /// Names of the metric alarms starting with `prefix` that are in ALARM now. CloudWatch
    /// filters by name prefix and state server-side, 100 alarms a page (the most
    /// DescribeAlarms' MaxRecords allows), so a fleet with nothing alarming costs one call.
    pub async fn in_alarm(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self
            .client
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .state_value(StateValue::Alarm)
            .max_records(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("cloudwatch", "DescribeAlarms", e))?;
            names.extend(
                page.metric_alarms()
                    .iter()
                    .filter(|a| a.state_value() == Some(&StateValue::Alarm))
                    .filter_map(|a| a.alarm_name().map(str::to_string)),
            );
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_dimension_is_the_arn_suffix() {
        assert_eq!(
            target_group_dimension(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/ha-c-0123456789ab/73e2d6bc24d8a067"
            ),
            Some("targetgroup/ha-c-0123456789ab/73e2d6bc24d8a067")
        );
        assert_eq!(
            target_group_dimension("arn:aws:sns:us-east-1:1:topic"),
            None
        );
    }

    #[test]
    fn thresholds_must_leave_a_gap() {
        let ok = AlarmSettings::from_lookup(env(&[
            ("SCALE_OUT_REQUESTS_PER_TARGET", "1000"),
            ("SCALE_IN_REQUESTS_PER_TARGET", "100"),
        ]))
        .expect("valid");
        assert_eq!(ok.scale_out_requests_per_target, 1000.0);
        let fighting = AlarmSettings::from_lookup(env(&[
            ("SCALE_OUT_REQUESTS_PER_TARGET", "100"),
            ("SCALE_IN_REQUESTS_PER_TARGET", "100"),
        ]))
        .unwrap_err();
        assert!(fighting.to_string().contains("would fight"), "{fighting}");
        let negative = AlarmSettings::from_lookup(env(&[
            ("SCALE_OUT_REQUESTS_PER_TARGET", "-1"),
            ("SCALE_IN_REQUESTS_PER_TARGET", "0"),
        ]))
        .unwrap_err();
        assert!(negative.to_string().contains("SCALE_OUT"), "{negative}");
    }
}
