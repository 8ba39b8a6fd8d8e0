//! Reacting to EC2 "Instance State-change Notification" events: a cluster node that stops
//! or terminates starts a healing run of `ClusterWorkflow`, which launches a replacement in
//! the same slot (and zone), registers it or adds it to the group, and removes the lost
//! member. The reaction itself changes no node: only the run's lease holder does.
//!
//! Duplicates and stale events change nothing: an event id is handled once (a record with
//! a day's TTL), a loss already being healed does not start a second run (the cluster
//! remembers its lost instances until a run finishes READY), and an instance that is no
//! longer any node's (already replaced, or never ours) is ignored.
//!
//! The scheduled sweep ([`Healer::sweep`]) catches what events miss: lost instances whose
//! event never came, web targets that stay unhealthy, and clusters with no healthy target.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::aws::health_metrics::{HealthCounts, TargetHealthMetrics};
use crate::aws::store::{ClusterStore, HealthWatch};
use crate::aws::targets::{ClusterRule, Routing, WebTargets};
use crate::aws::workflow::Workflow;
use crate::concurrency::bounded;
use crate::domain::cluster::epoch_seconds;
use crate::domain::cluster::{Cluster, InstanceState, Node, Tier};
use crate::domain::runs::{RunReason, WorkflowInput};
use crate::error::Result;
use crate::tasks::events::InstanceStateChangeEvent;
use crate::tasks::survey::MembershipSurvey;

/// What an event led to (logged, and returned for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// `pending`/`running`: nothing lost.
    NotALoss,
    /// This event id was handled before.
    Duplicate,
    /// No node has this instance: another application's, or already replaced.
    UnknownInstance,
    /// The loss is already being healed, or the cluster is being deleted.
    AlreadyHandled {
        cluster_id: String,
    },
    Started {
        cluster_id: String,
        generation: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Healer {
    pub store: ClusterStore,
    pub workflow: Workflow,
    pub ec2: aws_sdk_ec2::Client,
    pub targets: WebTargets,
    /// The fleet-wide first look at target health (one `GetMetricData` per page of clusters).
    pub metrics: TargetHealthMetrics,
    pub survey: MembershipSurvey,
    pub policy: HealthPolicy,
}

/// When the sweep replaces an unhealthy web node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How long a target must stay unhealthy (as successive sweeps see it) before its node
    /// is replaced. The ALB's own threshold has already passed by then.
    pub unhealthy_after_seconds: i64,
    /// At most one health replacement per slot within this time (anti-flapping: a fault the
    /// node does not cause, such as a bad deploy, must not churn the fleet).
    pub replace_window_seconds: i64,
    /// Time between two membership surveys of one cluster (see [`crate::tasks::survey`]).
    pub survey_interval_seconds: i64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            unhealthy_after_seconds: 300,
            replace_window_seconds: 3600,
            survey_interval_seconds: crate::tasks::survey::DEFAULT_SURVEY_SECONDS,
        }
    }
}

impl HealthPolicy {
    /// `UNHEALTHY_REPLACE_SECONDS`, `REPLACE_WINDOW_SECONDS` and `MEMBERSHIP_SURVEY_SECONDS`,
    /// each defaulting when unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let defaults = Self::default();
        let seconds = |name, default| crate::config::seconds_or(name, default, &lookup);
        Ok(Self {
            unhealthy_after_seconds: seconds(
                "UNHEALTHY_REPLACE_SECONDS",
                defaults.unhealthy_after_seconds,
            )?,
            replace_window_seconds: seconds(
                "REPLACE_WINDOW_SECONDS",
                defaults.replace_window_seconds,
            )?,
            survey_interval_seconds: seconds(
                "MEMBERSHIP_SURVEY_SECONDS",
                defaults.survey_interval_seconds,
            )?,
        })
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

/// Why a node is replaced: its instance is lost, or it is alive but unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealKind {
    Lost,
    Replace,
}

/// What one sweep saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub clusters_checked: usize,
    /// EC2 and ELBv2 Describe calls: grow with clusters / 100 plus the groups in trouble.
    pub describe_calls: usize,
    /// `GetMetricData` calls (one per page of up to 100 clusters).
    pub metric_calls: usize,
    /// Target groups whose metrics showed every web target healthy: not described.
    pub describes_spared: usize,
    pub heals_started: Vec<(String, String)>,
    pub replacements_held: Vec<(String, String)>,
    /// Clusters with unhealthy web targets and none healthy: nothing replaced (fail open,
    /// see [`may_replace_unhealthy`]).
    pub failing_open: Vec<String>,
    pub routing_changes: Vec<(String, Routing)>,
    /// Membership surveys sent: (cluster id, command id).
    pub surveys_sent: Vec<(String, String)>,
}

