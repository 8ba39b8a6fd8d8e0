//! The sweep's verdict on a READY cluster's web targets: which node to replace for its
//! health, and when the cluster gets the maintenance page.
//!
//! The web health check is deep (the user data's endpoint answers 200 only after a query
//! through the node's Router), so a database outage fails it on every web node at once.
//! Replacing web nodes then only adds a storm of launches to the outage (the deep health
//! check trap: AWS Builders' Library, "Implementing health checks", fail open when every
//! target fails). The rule ([`may_replace_unhealthy`]): an unhealthy web node is replaced
//! only while another web target of its cluster passes the same check, which proves the
//! database path and the shared configuration work and the fault is the node's own. While
//! none passes, no web node is replaced and their unhealthy clocks are dropped, so a node
//! that recovers a little later than its peers after the outage is not replaced for the
//! outage's minutes; the cluster gets the maintenance page instead. A cluster with a single
//! web node therefore never has it replaced for health (loss of its instance still heals);
//! an operator replaces it by hand (`POST /clusters/{id}/nodes/{instanceId}/replace`).
//!
//! A node is replaced only after [`super::HealthPolicy::unhealthy_after_seconds`] of
//! failing while a peer passes, and a slot at most once per
//! [`super::HealthPolicy::replace_window_seconds`] (anti-flapping: a held replacement is
//! noted once in the action log, for an operator).

use std::collections::HashMap;

use super::Healer;
use super::sweep::SweepReport;
use crate::aws::health_metrics::HealthCounts;
use crate::aws::store::HealthWatch;
use crate::aws::targets::{ClusterRule, Routing};
use crate::domain::cluster::epoch_seconds;
use crate::domain::cluster::{Cluster, Node, Tier};
use crate::error::Result;
use crate::tasks::runs::HealCause;

/// Whether the sweep may replace an unhealthy web node of a cluster in which
/// `healthy_targets` other web targets pass the health check. The check runs a query
/// through the node's Router, so it fails on every node when the database tier is down (or
/// anything else all nodes share); only a passing peer shows that the node itself is at
/// fault. Zero passing: fail open (replace nothing; the module documentation says why).
pub fn may_replace_unhealthy(healthy_targets: usize) -> bool {
    healthy_targets > 0
}

