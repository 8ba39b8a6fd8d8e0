//! Configuration read from the environment once, at cold start.
//!
//! Every function fails fast with a message naming the missing variable and where it is set,
//! instead of failing on its first event with an opaque SDK error.

use crate::error::{Error, Result};

const TEMPLATE_HINT: &str =
    "template.yaml sets it for every function (Globals.Function.Environment); redeploy the stack";

/// Read a required, non-empty environment variable.
pub fn required(name: &'static str) -> Result<String> {
    required_from(name, |key| std::env::var(key).ok())
}

/// Like [`required`], reading from any lookup (tests pass a map instead of the process env).
pub fn required_from(
    name: &'static str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(value) => Err(Error::InvalidConfig {
            name,
            value,
            reason: "it is empty".into(),
        }),
        None => Err(Error::MissingConfig {
            name,
            hint: TEMPLATE_HINT,
        }),
    }
}

/// A duration in whole seconds, 0 or more, from `name`, or `default` when it is unset: the
/// one parser of every `*_SECONDS` setting.
pub fn seconds_or(
    name: &'static str,
    default: i64,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<i64> {
    match lookup(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| Error::InvalidConfig {
                name,
                value: text,
                reason: "expected a whole number of seconds, 0 or more".into(),
            }),
    }
}

/// Where the orchestrator keeps its state.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The one DynamoDB table that holds all of the orchestrator's state.
    pub table_name: String,
}

impl StoreSettings {
    const TABLE_NAME: &'static str = "TABLE_NAME";

    /// From `TABLE_NAME`.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Ok(Self {
            table_name: required_from(Self::TABLE_NAME, lookup)?,
        })
    }
}

/// The state machine that converges clusters.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// `ClusterWorkflow`, of which every run that changes a cluster is an execution.
    pub state_machine_arn: String,
}

impl WorkflowSettings {
    const STATE_MACHINE_ARN: &'static str = "STATE_MACHINE_ARN";

    /// From `STATE_MACHINE_ARN`, which must be a state machine ARN.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let arn = required_from(Self::STATE_MACHINE_ARN, lookup)?;
        if !arn.starts_with("arn:") || !arn.contains(":states:") {
            return Err(Error::InvalidConfig {
                name: Self::STATE_MACHINE_ARN,
                value: arn,
                reason: "expected a Step Functions state machine ARN (arn:aws:states:...)".into(),
            });
        }
        Ok(Self {
            state_machine_arn: arn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn missing_variable_names_itself_and_where_to_set_it() {
        let err = StoreSettings::from_lookup(env(&[])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("TABLE_NAME"), "{message}");
        assert!(message.contains("template.yaml"), "{message}");
    }

    #[test]
    fn seconds_default_when_unset_and_refuse_what_is_not_a_duration() {
        assert_eq!(seconds_or("COOL_SECONDS", 300, env(&[])).unwrap(), 300);
        assert_eq!(
            seconds_or("COOL_SECONDS", 300, env(&[("COOL_SECONDS", " 0 ")])).unwrap(),
            0
        );
        for bad in ["-1", "5m", "", "1.5"] {
            let err = seconds_or("COOL_SECONDS", 300, env(&[("COOL_SECONDS", bad)])).unwrap_err();
            assert!(err.to_string().contains("COOL_SECONDS"), "{err}");
        }
    }

    #[test]
    fn empty_variable_is_refused() {
        let err = StoreSettings::from_lookup(env(&[("TABLE_NAME", "  ")])).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn state_machine_arn_must_look_like_one() {
        let err = WorkflowSettings::from_lookup(env(&[("STATE_MACHINE_ARN", "ClusterWorkflow")]))
            .unwrap_err();
        assert!(err.to_string().contains("arn:aws:states"), "{err}");
        let ok = WorkflowSettings::from_lookup(env(&[(
            "STATE_MACHINE_ARN",
            "arn:aws:states:us-east-1:123456789012:stateMachine:ClusterWorkflow",
        )]))
        .unwrap();
        assert!(ok.state_machine_arn.ends_with("ClusterWorkflow"));
    }
}

/// How many clusters one stack takes. Each cluster owns a target group and a listener rule
/// on the stack's one Application Load Balancer, which holds at most 100 target groups (a
/// quota AWS does not raise) and, by default, 100 rules besides the default ones; the
/// stack's own status target group and `/_status` rule take one of each. So 99 at most,
/// and an operator may set a lower cap (`MaxClusters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLimits {
    /// The cap the API holds a create against: above it, the create is refused.
    pub max_clusters: u32,
}

impl ClusterLimits {
    const MAX_CLUSTERS: &'static str = "MAX_CLUSTERS";
    /// 100 target groups per load balancer, less the status target group.
    pub const LOAD_BALANCER_CAPACITY: u32 = 99;

    /// From `MAX_CLUSTERS`, or the load balancer's capacity when it is unset.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let max_clusters = match lookup(Self::MAX_CLUSTERS) {
            None => Self::LOAD_BALANCER_CAPACITY,
            Some(value) => match value.trim().parse::<u32>() {
                Ok(n) if (1..=Self::LOAD_BALANCER_CAPACITY).contains(&n) => n,
                _ => {
                    return Err(Error::InvalidConfig {
                        name: Self::MAX_CLUSTERS,
                        value,
                        reason: format!(
                            "use a whole number from 1 to {} (one load balancer's target groups, less the status one)",
                            Self::LOAD_BALANCER_CAPACITY
                        ),
                    });
                }
            },
        };
        Ok(Self { max_clusters })
    }
}
