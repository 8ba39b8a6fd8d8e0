//! ELBv2 adapter: each cluster's web target group behind the stack's ALB.
//!
//! The stack owns the ALB and its listener; the workflow gives every cluster a target group
//! of its own (tagged with the cluster) and a listener rule that forwards
//! `Host: <cluster-name>.*` to it. The target group's settings come from the stack (port,
//! health check path), so operators tune them in one place: template.yaml.
//!
//! A cluster rule is a weighted forward to two target groups: the cluster's (weight 1) and
//! the stack's status target group, the `alb-target` Lambda (weight 0). An ALB whose
//! targets are all unhealthy "fails open" and keeps sending requests to them; instead the
//! health sweep flips the weights so the cluster's host gets the maintenance page until a
//! web target is healthy again ([`Routing`]).

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, ProtocolEnum, RuleCondition, Tag,
    TargetDescription, TargetGroupAttribute, TargetGroupTuple, TargetTypeEnum,
};

use std::collections::HashMap;

use crate::aws::fleet::TAG_CLUSTER;
use crate::error::{Result, from_sdk, sdk_error_code};

/// What the stack tells the adapter: VPC, listener, port and health check of web targets.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// The VPC every cluster's target group is created in (`VPC_ID`).
    pub vpc_id: String,
    /// The ALB listener that gets each cluster's rule (`LISTENER_ARN`).
    pub listener_arn: String,
    /// The `alb-target` Lambda's target group: the maintenance page.
    pub status_target_group_arn: String,
    /// The port web instances serve on (`WEB_PORT`).
    pub web_port: i32,
    /// What the target group's health check requests (`HEALTH_CHECK_PATH`).
    pub health_check_path: String,
}

impl TargetSettings {
    /// From any lookup (the bench passes a function's environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        use crate::config::required_from;
        let port_text = required_from("WEB_PORT", &lookup)?;
        let web_port = port_text
            .parse::<i32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| crate::Error::InvalidConfig {
                name: "WEB_PORT",
                value: port_text.clone(),
                reason: "expected a TCP port from 1 to 65535".into(),
            })?;
        Ok(Self {
            vpc_id: required_from("VPC_ID", &lookup)?,
            listener_arn: required_from("LISTENER_ARN", &lookup)?,
            status_target_group_arn: required_from("STATUS_TARGET_GROUP_ARN", &lookup)?,
            web_port,
            health_check_path: required_from("HEALTH_CHECK_PATH", &lookup)?,
        })
    }

    /// From the environment.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

/// Where a cluster's listener rule sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// To the cluster's web targets.
    Serving,
    /// To the `alb-target` Lambda's maintenance page.
    Maintenance,
}

impl Routing {
    /// Weights of (cluster target group, status target group).
    fn weights(self) -> (i32, i32) {
        match self {
            Routing::Serving => (1, 0),
            Routing::Maintenance => (0, 1),
        }
    }
}

/// A cluster's listener rule as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRule {
    /// The rule, to change its weights.
    pub rule_arn: String,
    /// Where it sends requests now.
    pub routing: Routing,
}

