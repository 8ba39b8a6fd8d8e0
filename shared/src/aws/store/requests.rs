//! Requests that change what a cluster should be and bump its generation, so a new run
//! starts and supersedes any run still going: delete, heal, scale, converge. Also the
//! scaling position the recheck reads before deciding whether to request anything.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::ClusterStore;
use super::codec::{is_condition_failure, n, number_attr, s, to_json};
use crate::domain::cluster::{Phase, epoch_seconds, now_rfc3339};
use crate::domain::spec::ClusterSpec;
use crate::error::{Error, Result, from_sdk};

/// What a scaling request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTarget {
    /// An operator's count (`PATCH`): refused outside the bounds.
    Count(u32),
    /// An alarm's step: clamped to the bounds.
    Step(i32),
}

/// What a scaling request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scaled {
    /// The count changed: a scaling run of `generation` is to take the web tier `from` -> `to`.
    Started {
        /// The generation the change bumped the cluster to (the run's).
        generation: u64,
        /// The web count before.
        from: u32,
        /// The web count asked for.
        to: u32,
    },
    /// Nothing changed (already at the count, or in cooldown): why, for the caller.
    Unchanged(String),
}

/// A cluster's scaling position, as [`ClusterStore::scale_state`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleState {
    /// The cluster's phase: only a READY cluster is scaled.
    pub phase: Phase,
    /// The web count of its spec.
    pub web: u32,
    /// The web tier's scaling bounds, from its spec.
    pub bounds: crate::domain::spec::ScalingSpec,
    /// Epoch second of the last change of the web count (alarm or `PATCH`), if any.
    pub last_scaled_at: Option<i64>,
}

