//! The sweep's first look at web target health: the ALB's own `HealthyHostCount` and
//! `UnHealthyHostCount` per target group, read from CloudWatch for the whole fleet with
//! `GetMetricData` (500 queries per call, so one call per 250 target groups).
//!
//! ELBv2 has no call that describes the health of many target groups at once, so asking
//! `DescribeTargetHealth` of every cluster costs one call per cluster and sweep. The metrics
//! let the sweep describe only the groups that need a closer look: any unhealthy target in
//! the window, fewer healthy targets than web nodes, or no data at all (a new group, or a
//! local cloud whose ALB publishes no metrics). Metrics only ever save calls; when they
//! cannot be read, every group is described, as before.

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;

use crate::aws::alarms::target_group_dimension;
use crate::error::{Result, from_sdk};

/// `GetMetricData` takes at most 500 queries; each target group needs two.
pub const QUERIES_PER_CALL: usize = 500;
/// How far back the sweep looks: about one sweep interval (the ALB publishes every minute).
pub const WINDOW_SECONDS: i64 = 300;
const PERIOD_SECONDS: i32 = 60;
/// Where the ALB publishes its per-target-group metrics.
pub const NAMESPACE: &str = "AWS/ApplicationELB";
/// Healthy targets of a target group, per minute.
pub const HEALTHY: &str = "HealthyHostCount";
/// Unhealthy targets of a target group, per minute.
pub const UNHEALTHY: &str = "UnHealthyHostCount";

/// What CloudWatch said about one target group within the window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealthCounts {
    /// The fewest healthy targets in any minute of the window.
    pub healthy_min: Option<f64>,
    /// The most unhealthy targets in any minute of the window.
    pub unhealthy_max: Option<f64>,
}

impl HealthCounts {
    /// Whether the metrics alone show all `web_nodes` targets healthy all the time: then
    /// there is nothing for `DescribeTargetHealth` to find.
    pub fn all_healthy(&self, web_nodes: usize) -> bool {
        matches!(
            (self.healthy_min, self.unhealthy_max),
            (Some(healthy), Some(unhealthy)) if unhealthy == 0.0 && healthy >= web_nodes as f64
        )
    }
}

