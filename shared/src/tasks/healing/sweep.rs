//! The scheduled sweep: what events miss. EventBridge delivery is not guaranteed, so every
//! few minutes each READY cluster is compared with one fleet-wide view of EC2: a node whose
//! instance is lost starts a heal exactly as its event would have. A cluster with no lost
//! node then has its web targets judged ([`super::web_health`]) and, when due, its database
//! group surveyed ([`crate::tasks::survey`]).
//!
//! The sweep's cost grows with pages, not clusters: one `DescribeInstances` per 1,000
//! instances, one `DescribeRules` per 400 rules, one `GetMetricData` per 100 clusters, and a
//! `DescribeTargetHealth` only for the groups the metrics do not show entirely healthy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Healer;
use crate::aws::health_metrics::HealthCounts;
use crate::aws::store::HealthWatch;
use crate::aws::targets::{ClusterRule, Routing};
use crate::concurrency::bounded;
use crate::domain::cluster::epoch_seconds;
use crate::domain::cluster::{Cluster, InstanceState, Tier};
use crate::error::Result;
use crate::tasks::runs::HealCause;

/// What one sweep saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// READY clusters looked at.
    pub clusters_checked: usize,
    /// EC2 and ELBv2 Describe calls: grow with clusters / 100 plus the groups in trouble.
    pub describe_calls: usize,
    /// `GetMetricData` calls (one per page of up to 100 clusters).
    pub metric_calls: usize,
    /// Target groups whose metrics showed every web target healthy: not described.
    pub describes_spared: usize,
    /// Healing runs started: (cluster id, instance id) of the node replaced.
    pub heals_started: Vec<(String, String)>,
    /// Health replacements held back by the window: (cluster id, instance id).
    pub replacements_held: Vec<(String, String)>,
    /// Clusters with unhealthy web targets and none healthy: nothing replaced (fail open,
    /// see [`super::web_health::may_replace_unhealthy`]).
    pub failing_open: Vec<String>,
    /// Listener rules switched to or from the maintenance page: (cluster id, routing now).
    pub routing_changes: Vec<(String, Routing)>,
    /// Membership surveys sent: (cluster id, command id).
    pub surveys_sent: Vec<(String, String)>,
}

impl SweepReport {
    /// Add one cluster's part to the sweep's report.
    fn absorb(&mut self, part: SweepReport) {
        self.clusters_checked += part.clusters_checked;
        self.describe_calls += part.describe_calls;
        self.metric_calls += part.metric_calls;
        self.describes_spared += part.describes_spared;
        self.heals_started.extend(part.heals_started);
        self.replacements_held.extend(part.replacements_held);
        self.failing_open.extend(part.failing_open);
        self.routing_changes.extend(part.routing_changes);
        self.surveys_sent.extend(part.surveys_sent);
    }
}

/// Clusters the sweep works on at once: enough to hide the round trips, few enough to stay
/// far below the APIs' request rates.
pub const SWEEP_CONCURRENCY: usize = 8;
/// Membership surveys one sweep sends at most (one SSM command each): a fleet surveyed for
/// the first time is covered over several sweeps instead of in one burst of SendCommand.
pub const MAX_SURVEYS_PER_SWEEP: usize = 200;

