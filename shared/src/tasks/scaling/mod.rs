//! Scaling the web tier on its CloudWatch alarms.
//!
//! A cluster's alarms are named `ha-<cluster id>-web-high` (scale out by one when it goes
//! to ALARM) and `ha-<cluster id>-web-low` (scale in by one). A step stays within the
//! cluster's scaling bounds, and a change within the cooldown of the last one is refused, so
//! an alarm that keeps firing does not flap the fleet. The scaling run itself is
//! `ClusterWorkflow` with reason `scale`: scale-out launches and registers; scale-in
//! deregisters the newest slot, waits for its connections to drain, then terminates it.
//!
//! ## A sustained breach keeps stepping
//! CloudWatch sends "CloudWatch Alarm State Change" to EventBridge when an alarm changes
//! state, and only then
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html>);
//! its alarm actions, too, run once per transition and are not repeated while the condition
//! lasts, with Auto Scaling actions as the one exception
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-actions.html>).
//! That exception is what makes EC2 Auto Scaling's step and simple scaling policies act
//! again and again while their alarm stays in ALARM
//! (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-scaling-simple-step.html>).
//! Our alarms have no actions (EventBridge routes them), so on the event alone an alarm
//! that stays in ALARM would scale once and never again.
//!
//! Decision: a schedule (`ScalingRecheckSchedule`, every minute) invokes the function with a
//! Scheduled Event, and [`Scaler::recheck`] asks CloudWatch once which `ha-c-` alarms are in
//! ALARM (DescribeAlarms filtered by name prefix and state, one page per 100 alarms). For
//! each, it steps again through the same path as the event (same bounds, same cooldown,
//! same run and action log entry, which says it is a sustained breach) when
//! - the cluster is READY: the previous step's run has finished, so its instances are in
//!   the metric the alarm watches. Simple scaling policies likewise wait for the scaling
//!   activity to complete before they answer an alarm again, and step scaling counts
//!   instances still warming up as already there; a new generation would also supersede
//!   the run half-way;
//! - the cooldown has passed since the cluster's last change of the web count;
//! - the step would not leave the bounds (at a bound it logs why and does nothing).
//!
//! A recheck that finds nothing due reads one DynamoDB item per alarm in ALARM and writes
//! nothing; with no alarm in ALARM it makes the one DescribeAlarms call. The low alarm of an
//! idle cluster stays in ALARM (no traffic counts as below), so an idle web tier now shrinks
//! step by step to its minimum, as the alarm was meant to make it; an operator's `PATCH`
//! above what the load needs is likewise undone one step per cooldown, as an Auto Scaling
//! group's policies undo a manual desired capacity.

use crate::aws::alarms::AlarmStates;
use crate::aws::store::{ClusterStore, ScaleTarget, Scaled};
use crate::domain::cluster::Phase;
use crate::domain::scaling::{CLUSTER_ALARM_PREFIX, Direction, parse_alarm_name};
use crate::error::Result;
use crate::tasks::events::{AlarmEvent, AlarmValue};
use crate::tasks::runs::Runs;

/// What an alarm event or a recheck led to (logged, and returned for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleReaction {
    /// Not one of the orchestrator's alarms.
    ForeignAlarm,
    /// The alarm went to OK or INSUFFICIENT_DATA: nothing to do.
    NotAlarming,
    /// Nothing changed (no such cluster, being deleted, in cooldown, at a bound): why.
    Unchanged {
        /// The cluster the alarm names.
        cluster_id: String,
        /// Why nothing changed, for the log.
        why: String,
    },
    /// A step was recorded and its scaling run started.
    Started {
        /// The cluster stepped.
        cluster_id: String,
        /// The generation of the scaling run.
        generation: u64,
        /// Web nodes before the step.
        from: u32,
        /// Web nodes after it.
        to: u32,
    },
}

/// What one recheck found and did, alarm by alarm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recheck {
    /// (alarm name, what it led to) for every cluster alarm in ALARM.
    pub alarms: Vec<(String, ScaleReaction)>,
}

/// The `scaling` function's reaction to the web alarms: built once per cold start.
#[derive(Debug, Clone)]
pub struct Scaler {
    /// Where the recheck reads a cluster's scaling position.
    pub store: ClusterStore,
    /// Records a step and starts its scaling run.
    pub runs: Runs,
    /// Which cluster alarms are in ALARM (the recheck).
    pub alarms: AlarmStates,
    /// The least time between two changes of one cluster's web count.
    pub cooldown_seconds: i64,
}