impl Healer {
    /// Target health of one READY cluster: replace a target unhealthy beyond the threshold
    /// (anti-flapping), and route the cluster to the maintenance page while none is healthy.
    pub(super) async fn check_web_health(
        &self,
        cluster: &Cluster,
        watch: &HealthWatch,
        rules: &HashMap<String, ClusterRule>,
        health_counts: &HashMap<String, HealthCounts>,
        report: &mut SweepReport,
    ) -> Result<()> {
        let web: Vec<&Node> = cluster
            .nodes
            .iter()
            .filter(|n| n.tier == Tier::Web && n.instance_id.is_some())
            .collect();
        let Some(target_group_arn) = cluster.target_group_arn.as_deref() else {
            return Ok(());
        };
        if web.is_empty() {
            return Ok(());
        }
        // Nothing to find when the metrics show every target healthy, nobody is being
        // watched and the cluster is served (not on the maintenance page).
        let serving = rules
            .get(target_group_arn)
            .is_none_or(|rule| rule.routing == Routing::Serving);
        if serving
            && watch.unhealthy_since.is_empty()
            && health_counts
                .get(target_group_arn)
                .is_some_and(|counts| counts.all_healthy(web.len()))
        {
            report.describes_spared += 1;
            return Ok(());
        }
        let health: HashMap<String, String> = self
            .targets
            .health(target_group_arn)
            .await?
            .into_iter()
            .map(|t| (t.instance_id, t.state))
            .collect();
        report.describe_calls += 1;
        let now = epoch_seconds();
        let state_of = |node: &Node| {
            node.instance_id
                .as_deref()
                .and_then(|id| health.get(id))
                .map(String::as_str)
        };
        let healthy = web
            .iter()
            .filter(|n| state_of(n) == Some("healthy"))
            .count();
        let unhealthy = web
            .iter()
            .filter(|n| state_of(n) == Some("unhealthy"))
            .count();
        let fail_open = unhealthy > 0 && !may_replace_unhealthy(healthy);
        if fail_open {
            report.failing_open.push(cluster.id.clone());
        }
        let mut replacement: Option<(&Node, i64)> = None;
        for node in &web {
            let Some(instance_id) = node.instance_id.as_deref() else {
                continue;
            };
            let state = state_of(node);
            let failing = state == Some("unhealthy");
            if state == Some("healthy") || (failing && fail_open) {
                // Passing; or failing while no web target passes, so the node is not shown
                // to be at fault: no clock runs (it restarts when a peer passes again).
                if watch.unhealthy_since.contains_key(instance_id) {
                    self.store.clear_watch(&cluster.id, instance_id).await?;
                }
            } else if failing {
                let since = match watch.unhealthy_since.get(instance_id) {
                    Some(since) => *since,
                    None => self.store.watch_unhealthy(&cluster.id, instance_id).await?,
                };
                let for_seconds = now - since;
                if for_seconds >= self.policy.unhealthy_after_seconds && replacement.is_none() {
                    replacement = Some((node, for_seconds));
                }
            }
            // initial, draining, unused: not a verdict on the node.
        }
        let routing = if healthy == 0 && unhealthy > 0 {
            Routing::Maintenance
        } else {
            Routing::Serving
        };
        if let Some(rule) = rules.get(target_group_arn)
            && rule.routing != routing
            && (healthy > 0 || unhealthy > 0)
        {
            self.targets
                .route(&rule.rule_arn, target_group_arn, routing)
                .await?;
            let (action, detail) = match routing {
                Routing::Maintenance => (
                    "MaintenanceOn",
                    format!(
                        "none of the {} web targets is healthy: {}.* gets the maintenance page; \
                         no web node is replaced while none passes (the database or another \
                         shared dependency is the likelier cause)",
                        web.len(),
                        cluster.spec.name
                    ),
                ),
                Routing::Serving => (
                    "MaintenanceOff",
                    format!(
                        "{healthy} web target(s) healthy again: {}.* is served by them",
                        cluster.spec.name
                    ),
                ),
            };
            self.store
                .append_action(&cluster.id, cluster.generation, action, &detail)
                .await?;
            report.routing_changes.push((cluster.id.clone(), routing));
        }
        if let Some((node, for_seconds)) = replacement {
            self.replace_unhealthy(cluster, node, for_seconds, watch, report)
                .await?;
        }
        Ok(())
    }

