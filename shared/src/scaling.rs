//! Scaling the web tier on CloudWatch "Alarm State Change" events.
//!
//! A cluster's alarms are named `ha-<cluster id>-web-high` (scale out by one when it goes
//! to ALARM) and `ha-<cluster id>-web-low` (scale in by one). A step stays within the
//! cluster's scaling bounds, and a change within the cooldown of the last one is refused, so
//! an alarm that keeps firing does not flap the fleet. The scaling run itself is
//! `ClusterWorkflow` with reason `scale`: scale-out launches and registers; scale-in
//! deregisters the newest slot, waits for its connections to drain, then terminates it.

use crate::error::Result;
use crate::events::{AlarmEvent, AlarmValue, RunReason, WorkflowInput};
use crate::store::{ClusterStore, ScaleTarget, Scaled};
use crate::workflow::Workflow;

/// Default time between two alarm-driven changes of one cluster.
pub const DEFAULT_COOLDOWN_SECONDS: i64 = 300;

/// Which way an alarm scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

/// `ha-c-0123456789ab-web-high` -> (`c-0123456789ab`, Out).
pub fn parse_alarm_name(name: &str) -> Option<(String, Direction)> {
    let rest = name.strip_prefix("ha-")?;
    let (cluster_id, direction) = if let Some(id) = rest.strip_suffix("-web-high") {
        (id, Direction::Out)
    } else if let Some(id) = rest.strip_suffix("-web-low") {
        (id, Direction::In)
    } else {
        return None;
    };
    let valid = cluster_id.len() == 14
        && cluster_id.starts_with("c-")
        && cluster_id[2..].chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| (cluster_id.to_string(), direction))
}

/// The name of a cluster's alarm in `direction`.
pub fn alarm_name(cluster_id: &str, direction: Direction) -> String {
    match direction {
        Direction::Out => format!("ha-{cluster_id}-web-high"),
        Direction::In => format!("ha-{cluster_id}-web-low"),
    }
}

/// What an alarm event led to (logged, and returned for tests).
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

#[derive(Debug, Clone)]
pub struct Scaler {
    pub store: ClusterStore,
    pub workflow: Workflow,
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
        let step = match direction {
            Direction::Out => 1,
            Direction::In => -1,
        };
        let scaled = match self
            .store
            .request_scale(
                &cluster_id,
                ScaleTarget::Step(step),
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
            Err(crate::Error::Conflict(why)) if why.contains("not scaled any more") => {
                return Ok(ScaleReaction::Unchanged { cluster_id, why });
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
                        &format!("web {from} -> {to} by alarm {}", event.detail.alarm_name),
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

    #[test]
    fn alarm_names_carry_the_cluster_and_the_direction() {
        let id = "c-0123456789ab";
        for direction in [Direction::Out, Direction::In] {
            assert_eq!(
                parse_alarm_name(&alarm_name(id, direction)),
                Some((id.to_string(), direction))
            );
        }
        for foreign in [
            "ha-orchestrator-web-high-request-count",
            "ha-c-0123-web-high",
            "ha-c-0123456789zz-web-low",
            "cpu-high",
        ] {
            assert_eq!(parse_alarm_name(foreign), None, "{foreign}");
        }
    }
}