impl Healer {
    /// The scheduled sweep: every READY cluster against one fleet-wide view of EC2 (a page
    /// per 1,000 instances), of the listener's rules (a page per 400) and of the ALB's
    /// health metrics (a `GetMetricData` per page of 100 clusters; see
    /// [`crate::aws::health_metrics`]). `DescribeTargetHealth` (ELBv2 has no multi-group form)
    /// is called only for the groups the metrics do not show entirely healthy. Each page's
    /// clusters are read and checked [`SWEEP_CONCURRENCY`] at a time.
    ///
    /// - A node whose instance is lost without its event having arrived (EventBridge
    ///   delivery is not guaranteed) starts a healing run, exactly as the event would have.
    /// - A web target unhealthy for [`HealthPolicy::unhealthy_after_seconds`] while another
    ///   web target of its cluster is healthy is replaced ([`super::web_health::may_replace_unhealthy`]), at most
    ///   once per slot per [`HealthPolicy::replace_window_seconds`]; a replacement held back
    ///   by that window is noted once in the action log.
    /// - A cluster with web targets of which none is healthy gets the maintenance page on its
    ///   listener rule until one is healthy again.
    /// - Otherwise its database group is surveyed (one SSM command, at most once per
    ///   [`HealthPolicy::survey_interval_seconds`] and [`MAX_SURVEYS_PER_SWEEP`] per sweep;
    ///   see [`crate::tasks::survey`]).
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> Result<SweepReport> {
        let (states, describe_calls) = self.instances.observe_all().await?;
        let rules = self.targets.cluster_rules().await?;
        let mut report = SweepReport {
            describe_calls: describe_calls + 1,
            ..SweepReport::default()
        };
        let states = Arc::new(states);
        let rules = Arc::new(rules);
        let survey_budget = Arc::new(AtomicUsize::new(MAX_SURVEYS_PER_SWEEP));
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_clusters(crate::aws::store::MAX_PAGE_SIZE, after.as_deref())
                .await?;
            let ready: Vec<String> = page
                .items
                .iter()
                .filter(|c| c.phase == crate::domain::cluster::Phase::Ready)
                .map(|c| c.id.clone())
                .collect();
            let clusters: Vec<(Cluster, HealthWatch)> = bounded(ready, SWEEP_CONCURRENCY, |id| {
                let store = self.store.clone();
                async move { store.get_watched_cluster(&id).await }
            })
            .await?
            .into_iter()
            .flatten()
            .collect();
            let health_counts = Arc::new(self.page_health_counts(&clusters, &mut report).await);
            let parts = bounded(clusters, SWEEP_CONCURRENCY, |(cluster, watch)| {
                let healer = self.clone();
                let (states, rules, health_counts, survey_budget) = (
                    states.clone(),
                    rules.clone(),
                    health_counts.clone(),
                    survey_budget.clone(),
                );
                async move {
                    healer
                        .sweep_cluster(
                            &cluster,
                            &watch,
                            &states,
                            &rules,
                            &health_counts,
                            &survey_budget,
                        )
                        .await
                }
            })
            .await?;
            for part in parts {
                report.absorb(part);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(report)
    }

    /// One READY cluster: lost nodes first; else target health, and the survey when due.
    async fn sweep_cluster(
        &self,
        cluster: &Cluster,
        watch: &HealthWatch,
        states: &HashMap<String, InstanceState>,
        rules: &HashMap<String, ClusterRule>,
        health_counts: &HashMap<String, HealthCounts>,
        survey_budget: &AtomicUsize,
    ) -> Result<SweepReport> {
        let mut report = SweepReport {
            clusters_checked: 1,
            ..SweepReport::default()
        };
        if self.heal_lost_nodes(cluster, states, &mut report).await? {
            return Ok(report);
        }
        self.check_web_health(cluster, watch, rules, health_counts, &mut report)
            .await?;
        let survey_due = watch
            .surveyed_at
            .is_none_or(|at| epoch_seconds() - at >= self.policy.survey_interval_seconds);
        if report.heals_started.is_empty()
            && survey_due
            && survey_budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            && let Some(command_id) = self
                .survey
                .survey(cluster, self.policy.survey_interval_seconds)
                .await?
        {
            report.surveys_sent.push((cluster.id.clone(), command_id));
        }
        Ok(report)
    }

    /// The ALB's health metrics for one page of clusters. Unreadable metrics only cost
    /// calls: every group is then described, so the sweep goes on without them.
    async fn page_health_counts(
        &self,
        clusters: &[(Cluster, HealthWatch)],
        report: &mut SweepReport,
    ) -> HashMap<String, HealthCounts> {
        let groups: Vec<&str> = clusters
            .iter()
            .filter(|(c, _)| c.nodes.iter().any(|n| n.tier == Tier::Web))
            .filter_map(|(c, _)| c.target_group_arn.as_deref())
            .collect();
        if groups.is_empty() {
            return HashMap::new();
        }
        match self.metrics.counts(&groups).await {
            Ok((counts, calls)) => {
                report.metric_calls += calls;
                counts
            }
            Err(error) => {
                tracing::warn!(error = %error, groups = groups.len(), "target health metrics unreadable; describing every target group");
                HashMap::new()
            }
        }
    }

    /// Heal the nodes whose instances EC2 no longer runs; true when a run started.
    async fn heal_lost_nodes(
        &self,
        cluster: &Cluster,
        states: &HashMap<String, InstanceState>,
        report: &mut SweepReport,
    ) -> Result<bool> {
        for node in &cluster.nodes {
            let Some(instance_id) = &node.instance_id else {
                continue;
            };
            let state = states.get(instance_id).copied();
            if state.is_some_and(InstanceState::is_alive) {
                continue;
            }
            let why = match state {
                Some(state) => format!("{} (found by the sweep)", state.as_str()),
                None => "gone (found by the sweep)".into(),
            };
            let detail = format!("{instance_id} ({}) is {why}", node.slot);
            if self
                .runs
                .heal(&cluster.id, instance_id, HealCause::Lost, &detail)
                .await?
                .is_some()
            {
                report
                    .heals_started
                    .push((cluster.id.clone(), instance_id.clone()));
                return Ok(true);
            }
        }
        Ok(false)
    }
}