/// A target's health as the target group reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// The web instance registered as target.
    pub instance_id: String,
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`, `unavailable`.
    pub state: String,
}

/// A cluster's target group, its web targets and its listener rule.
#[derive(Debug, Clone)]
pub struct WebTargets {
    client: aws_sdk_elasticloadbalancingv2::Client,
    settings: TargetSettings,
}

/// Target group names are at most 32 characters; cluster ids are 14.
pub fn target_group_name(cluster_id: &str) -> String {
    format!("ha-{cluster_id}")
}

/// Whether a listener rule sends traffic to the target group (either action form).
fn rule_forwards_to(
    rule: &aws_sdk_elasticloadbalancingv2::types::Rule,
    target_group_arn: &str,
) -> bool {
    rule.actions().iter().any(|a| {
        a.target_group_arn() == Some(target_group_arn)
            || a.forward_config()
                .map(|f| {
                    f.target_groups()
                        .iter()
                        .any(|t| t.target_group_arn() == Some(target_group_arn))
                })
                .unwrap_or(false)
    })
}

fn is_code(err_code: Option<&str>, codes: &[&str]) -> bool {
    err_code.map(|c| codes.contains(&c)).unwrap_or(false)
}

impl WebTargets {
    /// The adapter with the stack's settings.
    pub fn new(client: aws_sdk_elasticloadbalancingv2::Client, settings: TargetSettings) -> Self {
        Self { client, settings }
    }

    pub(crate) fn settings(&self) -> &TargetSettings {
        &self.settings
    }

    /// The cluster's target group, created on first use; the same on every later call.
    pub async fn ensure_target_group(&self, cluster_id: &str) -> Result<String> {
        let name = target_group_name(cluster_id);
        if let Some(arn) = self.find_target_group(&name).await? {
            return Ok(arn);
        }
        let created = self
            .client
            .create_target_group()
            .name(&name)
            .protocol(ProtocolEnum::Http)
            .port(self.settings.web_port)
            .vpc_id(&self.settings.vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_enabled(true)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(&self.settings.health_check_path)
            .health_check_interval_seconds(5)
            .health_check_timeout_seconds(3)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .tags(Tag::builder().key(TAG_CLUSTER).value(cluster_id).build())
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "CreateTargetGroup", e))?;
        let arn = created
            .target_groups()
            .first()
            .and_then(|tg| tg.target_group_arn())
            .map(str::to_string)
            .ok_or_else(|| crate::Error::Aws {
                service: "elbv2",
                operation: "CreateTargetGroup",
                code: "NoTargetGroup".into(),
                message: "no target group in the answer".into(),
                retryable: true,
            })?;
        // Drain connections for 30 s on deregistration, not AWS's default 300 s: nodes are
        // replaced by the orchestrator and a long drain only delays healing.
        self.client
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value("30")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "ModifyTargetGroupAttributes", e))?;
        Ok(arn)
    }

    async fn find_target_group(&self, name: &str) -> Result<Option<String>> {
        match self
            .client
            .describe_target_groups()
            .names(name)
            .send()
            .await
        {
            Ok(output) => Ok(output
                .target_groups()
                .first()
                .and_then(|tg| tg.target_group_arn())
                .map(str::to_string)),
            Err(e)
                if is_code(
                    sdk_error_code(&e),
                    &["TargetGroupNotFound", "TargetGroupNotFoundException"],
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(from_sdk("elbv2", "DescribeTargetGroups", e)),
        }
    }

    /// Every rule of the stack's listener (all pages).
    async fn listener_rules(&self) -> Result<Vec<aws_sdk_elasticloadbalancingv2::types::Rule>> {
        let mut rules = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .describe_rules()
                .listener_arn(&self.settings.listener_arn)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| from_sdk("elbv2", "DescribeRules", e))?;
            rules.extend(page.rules().iter().cloned());
            match page.next_marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => return Ok(rules),
            }
        }
    }

    /// The listener rule sending `Host: <name>.*` to the cluster's target group.
    pub async fn ensure_listener_rule(
        &self,
        target_group_arn: &str,
        cluster_name: &str,
    ) -> Result<()> {
        let rules = self.listener_rules().await?;
        let mut used = std::collections::BTreeSet::new();
        for rule in &rules {
            if rule_forwards_to(rule, target_group_arn) {
                return Ok(());
            }
            if let Some(priority) = rule.priority().and_then(|p| p.parse::<i32>().ok()) {
                used.insert(priority);
            }
        }
        let priority = (1..=50_000).find(|p| !used.contains(p)).unwrap_or(50_000);
        self.create_listener_rule(target_group_arn, cluster_name, priority)
            .await
    }

    /// Create the cluster's rule at `priority` ([`Self::ensure_listener_rule`] picks the
    /// lowest free one; the sweep benchmark seeds a thousand at known priorities).
    pub async fn create_listener_rule(
        &self,
        target_group_arn: &str,
        cluster_name: &str,
        priority: i32,
    ) -> Result<()> {
        self.client
            .create_rule()
            .listener_arn(&self.settings.listener_arn)
            .priority(priority)
            .conditions(
                RuleCondition::builder()
                    .field("host-header")
                    .values(format!("{cluster_name}.*"))
                    .build(),
            )
            .actions(self.forward(target_group_arn, Routing::Serving))
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "CreateRule", e))?;
        Ok(())
    }

    /// The weighted forward of a cluster rule in `routing`.
    fn forward(&self, target_group_arn: &str, routing: Routing) -> Action {
        let (cluster_weight, status_weight) = routing.weights();
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(target_group_arn)
                            .weight(cluster_weight)
                            .build(),
                    )
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(&self.settings.status_target_group_arn)
                            .weight(status_weight)
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    /// Every cluster rule of the listener, by the cluster target group it forwards to: one
    /// paged DescribeRules for the whole fleet, not a call per cluster.
    pub async fn cluster_rules(&self) -> Result<HashMap<String, ClusterRule>> {
        let mut found = HashMap::new();
        for rule in self.listener_rules().await? {
            let Some(rule_arn) = rule.rule_arn() else {
                continue;
            };
            for action in rule.actions() {
                let Some(forward) = action.forward_config() else {
                    continue;
                };
                let weight_of = |arn: &str| {
                    forward
                        .target_groups()
                        .iter()
                        .find(|t| t.target_group_arn() == Some(arn))
                        .map(|t| t.weight().unwrap_or(1))
                };
                let status_weight = weight_of(&self.settings.status_target_group_arn);
                for tuple in forward.target_groups() {
                    let Some(arn) = tuple.target_group_arn() else {
                        continue;
                    };
                    if arn == self.settings.status_target_group_arn {
                        continue;
                    }
                    let cluster_weight = tuple.weight().unwrap_or(1);
                    let routing = if cluster_weight == 0 && status_weight.unwrap_or(0) > 0 {
                        Routing::Maintenance
                    } else {
                        Routing::Serving
                    };
                    found.insert(
                        arn.to_string(),
                        ClusterRule {
                            rule_arn: rule_arn.to_string(),
                            routing,
                        },
                    );
                }
            }
        }
        Ok(found)
    }

    /// Point a cluster rule at its web targets or at the maintenance page.
    pub async fn route(
        &self,
        rule_arn: &str,
        target_group_arn: &str,
        routing: Routing,
    ) -> Result<()> {
        self.client
            .modify_rule()
            .rule_arn(rule_arn)
            .actions(self.forward(target_group_arn, routing))
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "ModifyRule", e))?;
        Ok(())
    }

    /// Targets with the port spelled out: AWS would default to the group's port, but
    /// fakecloud never health-checks a target registered without one.
    fn targets(&self, instance_ids: &[String]) -> Option<Vec<TargetDescription>> {
        Some(
            instance_ids
                .iter()
                .map(|id| {
                    TargetDescription::builder()
                        .id(id)
                        .port(self.settings.web_port)
                        .build()
                })
                .collect(),
        )
    }

    /// Register instances on the target group's port (registering twice is a no-op).
    pub async fn register(&self, target_group_arn: &str, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        self.client
            .register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(self.targets(instance_ids))
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "RegisterTargets", e))?;
        Ok(())
    }

    /// Take instances out of the target group; an absent group or target is not an error.
    pub async fn deregister(&self, target_group_arn: &str, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        match self
            .client
            .deregister_targets()
            .target_group_arn(target_group_arn)
            .set_targets(self.targets(instance_ids))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if is_code(
                    sdk_error_code(&e),
                    &["TargetGroupNotFound", "InvalidTarget"],
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(from_sdk("elbv2", "DeregisterTargets", e)),
        }
    }

    /// The health of every target of one target group. ELBv2 has no multi-group form, so
    /// the sweep makes one call per READY cluster with web nodes.
    pub async fn health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>> {
        let output = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| from_sdk("elbv2", "DescribeTargetHealth", e))?;
        Ok(output
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                Some(TargetHealth {
                    instance_id: d.target()?.id()?.to_string(),
                    state: d
                        .target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                })
            })
            .collect())
    }

    /// Remove the cluster's listener rule and target group; absent ones are fine.
    pub async fn delete(&self, cluster_id: &str) -> Result<()> {
        let Some(arn) = self
            .find_target_group(&target_group_name(cluster_id))
            .await?
        else {
            return Ok(());
        };
        let rules = self.listener_rules().await?;
        for rule in &rules {
            if rule_forwards_to(rule, &arn)
                && let Some(rule_arn) = rule.rule_arn()
            {
                self.client
                    .delete_rule()
                    .rule_arn(rule_arn)
                    .send()
                    .await
                    .map_err(|e| from_sdk("elbv2", "DeleteRule", e))?;
            }
        }
        match self
            .client
            .delete_target_group()
            .target_group_arn(&arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(sdk_error_code(&e), &["TargetGroupNotFound"]) => Ok(()),
            Err(e) => Err(from_sdk("elbv2", "DeleteTargetGroup", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::operation::describe_rules::DescribeRulesOutput;
    use aws_sdk_elasticloadbalancingv2::operation::modify_rule::ModifyRuleOutput;
    use aws_sdk_elasticloadbalancingv2::types::Rule;
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::mocked_client;

    const CLUSTER_TG: &str =
        "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/ha-c-0123456789ab/1";
    const STATUS_TG: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/status/2";

    fn settings() -> TargetSettings {
        TargetSettings {
            vpc_id: "vpc-1".into(),
            listener_arn: "arn:listener".into(),
            status_target_group_arn: STATUS_TG.into(),
            web_port: 80,
            health_check_path: "/healthz".into(),
        }
    }

    fn rule(arn: &str, forward: Action) -> Rule {
        Rule::builder().rule_arn(arn).actions(forward).build()
    }

    #[tokio::test]
    async fn rules_are_read_by_cluster_target_group_with_their_routing() {
        let serving = WebTargets::new(
            mocked_client!(aws_sdk_elasticloadbalancingv2, []),
            settings(),
        )
        .forward(CLUSTER_TG, Routing::Serving);
        let maintenance = WebTargets::new(
            mocked_client!(aws_sdk_elasticloadbalancingv2, []),
            settings(),
        )
        .forward("arn:tg/other", Routing::Maintenance);
        // The stack's own /_status rule forwards to the status group alone: not a cluster's.
        let status_only = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(STATUS_TG)
            .build();
        let describe =
            mock!(aws_sdk_elasticloadbalancingv2::Client::describe_rules).then_output(move || {
                DescribeRulesOutput::builder()
                    .rules(rule("arn:rule/1", serving.clone()))
                    .rules(rule("arn:rule/2", maintenance.clone()))
                    .rules(rule("arn:rule/status", status_only.clone()))
                    .build()
            });
        let targets = WebTargets::new(
            mocked_client!(aws_sdk_elasticloadbalancingv2, [&describe]),
            settings(),
        );
        let rules = targets.cluster_rules().await.expect("rules");
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(
            rules[CLUSTER_TG],
            ClusterRule {
                rule_arn: "arn:rule/1".into(),
                routing: Routing::Serving
            }
        );
        assert_eq!(rules["arn:tg/other"].routing, Routing::Maintenance);
    }

    #[tokio::test]
    async fn maintenance_keeps_the_cluster_group_in_the_rule_at_weight_zero() {
        // Keeping the cluster's group in the rule is what lets DELETE still find the rule.
        let modify = mock!(aws_sdk_elasticloadbalancingv2::Client::modify_rule)
            .match_requests(|request| {
                let weights: Vec<(Option<&str>, Option<i32>)> = request
                    .actions()
                    .iter()
                    .filter_map(|a| a.forward_config())
                    .flat_map(|f| f.target_groups())
                    .map(|t| (t.target_group_arn(), t.weight()))
                    .collect();
                request.rule_arn() == Some("arn:rule/1")
                    && weights == [(Some(CLUSTER_TG), Some(0)), (Some(STATUS_TG), Some(1))]
            })
            .then_output(|| ModifyRuleOutput::builder().build());
        let targets = WebTargets::new(
            mocked_client!(aws_sdk_elasticloadbalancingv2, [&modify]),
            settings(),
        );
        targets
            .route("arn:rule/1", CLUSTER_TG, Routing::Maintenance)
            .await
            .expect("routed");
        assert_eq!(modify.num_calls(), 1);
    }
}