impl Scaler {
    /// An alarm's state change: one step when a cluster's alarm goes to ALARM.
    #[tracing::instrument(skip_all, fields(alarm = %event.detail.alarm_name, state = ?event.detail.state.value))]
    pub async fn on_alarm(&self, event: &AlarmEvent) -> Result<ScaleReaction> {
        let Some((cluster_id, direction)) = parse_alarm_name(&event.detail.alarm_name) else {
            return Ok(ScaleReaction::ForeignAlarm);
        };
        if event.detail.state.value != AlarmValue::Alarm {
            return Ok(ScaleReaction::NotAlarming);
        }
        self.step(
            cluster_id.into(),
            direction,
            &format!("by alarm {}", event.detail.alarm_name),
        )
        .await
    }

    /// Step again for every cluster alarm still in ALARM whose cluster is due (see the
    /// module doc). One cluster's failure does not stop the others; the first error is
    /// returned once all were tried, so the invocation fails visibly and the next tick
    /// tries again.
    #[tracing::instrument(skip_all)]
    pub async fn recheck(&self) -> Result<Recheck> {
        let mut recheck = Recheck::default();
        let mut first_error = None;
        for name in self.alarms.in_alarm(CLUSTER_ALARM_PREFIX).await? {
            let reaction = match parse_alarm_name(&name) {
                None => Ok(ScaleReaction::ForeignAlarm),
                Some((cluster_id, direction)) => {
                    self.step_if_due(cluster_id.into(), direction, &name).await
                }
            };
            match reaction {
                Ok(reaction) => {
                    tracing::info!(alarm = %name, ?reaction, "alarm still in ALARM rechecked");
                    recheck.alarms.push((name, reaction));
                }
                Err(error) => {
                    tracing::warn!(alarm = %name, error = %error, "alarm still in ALARM: recheck failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(recheck),
        }
    }

    /// The step for an alarm that stayed in ALARM, when the cluster is READY, out of its
    /// cooldown and not at the bound; otherwise why not, from one read and no write.
    async fn step_if_due(
        &self,
        cluster_id: String,
        direction: Direction,
        alarm: &str,
    ) -> Result<ScaleReaction> {
        let unchanged =
            |cluster_id: String, why: String| ScaleReaction::Unchanged { cluster_id, why };
        let Some(state) = self.store.scale_state(&cluster_id).await? else {
            return Ok(unchanged(cluster_id, "no such cluster".into()));
        };
        if state.phase != Phase::Ready {
            let why = format!(
                "the cluster is {}, not READY: the next step waits for the running one to finish",
                state.phase.as_str()
            );
            return Ok(unchanged(cluster_id, why));
        }
        if let Some(last) = state.last_scaled_at {
            let since = crate::domain::cluster::epoch_seconds() - last;
            if since < self.cooldown_seconds {
                let why = format!(
                    "the last scaling of cluster {cluster_id} is {since}s ago, less than the \
                     cooldown ({}s)",
                    self.cooldown_seconds
                );
                return Ok(unchanged(cluster_id, why));
            }
        }
        let at_bound = match direction {
            Direction::Out => state.web >= state.bounds.max_web,
            Direction::In => state.web <= state.bounds.min_web,
        };
        if at_bound {
            let why = format!(
                "at the bound: the web tier has {} (bounds {}-{})",
                state.web, state.bounds.min_web, state.bounds.max_web
            );
            return Ok(unchanged(cluster_id, why));
        }
        self.step(
            cluster_id,
            direction,
            &format!("by alarm {alarm}, still in ALARM after the cooldown (sustained breach)"),
        )
        .await
    }

    /// One step in `direction` and its run: the path every alarm-driven change takes.
    async fn step(
        &self,
        cluster_id: String,
        direction: Direction,
        why: &str,
    ) -> Result<ScaleReaction> {
        let scaled = match self
            .runs
            .scale(
                &cluster_id,
                ScaleTarget::Step(direction.step()),
                Some(self.cooldown_seconds),
                why,
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
            Err(crate::Error::ClusterDeleting { id, phase }) => {
                return Ok(ScaleReaction::Unchanged {
                    cluster_id,
                    why: format!("cluster {id} is {phase}; it is not scaled any more"),
                });
            }
            other => other?,
        };
        match scaled {
            Scaled::Unchanged(why) => Ok(ScaleReaction::Unchanged { cluster_id, why }),
            Scaled::Started {
                generation,
                from,
                to,
            } => Ok(ScaleReaction::Started {
                cluster_id,
                generation,
                from,
                to,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