impl SweepReport {
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

/// Whether the sweep may replace an unhealthy web node of a cluster in which
/// `healthy_targets` other web targets pass the health check. The check runs a query
/// through the node's Router, so it fails on every node when the database tier is down (or
/// anything else all nodes share); only a passing peer shows that the node itself is at
/// fault. Zero passing: fail open (replace nothing; the module documentation says why).
pub fn may_replace_unhealthy(healthy_targets: usize) -> bool {
    healthy_targets > 0
}

/// Clusters the sweep works on at once: enough to hide the round trips, few enough to stay
/// far below the APIs' request rates.
pub const SWEEP_CONCURRENCY: usize = 8;
/// Membership surveys one sweep sends at most (one SSM command each): a fleet surveyed for
/// the first time is covered over several sweeps instead of in one burst of SendCommand.
pub const MAX_SURVEYS_PER_SWEEP: usize = 200;

impl Healer {
    /// Start one healing run for a lost instance; `None` when its loss is already being
    /// healed or the cluster is being deleted.
    async fn start_heal(
        &self,
        cluster_id: &str,
        instance_id: &str,
        slot: &str,
        why: &str,
        kind: HealKind,
    ) -> Result<Option<u64>> {
        let Some(generation) = self
            .store
            .request_heal(cluster_id, instance_id, kind == HealKind::Replace)
            .await?
        else {
            return Ok(None);
        };
        self.workflow
            .start_explained(
                &self.store,
                WorkflowInput {
                    cluster_id: cluster_id.to_string(),
                    generation,
                    reason: RunReason::Heal,
                },
                match kind {
                    HealKind::Lost => "InstanceLost",
                    HealKind::Replace => "TargetUnhealthy",
                },
                &format!("{instance_id} ({slot}) is {why}"),
            )
            .await?;
        Ok(Some(generation))
    }

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
    ///   web target of its cluster is healthy is replaced ([`may_replace_unhealthy`]), at most
    ///   once per slot per [`HealthPolicy::replace_window_seconds`]; a replacement held back
    ///   by that window is noted once in the action log.
    /// - A cluster with web targets of which none is healthy gets the maintenance page on its
    ///   listener rule until one is healthy again.
    /// - Otherwise its database group is surveyed (one SSM command, at most once per
    ///   [`HealthPolicy::survey_interval_seconds`] and [`MAX_SURVEYS_PER_SWEEP`] per sweep;
    ///   see [`crate::tasks::survey`]).
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> Result<SweepReport> {
        let (states, describe_calls) = crate::aws::fleet::Instances::new(self.ec2.clone())
            .observe_all()
            .await?;
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
            if self
                .start_heal(&cluster.id, instance_id, &node.slot, &why, HealKind::Lost)
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

    /// Target health of one READY cluster: replace a target unhealthy beyond the threshold
    /// (anti-flapping), and route the cluster to the maintenance page while none is healthy.
    async fn check_web_health(
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
        match self
            .start_heal(
                &cluster.id,
                instance_id,
                &node.slot,
                &why,
                HealKind::Replace,
            )
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

    #[tracing::instrument(skip_all, fields(event_id = %event.id.as_deref().unwrap_or_default(), instance_id = %event.detail.instance_id, state = ?event.detail.state))]
    pub async fn on_state_change(&self, event: &InstanceStateChangeEvent) -> Result<Reaction> {
        let detail = &event.detail;
        if !detail.state.is_lost() {
            return Ok(Reaction::NotALoss);
        }
        let event_id = event.id.clone().unwrap_or_default();
        if !event_id.is_empty() && !self.store.claim_event(&event_id).await? {
            return Ok(Reaction::Duplicate);
        }
        match self.react(event).await {
            Ok(reaction) => Ok(reaction),
            Err(error) => {
                // Let EventBridge's retry handle the event again.
                if !event_id.is_empty() {
                    self.store.release_event(&event_id).await?;
                }
                Err(error)
            }
        }
    }

    async fn react(&self, event: &InstanceStateChangeEvent) -> Result<Reaction> {
        let detail = &event.detail;
        let Some((cluster_id, node)) = self.store.node_of_instance(&detail.instance_id).await?
        else {
            return Ok(Reaction::UnknownInstance);
        };
        let Some(generation) = self
            .start_heal(
                &cluster_id,
                &detail.instance_id,
                &node.slot,
                detail.state.as_str(),
                HealKind::Lost,
            )
            .await?
        else {
            return Ok(Reaction::AlreadyHandled { cluster_id });
        };
        Ok(Reaction::Started {
            cluster_id,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::commands::{CommandSettings, Commands};
    use crate::aws::targets::TargetSettings;
    use crate::domain::cluster::NodeState;
    use crate::mocked_client;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth, TargetHealthDescription, TargetHealthStateEnum,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    const ID: &str = "c-0123456789ab";
    const TG: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/ha-c-0123456789ab/1";

    fn cluster(web: &[&str]) -> Cluster {
        let spec = crate::domain::spec::ClusterSpec::from_request_body(
            br#"{"name":"shop","web":{"count":2,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#,
        )
        .unwrap();
        let node = |slot: &str, tier| Node {
            slot: slot.into(),
            tier,
            instance_id: Some(format!("i-{slot}")),
            state: NodeState::Running,
            availability_zone: Some("us-east-1a".into()),
            subnet_id: None,
            role: None,
            target_health: None,
            host: None,
            member_state: None,
            group_name: None,
            launch_token: None,
            updated_at: "2026-11-24T00:00:00Z".into(),
        };
        let mut nodes: Vec<Node> = web.iter().map(|slot| node(slot, Tier::Web)).collect();
        nodes.push(node("db-0", Tier::Db));
        Cluster {
            id: ID.into(),
            phase: crate::domain::cluster::Phase::Ready,
            step: Some("finish".into()),
            spec,
            generation: 2,
            version: 9,
            created_at: "2026-11-24T00:00:00Z".into(),
            updated_at: "2026-11-24T00:00:00Z".into(),
            last_error: None,
            target_group_arn: Some(TG.into()),
            replacing: Vec::new(),
            nodes,
            actions: Vec::new(),
        }
    }

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
            let store = ClusterStore::new(
                mocked_client!(
                    aws_sdk_dynamodb,
                    RuleMode::MatchAny,
                    [&self.clear_watch, &self.update, &self.put]
                ),
                "table",
            );
            let workflow = Workflow::new(
                mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&self.start]),
                "arn:aws:states:us-east-1:1:stateMachine:cluster",
            );
            Healer {
                store: store.clone(),
                workflow: workflow.clone(),
                ec2: mocked_client!(aws_sdk_ec2, []),
                targets: WebTargets::new(
                    mocked_client!(aws_sdk_elasticloadbalancingv2, RuleMode::MatchAny, [elbv2]),
                    TargetSettings {
                        vpc_id: "vpc-1".into(),
                        listener_arn: "arn:listener".into(),
                        status_target_group_arn: "arn:status".into(),
                        web_port: 80,
                        health_check_path: "/healthz".into(),
                    },
                ),
                metrics: TargetHealthMetrics::new(
                    mocked_client!(aws_sdk_cloudwatch, []),
                    "arn:listener",
                ),
                survey: MembershipSurvey {
                    store,
                    commands: Commands::new(
                        mocked_client!(aws_sdk_ssm, []),
                        mocked_client!(aws_sdk_s3, []),
                        CommandSettings {
                            document_prefix: "ha".into(),
                            output_bucket: "bucket".into(),
                        },
                    ),
                    workflow,
                },
                policy: HealthPolicy::default(),
            }
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

    #[test]
    fn the_health_policy_defaults_and_refuses_nonsense() {
        assert_eq!(
            HealthPolicy::from_lookup(|_| None).expect("defaults"),
            HealthPolicy {
                unhealthy_after_seconds: 300,
                replace_window_seconds: 3600,
                survey_interval_seconds: 900
            }
        );
        let set = HealthPolicy::from_lookup(|key| {
            (key == "UNHEALTHY_REPLACE_SECONDS").then(|| "4".to_string())
        })
        .expect("set");
        assert_eq!(set.unhealthy_after_seconds, 4);
        assert_eq!(set.replace_window_seconds, 3600);
        let bad = HealthPolicy::from_lookup(|key| {
            (key == "REPLACE_WINDOW_SECONDS").then(|| "an hour".to_string())
        })
        .unwrap_err();
        assert!(bad.to_string().contains("REPLACE_WINDOW_SECONDS"), "{bad}");
    }
}