/// The `LoadBalancer` dimension, `app/<name>/<id>`, from the listener's ARN
/// (`…:listener/app/<name>/<id>/<listener-id>`).
pub fn load_balancer_dimension(listener_arn: &str) -> Option<String> {
    let rest = &listener_arn[listener_arn.find("listener/")? + "listener/".len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    (parts.len() == 4).then(|| parts[..3].join("/"))
}

/// Reads every target group's health counts for the sweep in a few calls.
#[derive(Debug, Clone)]
pub struct TargetHealthMetrics {
    client: aws_sdk_cloudwatch::Client,
    load_balancer: Option<String>,
}

impl TargetHealthMetrics {
    pub(crate) fn new(client: aws_sdk_cloudwatch::Client, listener_arn: &str) -> Self {
        Self {
            client,
            load_balancer: load_balancer_dimension(listener_arn),
        }
    }

    /// The health counts of `target_group_arns` (absent when CloudWatch has no data for a
    /// group) and how many `GetMetricData` calls that took.
    pub async fn counts(
        &self,
        target_group_arns: &[&str],
    ) -> Result<(HashMap<String, HealthCounts>, usize)> {
        let Some(load_balancer) = &self.load_balancer else {
            return Ok((HashMap::new(), 0));
        };
        // Query ids must start with a lower-case letter: h<n> and u<n> index the groups.
        let groups: Vec<(&str, &str)> = target_group_arns
            .iter()
            .filter_map(|arn| Some((*arn, target_group_dimension(arn)?)))
            .collect();
        let end = crate::domain::cluster::epoch_seconds();
        let mut counts: HashMap<String, HealthCounts> = HashMap::new();
        let mut calls = 0;
        for (chunk_index, chunk) in groups.chunks(QUERIES_PER_CALL / 2).enumerate() {
            let base = chunk_index * QUERIES_PER_CALL / 2;
            let mut queries = Vec::with_capacity(chunk.len() * 2);
            for (offset, (_, dimension)) in chunk.iter().enumerate() {
                let n = base + offset;
                queries.push(query(
                    &format!("h{n}"),
                    HEALTHY,
                    "Minimum",
                    dimension,
                    load_balancer,
                ));
                queries.push(query(
                    &format!("u{n}"),
                    UNHEALTHY,
                    "Maximum",
                    dimension,
                    load_balancer,
                ));
            }
            let mut next_token: Option<String> = None;
            loop {
                let output = self
                    .client
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(DateTime::from_secs(end - WINDOW_SECONDS))
                    .end_time(DateTime::from_secs(end))
                    .scan_by(ScanBy::TimestampDescending)
                    .set_next_token(next_token.clone())
                    .send()
                    .await
                    .map_err(|e| from_sdk("monitoring", "GetMetricData", e))?;
                calls += 1;
                for result in output.metric_data_results() {
                    let Some(id) = result.id() else { continue };
                    let (kind, index) = id.split_at(1);
                    let Some((arn, _)) = index.parse::<usize>().ok().and_then(|i| groups.get(i))
                    else {
                        continue;
                    };
                    // A result can come in several pages: fold every page's values in.
                    let entry = counts.entry((*arn).to_string()).or_default();
                    let values = result.values().iter().copied();
                    match kind {
                        "h" => {
                            entry.healthy_min = values.fold(entry.healthy_min, |seen, v| {
                                Some(seen.map_or(v, |s| s.min(v)))
                            });
                        }
                        _ => {
                            entry.unhealthy_max = values.fold(entry.unhealthy_max, |seen, v| {
                                Some(seen.map_or(v, |s| s.max(v)))
                            });
                        }
                    }
                }
                match output.next_token() {
                    Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                    _ => break,
                }
            }
        }
        counts.retain(|_, c| c.healthy_min.is_some() || c.unhealthy_max.is_some());
        Ok((counts, calls))
    }
}

fn query(
    id: &str,
    metric: &str,
    stat: &str,
    target_group: &str,
    load_balancer: &str,
) -> MetricDataQuery {
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    MetricDataQuery::builder()
        .id(id)
        .return_data(true)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(metric)
                        .dimensions(dimension("TargetGroup", target_group))
                        .dimensions(dimension("LoadBalancer", load_balancer))
                        .build(),
                )
                .period(PERIOD_SECONDS)
                .stat(stat)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock};

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/ha-alb/50dc6c495c0c9188/f2f7dc8efc522ab2";

    fn arn(n: usize) -> String {
        format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/ha-c-{n}/{n:016x}")
    }

    #[test]
    fn the_load_balancer_dimension_comes_from_the_listener() {
        assert_eq!(
            load_balancer_dimension(LISTENER).as_deref(),
            Some("app/ha-alb/50dc6c495c0c9188")
        );
        assert_eq!(load_balancer_dimension("arn:listener"), None);
    }

    #[test]
    fn only_complete_healthy_data_spares_a_describe() {
        let counts = |healthy, unhealthy| HealthCounts {
            healthy_min: healthy,
            unhealthy_max: unhealthy,
        };
        assert!(counts(Some(2.0), Some(0.0)).all_healthy(2));
        assert!(
            !counts(Some(1.0), Some(0.0)).all_healthy(2),
            "a target missing"
        );
        assert!(
            !counts(Some(2.0), Some(1.0)).all_healthy(2),
            "one unhealthy"
        );
        assert!(!counts(None, Some(0.0)).all_healthy(2), "no healthy data");
        assert!(!counts(Some(2.0), None).all_healthy(2), "no unhealthy data");
    }

    #[tokio::test]
    async fn six_hundred_groups_take_three_calls_and_map_back_to_their_arns() {
        // One rule per call, told apart by the call's first query id: 250 groups per call.
        let call = |first: &'static str, answer: fn() -> GetMetricDataOutput| {
            mock!(aws_sdk_cloudwatch::Client::get_metric_data)
                .match_requests(move |req| {
                    req.metric_data_queries().first().and_then(|q| q.id()) == Some(first)
                        && req.metric_data_queries().len() <= QUERIES_PER_CALL
                })
                .then_output(answer)
        };
        let first = call("h0", || {
            GetMetricDataOutput::builder()
                .metric_data_results(result("h0", &[2.0, 2.0]))
                .metric_data_results(result("u0", &[0.0, 0.0]))
                .metric_data_results(result("h1", &[2.0, 1.0]))
                .metric_data_results(result("u1", &[0.0, 1.0]))
                .build()
        });
        let second = call("h250", || {
            GetMetricDataOutput::builder()
                .metric_data_results(result("h250", &[]))
                .build()
        });
        let third = call("h500", || GetMetricDataOutput::builder().build());
        let client = crate::mocked_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&first, &second, &third]
        );
        let metrics = TargetHealthMetrics::new(client, LISTENER);
        let arns: Vec<String> = (0..600).map(arn).collect();
        let refs: Vec<&str> = arns.iter().map(String::as_str).collect();
        let (counts, calls) = metrics.counts(&refs).await.unwrap();
        assert_eq!(calls, 3, "600 groups x 2 queries / 500 per call");
        for rule in [&first, &second, &third] {
            assert_eq!(rule.num_calls(), 1);
        }
        assert!(counts[&arns[0]].all_healthy(2));
        assert_eq!(counts[&arns[1]].healthy_min, Some(1.0));
        assert_eq!(counts[&arns[1]].unhealthy_max, Some(1.0));
        assert!(!counts.contains_key(&arns[250]), "no data is no entry");
    }

    #[tokio::test]
    async fn a_later_page_without_values_keeps_what_an_earlier_page_said() {
        let first = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
            .match_requests(|req| req.next_token().is_none())
            .then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(result("h0", &[2.0]))
                    .metric_data_results(result("u0", &[0.0]))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
            .match_requests(|req| req.next_token() == Some("page-2"))
            .then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(result("h0", &[]))
                    .metric_data_results(result("u0", &[1.0]))
                    .build()
            });
        let client =
            crate::mocked_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&first, &second]);
        let arns = [arn(0)];
        let (counts, calls) = TargetHealthMetrics::new(client, LISTENER)
            .counts(&[arns[0].as_str()])
            .await
            .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(counts[&arns[0]].healthy_min, Some(2.0));
        assert_eq!(counts[&arns[0]].unhealthy_max, Some(1.0));
    }

    fn result(id: &str, values: &[f64]) -> MetricDataResult {
        MetricDataResult::builder()
            .id(id)
            .set_values(Some(values.to_vec()))
            .build()
    }
}