    /// One replacement of an unhealthy web node, unless its slot had one within the window.
    async fn replace_unhealthy(
        &self,
        cluster: &Cluster,
        node: &Node,
        for_seconds: i64,
        watch: &HealthWatch,
        report: &mut SweepReport,
    ) -> Result<()> {
        let Some(instance_id) = node.instance_id.as_deref() else {
            return Ok(());
        };
        let window = self.policy.replace_window_seconds;
        let recently = watch
            .replaced_at
            .get(&node.slot)
            .is_some_and(|at| epoch_seconds() - at < window);
        if recently
            || !self
                .store
                .claim_replacement(&cluster.id, &node.slot, instance_id, window)
                .await?
        {
            if self
                .store
                .note_replacement_held(&cluster.id, &node.slot, instance_id)
                .await?
            {
                self.store
                    .append_action(
                        &cluster.id,
                        cluster.generation,
                        "ReplacementHeld",
                        &format!(
                            "{instance_id} ({}) has failed health checks for {for_seconds} s, \
                             but {} was already replaced within the last {window} s: left \
                             for an operator (POST /clusters/{}/nodes/{instance_id}/replace)",
                            node.slot, node.slot, cluster.id
                        ),
                    )
                    .await?;
            }
            report
                .replacements_held
                .push((cluster.id.clone(), instance_id.to_string()));
            return Ok(());
        }
        let why = format!("unhealthy behind the ALB for {for_seconds} s (found by the sweep)");
        let detail = format!("{instance_id} ({}) is {why}", node.slot);
        match self
            .runs
            .heal(&cluster.id, instance_id, HealCause::Unhealthy, &detail)
            .await
        {
            Ok(Some(_)) => {
                report
                    .heals_started
                    .push((cluster.id.clone(), instance_id.to_string()));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                self.store
                    .release_replacement(&cluster.id, &node.slot)
                    .await?;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mocked_client;
    use crate::tasks::healing::testing::{ID, cluster, healer_with};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth, TargetHealthDescription, TargetHealthStateEnum,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    /// The ALB's answer: (instance, state) per target.
    fn described(targets: &[(&str, TargetHealthStateEnum)]) -> Rule {
        let targets: Vec<(String, TargetHealthStateEnum)> = targets
            .iter()
            .map(|(id, state)| (id.to_string(), state.clone()))
            .collect();
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health).then_output(
            move || {
                let mut out = aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput::builder();
                for (id, state) in &targets {
                    out = out.target_health_descriptions(
                        TargetHealthDescription::builder()
                            .target(TargetDescription::builder().id(id).build())
                            .target_health(TargetHealth::builder().state(state.clone()).build())
                            .build(),
                    );
                }
                out.build()
            },
        )
    }

    /// Every store and workflow call a replacement makes, answered with success, so a test
    /// sees what the sweep decided, not where a missing rule stopped it.
    struct Calls {
        clear_watch: Rule,
        update: Rule,
        put: Rule,
        start: Rule,
    }

    impl Calls {
        fn new() -> Self {
            Self {
                clear_watch: mock!(aws_sdk_dynamodb::Client::delete_item).then_output(|| {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder().build()
                }),
                // watch_unhealthy (since = now) and request_heal (the new generation).
                update: mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder()
                        .attributes("generation", AttributeValue::N("3".into()))
                        .attributes("since", AttributeValue::N(epoch_seconds().to_string()))
                        .build()
                }),
                // claim_replacement and append_action.
                put: mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
                    aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
                }),
                start: mock!(aws_sdk_sfn::Client::start_execution).then_output(|| {
                    aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
                        .execution_arn("arn:aws:states:us-east-1:1:execution:cluster:run")
                        .start_date(aws_smithy_types::DateTime::from_secs(0))
                        .build()
                        .unwrap()
                }),
            }
        }

        fn healer(&self, elbv2: &Rule) -> Healer {
            healer_with(
                mocked_client!(
                    aws_sdk_dynamodb,
                    RuleMode::MatchAny,
                    [&self.clear_watch, &self.update, &self.put]
                ),
                mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&self.start]),
                mocked_client!(aws_sdk_elasticloadbalancingv2, RuleMode::MatchAny, [elbv2]),
            )
        }
    }

    /// Watched unhealthy for `ago` seconds: each of `instances`.
    fn watched(instances: &[&str], ago: i64) -> HealthWatch {
        HealthWatch {
            unhealthy_since: instances
                .iter()
                .map(|id| (id.to_string(), epoch_seconds() - ago))
                .collect(),
            ..HealthWatch::default()
        }
    }

    async fn check(healer: &Healer, cluster: &Cluster, watch: &HealthWatch) -> SweepReport {
        let mut report = SweepReport::default();
        healer
            .check_web_health(
                cluster,
                watch,
                &HashMap::new(),
                &HashMap::new(),
                &mut report,
            )
            .await
            .expect("checked");
        report
    }

    #[test]
    fn only_a_passing_peer_allows_a_health_replacement() {
        assert!(!may_replace_unhealthy(0));
        assert!(may_replace_unhealthy(1));
        assert!(may_replace_unhealthy(3));
    }

    /// A database outage fails the deep health check on every web node: long past the
    /// threshold, none is replaced, and their clocks restart (so a node that recovers a few
    /// checks after its peers is not replaced for the outage's minutes).
    #[tokio::test]
    async fn every_web_target_failing_replaces_none_and_restarts_their_clocks() {
        let cluster = cluster(&["web-0", "web-1"]);
        let elbv2 = described(&[
            ("i-web-0", TargetHealthStateEnum::Unhealthy),
            ("i-web-1", TargetHealthStateEnum::Unhealthy),
        ]);
        let calls = Calls::new();
        let healer = calls.healer(&elbv2);
        let report = check(&healer, &cluster, &watched(&["i-web-0", "i-web-1"], 1000)).await;
        assert!(report.heals_started.is_empty(), "{report:?}");
        assert!(report.replacements_held.is_empty(), "{report:?}");
        assert_eq!(report.failing_open, vec![ID.to_string()]);
        assert_eq!(calls.start.num_calls(), 0, "a healing run started");
        assert_eq!(calls.put.num_calls(), 0, "a replacement was claimed");
        assert_eq!(calls.clear_watch.num_calls(), 2, "both clocks restart");
        assert_eq!(calls.update.num_calls(), 0, "a new watch started");
    }

    /// The single web node of a cluster has no peer to vouch for the database: never
    /// replaced for health (its loss still heals).
    #[tokio::test]
    async fn a_lone_failing_web_node_is_not_replaced_for_health() {
        let cluster = cluster(&["web-0"]);
        let elbv2 = described(&[("i-web-0", TargetHealthStateEnum::Unhealthy)]);
        let calls = Calls::new();
        let healer = calls.healer(&elbv2);
        let report = check(&healer, &cluster, &watched(&["i-web-0"], 1000)).await;
        assert!(report.heals_started.is_empty(), "{report:?}");
        assert_eq!(calls.start.num_calls(), 0);
    }

    /// A peer passes the same check: the database path works and the fault is the node's.
    #[tokio::test]
    async fn an_unhealthy_node_beside_a_healthy_one_is_replaced() {
        let cluster = cluster(&["web-0", "web-1"]);
        let elbv2 = described(&[
            ("i-web-0", TargetHealthStateEnum::Healthy),
            ("i-web-1", TargetHealthStateEnum::Unhealthy),
        ]);
        let calls = Calls::new();
        let healer = calls.healer(&elbv2);
        let report = check(&healer, &cluster, &watched(&["i-web-1"], 1000)).await;
        assert_eq!(
            report.heals_started,
            vec![(ID.to_string(), "i-web-1".to_string())]
        );
        assert!(report.failing_open.is_empty());
        assert_eq!(calls.start.num_calls(), 1);
        assert_eq!(calls.clear_watch.num_calls(), 0);
    }

    /// Not a loop: a slot replaced for health within the window is not replaced again, even
    /// beside a healthy peer; the action log says so once (note_replacement_held).
    #[tokio::test]
    async fn a_slot_replaced_within_the_window_is_held_not_replaced_again() {
        let cluster = cluster(&["web-0", "web-1"]);
        let elbv2 = described(&[
            ("i-web-0", TargetHealthStateEnum::Healthy),
            ("i-web-1", TargetHealthStateEnum::Unhealthy),
        ]);
        let calls = Calls::new();
        let healer = calls.healer(&elbv2);
        let mut watch = watched(&["i-web-1"], 1000);
        watch
            .replaced_at
            .insert("web-1".into(), epoch_seconds() - 600);
        let report = check(&healer, &cluster, &watch).await;
        assert!(report.heals_started.is_empty(), "{report:?}");
        assert_eq!(
            report.replacements_held,
            vec![(ID.to_string(), "i-web-1".to_string())]
        );
        assert_eq!(calls.start.num_calls(), 0);
    }

    /// After an outage (clocks restarted), a node still failing while a peer passes is only
    /// watched from now on: replaced after the threshold, not at once.
    #[tokio::test]
    async fn a_node_lagging_a_recovery_gets_a_fresh_clock() {
        let cluster = cluster(&["web-0", "web-1"]);
        let elbv2 = described(&[
            ("i-web-0", TargetHealthStateEnum::Healthy),
            ("i-web-1", TargetHealthStateEnum::Unhealthy),
        ]);
        let calls = Calls::new();
        let healer = calls.healer(&elbv2);
        let report = check(&healer, &cluster, &HealthWatch::default()).await;
        assert!(report.heals_started.is_empty(), "{report:?}");
        assert_eq!(calls.update.num_calls(), 1, "the watch starts");
        assert_eq!(calls.start.num_calls(), 0);
    }
}