impl ClusterStore {
    /// Ask for deletion: next generation, phase DELETING; returns the new generation. A
    /// repeated DELETE starts a fresh teardown run (teardown is idempotent, and a run still
    /// going is fenced out), so a teardown that died can always be restarted.
    pub async fn request_delete(&self, id: &str) -> Result<u64> {
        let result = self
            .update_meta(id)
            .update_expression(
                "SET phase = :deleting, generation = generation + :one, version = version + :one, \
                 updated_at = :at",
            )
            .condition_expression("attribute_exists(pk) AND phase <> :deleted")
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => number_attr(output.attributes().unwrap_or(&HashMap::new()), "generation")
                .ok_or_else(|| Error::CorruptRecord {
                    key: Self::cluster_key(id),
                    problem: "generation missing".into(),
                }),
            Err(e) if is_condition_failure(&e) => match self.get_cluster(id).await? {
                None => Err(Error::NotFound {
                    kind: "cluster",
                    id: id.to_string(),
                }),
                Some(_) => Err(Error::Gone(format!("cluster {id} is already deleted"))),
            },
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Ask for a healing run because `instance_id` was lost: bumps the generation (a newer
    /// run supersedes whatever runs) and remembers the instance, once. `None` when the loss
    /// is already being healed or the cluster is being deleted: nothing to start.
    /// With `replace`, the instance is alive and is to be retired once its successor serves
    /// (an operator's or the sweep's decision) rather than already lost.
    pub async fn request_heal(
        &self,
        id: &str,
        instance_id: &str,
        replace: bool,
    ) -> Result<Option<u64>> {
        let expression = if replace {
            "SET phase = :healing, generation = generation + :one, version = version + :one, \
             updated_at = :at ADD lost_instances :lost, replace_instances :lost"
        } else {
            "SET phase = :healing, generation = generation + :one, version = version + :one, \
             updated_at = :at ADD lost_instances :lost"
        };
        let result = self
            .update_meta(id)
            .update_expression(expression)
            .condition_expression(
                "attribute_exists(pk) AND NOT phase IN (:deleting, :deleted) \
                 AND NOT contains(lost_instances, :instance)",
            )
            .expression_attribute_values(":healing", s(Phase::Healing.as_str()))
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .expression_attribute_values(":lost", AttributeValue::Ss(vec![instance_id.to_string()]))
            .expression_attribute_values(":instance", s(instance_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(number_attr(
                output.attributes().unwrap_or(&HashMap::new()),
                "generation",
            )),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Change the web count (to a count, or by a step within the scaling bounds) and bump
    /// the generation so a scaling run converges to it. With `cooldown_seconds`, a change
    /// within that time of the last one is refused (`Unchanged`): alarms must not flap.
    pub async fn request_scale(
        &self,
        id: &str,
        target: ScaleTarget,
        cooldown_seconds: Option<i64>,
    ) -> Result<Scaled> {
        let cluster = self.require_cluster(id).await?;
        if matches!(cluster.phase, Phase::Deleting | Phase::Deleted) {
            return Err(Error::ClusterDeleting {
                id: id.to_string(),
                phase: cluster.phase.as_str(),
            });
        }
        let from = cluster.spec.web.count;
        let bounds = cluster.spec.scaling();
        let to = match target {
            ScaleTarget::Count(count) => {
                cluster.spec.with_web_count(count)?;
                count
            }
            ScaleTarget::Step(step) => {
                let wanted = i64::from(from) + i64::from(step);
                wanted.clamp(i64::from(bounds.min_web), i64::from(bounds.max_web)) as u32
            }
        };
        if to == from {
            return Ok(Scaled::Unchanged(format!(
                "the web tier already has {from} (bounds {}-{})",
                bounds.min_web, bounds.max_web
            )));
        }
        let spec = cluster.spec.with_web_count(to)?;
        let now = epoch_seconds();
        let mut condition = "version = :version AND NOT phase IN (:deleting, :deleted)".to_string();
        if cooldown_seconds.is_some() {
            condition.push_str(
                " AND (attribute_not_exists(last_scaled_at) OR last_scaled_at <= :cutoff)",
            );
        }
        let mut update = self
            .update_meta(id)
            .update_expression(
                "SET spec = :spec, phase = :scaling, generation = generation + :one, \
                 version = version + :one, updated_at = :at, last_scaled_at = :now",
            )
            .condition_expression(condition)
            .expression_attribute_values(":spec", s(to_json("cluster spec", &spec)?))
            .expression_attribute_values(":scaling", s(Phase::Scaling.as_str()))
            .expression_attribute_values(":deleting", s(Phase::Deleting.as_str()))
            .expression_attribute_values(":deleted", s(Phase::Deleted.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":version", n(cluster.version));
        if let Some(cooldown) = cooldown_seconds {
            update = update.expression_attribute_values(":cutoff", n(now - cooldown));
        }
        match update.send().await {
            Ok(_) => Ok(Scaled::Started {
                generation: cluster.generation + 1,
                from,
                to,
            }),
            Err(e) if is_condition_failure(&e) => {
                let again = self.get_cluster(id).await?;
                // Our own write landed and only its answer was lost (the SDK's retry of
                // the same conditional update then fails its condition): the record is
                // exactly what we wrote, one version on. That is a success, not a conflict,
                // or the caller's resend would find nothing to change and no run started.
                if let Some(now) = &again
                    && now.version == cluster.version + 1
                    && now.generation == cluster.generation + 1
                    && now.phase == Phase::Scaling
                    && now.spec == spec
                {
                    return Ok(Scaled::Started {
                        generation: now.generation,
                        from,
                        to,
                    });
                }
                if again.as_ref().map(|c| c.version) != Some(cluster.version) {
                    Err(Error::Conflict(format!(
                        "cluster {id} changed while scaling it; send the request again"
                    )))
                } else {
                    Ok(Scaled::Unchanged(format!(
                        "the last scaling of cluster {id} is less than {}s ago (cooldown)",
                        cooldown_seconds.unwrap_or_default()
                    )))
                }
            }
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Start converging a READY cluster again (a member left its group while its instance
    /// stayed up): phase HEALING and the next generation, only if it is still READY at
    /// `generation`. `None` when something else has moved it on since.
    pub async fn request_converge(&self, id: &str, generation: u64) -> Result<Option<u64>> {
        let result = self
            .update_meta(id)
            .update_expression(
                "SET phase = :healing, generation = generation + :one, version = version + :one, \
                 updated_at = :at",
            )
            .condition_expression("phase = :ready AND generation = :generation")
            .expression_attribute_values(":healing", s(Phase::Healing.as_str()))
            .expression_attribute_values(":ready", s(Phase::Ready.as_str()))
            .expression_attribute_values(":generation", n(generation))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(number_attr(
                output.attributes().unwrap_or(&HashMap::new()),
                "generation",
            )),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// What the scaling recheck decides on (phase, web count and bounds, last step), from
    /// one GetItem of the META item's few attributes, so a recheck that finds nothing due
    /// reads one item and writes nothing. `None` when there is no such cluster.
    pub async fn scale_state(&self, id: &str) -> Result<Option<ScaleState>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s("META"))
            .projection_expression("phase, spec, last_scaled_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        let corrupt = |problem: String| Error::CorruptRecord {
            key: Self::cluster_key(id),
            problem,
        };
        let text = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| corrupt(format!("{name} is missing")))
        };
        let phase_text = text("phase")?;
        let phase = Phase::parse(phase_text)
            .ok_or_else(|| corrupt(format!("unknown phase {phase_text:?}")))?;
        let spec: ClusterSpec =
            serde_json::from_str(text("spec")?).map_err(|e| corrupt(format!("spec: {e}")))?;
        Ok(Some(ScaleState {
            phase,
            web: spec.web.count,
            bounds: spec.scaling(),
            last_scaled_at: item
                .get("last_scaled_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::store::testing::cluster_item;
    use crate::mocked_client as mock_client;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_smithy_mocks::{RuleMode, mock};

    #[tokio::test]
    async fn a_scale_whose_answer_was_lost_is_started_not_a_conflict() {
        let meta = |web: u32, phase: &str, generation: i64, version: i64| {
            let mut item = cluster_item("c-1", phase);
            item.insert(
                "spec".into(),
                s(format!(
                    r#"{{"name":"shop","web":{{"count":{web},"instanceType":"t3.small"}},"db":{{"count":3,"instanceType":"r6i.large"}}}}"#
                )),
            );
            item.insert("generation".into(), n(generation));
            item.insert("version".into(), n(version));
            item.insert("updated_at".into(), s("2026-11-23T10:00:00Z"));
            item
        };
        // Before: READY with 2 web, version 7. After the write whose answer was lost: the
        // record is what this request wrote (3 web, SCALING, generation 4, version 8).
        let before = mock!(aws_sdk_dynamodb::Client::query)
            .sequence()
            .output(move || QueryOutput::builder().items(meta(2, "READY", 3, 7)).build())
            .output(move || {
                QueryOutput::builder()
                    .items(meta(3, "SCALING", 4, 8))
                    .build()
            })
            .build();
        let update = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                crate::testing::conditional_check_failed(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&before, &update]);
        let scaled = ClusterStore::new(client, "t")
            .request_scale("c-1", ScaleTarget::Count(3), None)
            .await
            .expect("a lost answer of our own write is a success");
        assert_eq!(
            scaled,
            Scaled::Started {
                generation: 4,
                from: 2,
                to: 3
            }
        );
    }
}
