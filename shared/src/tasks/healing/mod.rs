//! Healing: replacing cluster nodes that are lost or unhealthy, from two triggers of the
//! `instance-events` function. Each replacement is a healing run of `ClusterWorkflow`
//! (started through [`crate::tasks::runs::Runs`]), which launches a successor in the same
//! slot (and zone), registers it or adds it to the group, and removes the lost member. The
//! reactions here change no node: only the run's lease holder does.
//!
//! Read in this order:
//! - [`events`]: an EC2 "Instance State-change Notification" for a node that stopped or
//!   terminated starts a heal ([`Healer::on_state_change`]); duplicates, stale events and
//!   instances of no cluster change nothing.
//! - [`sweep`]: the scheduled sweep ([`Healer::sweep`]) catches what events miss: lost
//!   instances whose event never came, then each READY cluster's web health and its
//!   membership survey.
//! - [`web_health`]: the sweep's verdict on web targets: replace a node unhealthy beside a
//!   healthy peer, fail open (the maintenance page, no replacement) while none passes.
//!
//! This file holds what both triggers share: the [`Healer`] with its adapters, and the
//! [`HealthPolicy`] that times the sweep's decisions.

use crate::aws::fleet::Instances;
use crate::aws::health_metrics::TargetHealthMetrics;
use crate::aws::store::ClusterStore;
use crate::aws::targets::WebTargets;
use crate::error::Result;
use crate::tasks::runs::Runs;
use crate::tasks::survey::MembershipSurvey;

pub mod events;
pub mod sweep;
pub mod web_health;

pub use events::Reaction;
pub use sweep::SweepReport;

/// The `instance-events` function's reactions, with the adapters they use: built once per
/// cold start.
#[derive(Debug, Clone)]
pub struct Healer {
    /// The clusters, their nodes and the sweep's memory (watches, replacements, claims).
    pub store: ClusterStore,
    /// Records a heal and starts its run.
    pub runs: Runs,
    /// The fleet-wide view of EC2 the sweep compares the nodes with.
    pub instances: Instances,
    /// The web target groups' health and the listener rules (maintenance page).
    pub targets: WebTargets,
    /// The fleet-wide first look at target health (one `GetMetricData` per page of clusters).
    pub metrics: TargetHealthMetrics,
    /// The database membership survey the sweep sends when due.
    pub survey: MembershipSurvey,
    /// When the sweep replaces, holds back and surveys.
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

    /// The policy the function's environment sets (template.yaml), defaults elsewhere.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;

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
