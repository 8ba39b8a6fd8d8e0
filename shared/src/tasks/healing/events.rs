//! An EC2 "Instance State-change Notification" for a cluster node: a node whose instance
//! stops or terminates (any state but `pending` and `running`) starts a healing run.
//!
//! Duplicates and stale events change nothing: an event id is handled once (a record with
//! a day's TTL), a loss already being healed does not start a second run (the cluster
//! remembers its lost instances until a run finishes READY), and an instance that is no
//! longer any node's (already replaced, or never ours) is ignored. A reaction that fails
//! releases its event id, so EventBridge's retry of the same event is handled again.

use super::Healer;
use crate::error::Result;
use crate::tasks::events::InstanceStateChangeEvent;
use crate::tasks::runs::HealCause;

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
        /// The cluster the instance belongs to.
        cluster_id: String,
    },
    /// A healing run of `generation` started for the lost node.
    Started {
        /// The cluster the instance belongs to.
        cluster_id: String,
        /// The generation the heal bumped the cluster to (the run's).
        generation: u64,
    },
}

impl Healer {
    /// React to one instance state change: a lost node of a cluster starts a heal, once.
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

    /// The heal of the node whose instance the (claimed) event reports lost.
    async fn react(&self, event: &InstanceStateChangeEvent) -> Result<Reaction> {
        let detail = &event.detail;
        let Some((cluster_id, node)) = self.store.node_of_instance(&detail.instance_id).await?
        else {
            return Ok(Reaction::UnknownInstance);
        };
        let Some(generation) = self
            .runs
            .heal(
                &cluster_id,
                &detail.instance_id,
                HealCause::Lost,
                &format!(
                    "{} ({}) is {}",
                    detail.instance_id,
                    node.slot,
                    detail.state.as_str()
                ),
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
    use crate::domain::cluster::{Node, Tier};
    use crate::mocked_client;
    use crate::tasks::healing::testing::{ID, healer_on, node, started};
    use aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    /// The instance of the node `web-0` in [`node`].
    const INSTANCE: &str = "i-web-0";

    /// The sample in `events/` as EventBridge delivers it, for `INSTANCE` in `state`, with
    /// event id `id`.
    fn event(id: &str, state: &str) -> InstanceStateChangeEvent {
        let mut json: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/ec2-instance-terminated.json"
        )))
        .expect("the sample parses");
        json["id"] = id.into();
        json["detail"]["instance-id"] = INSTANCE.into();
        json["detail"]["state"] = state.into();
        match crate::tasks::events::HealingTrigger::from_json(json).expect("an EC2 event") {
            crate::tasks::events::HealingTrigger::InstanceStateChange(event) => event,
            other => panic!("not a state change: {other:?}"),
        }
    }

    /// The `by-instance` index's answer: the node item of `node` in cluster [`ID`].
    fn node_item(node: &Node) -> Rule {
        let item = std::collections::HashMap::from([
            ("pk".to_string(), AttributeValue::S(format!("CLUSTER#{ID}"))),
            (
                "sk".to_string(),
                AttributeValue::S(format!("NODE#{}", node.slot)),
            ),
            ("cluster_id".to_string(), AttributeValue::S(ID.into())),
            (
                "instance_id".to_string(),
                AttributeValue::S(INSTANCE.into()),
            ),
            (
                "data".to_string(),
                AttributeValue::S(serde_json::to_string(node).expect("a node encodes")),
            ),
        ]);
        mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|r| {
                r.index_name() == Some(crate::aws::store::INSTANCE_INDEX)
                    && r.expression_attribute_values()
                        .and_then(|v| v.get(":instance"))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|id| id == INSTANCE)
            })
            .then_output(move || QueryOutput::builder().items(item.clone()).build())
    }

    /// The event id's claim (a conditional PutItem on `EVENT#<id>`): taken the first time,
    /// refused after, as DynamoDB's `attribute_not_exists(pk)` condition answers.
    fn claim(id: &str) -> Rule {
        let key = format!("EVENT#{id}");
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                r.item()
                    .and_then(|i| i.get("pk"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| *pk == key)
            })
            .sequence()
            .output(|| PutItemOutput::builder().build())
            .error(|| {
                PutItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            })
            .build()
    }

    /// The action log entry of the heal (any other PutItem is not matched).
    fn logged() -> Rule {
        mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                r.item()
                    .and_then(|i| i.get("data"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|d| {
                        d.contains("InstanceLost")
                            && d.contains(
                                "i-web-0 (web-0) is terminated; healing run, generation 3",
                            )
                    })
            })
            .then_output(|| PutItemOutput::builder().build())
    }

    /// `request_heal` for the lost instance: generation 3 the first time; refused after, as
    /// its `NOT contains(lost_instances, :instance)` condition answers once recorded.
    fn heal_requested() -> Rule {
        mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.update_expression()
                    .is_some_and(|e| e.contains("ADD lost_instances") && !e.contains("replace"))
            })
            .sequence()
            .output(|| {
                UpdateItemOutput::builder()
                    .attributes("generation", AttributeValue::N("3".into()))
                    .build()
            })
            .error(|| {
                UpdateItemError::ConditionalCheckFailedException(
                    crate::testing::conditional_check_failed(),
                )
            })
            .build()
    }

    #[tokio::test]
    async fn a_running_or_pending_instance_is_not_a_loss_and_calls_nothing() {
        // Clients with no rules: any call fails the test.
        let healer = healer_on(
            mocked_client!(aws_sdk_dynamodb, []),
            mocked_client!(aws_sdk_sfn, []),
        );
        for state in ["running", "pending"] {
            let reaction = healer.on_state_change(&event("e-1", state)).await.unwrap();
            assert_eq!(reaction, Reaction::NotALoss, "{state}");
        }
    }

    #[tokio::test]
    async fn a_stopped_or_terminated_node_starts_one_healing_run() {
        for state in ["stopped", "terminated"] {
            let node = node("web-0", Tier::Web);
            let (claimed, query, bump, start) = (
                claim("e-1"),
                node_item(&node),
                heal_requested(),
                started(ID, 3),
            );
            let logged = mock!(aws_sdk_dynamodb::Client::put_item)
                .match_requests(move |r| {
                    r.item()
                        .and_then(|i| i.get("data"))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|d| {
                            d.contains("InstanceLost")
                                && d.contains(&format!(
                                    "i-web-0 (web-0) is {state}; healing run, generation 3"
                                ))
                        })
                })
                .then_output(|| PutItemOutput::builder().build());
            let healer = healer_on(
                mocked_client!(
                    aws_sdk_dynamodb,
                    RuleMode::MatchAny,
                    [&claimed, &query, &bump, &logged]
                ),
                mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start]),
            );
            let reaction = healer.on_state_change(&event("e-1", state)).await.unwrap();
            assert_eq!(
                reaction,
                Reaction::Started {
                    cluster_id: ID.into(),
                    generation: 3
                },
                "{state}"
            );
            assert_eq!(claimed.num_calls(), 1, "the event id is claimed");
            assert_eq!(bump.num_calls(), 1, "the heal is recorded");
            assert_eq!(logged.num_calls(), 1, "the action log says why");
            assert_eq!(start.num_calls(), 1, "the healing run of generation 3");
        }
    }

    /// EventBridge delivers at least once: the same event again, and a second event for the
    /// same loss (a `stopped` then a `terminated`), start no second run.
    #[tokio::test]
    async fn a_duplicate_loss_event_starts_no_second_run() {
        let node = node("web-0", Tier::Web);
        let (first, second, query, bump, logged, start) = (
            claim("e-1"),
            claim("e-2"),
            node_item(&node),
            heal_requested(),
            logged(),
            started(ID, 3),
        );
        let healer = healer_on(
            mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&first, &second, &query, &bump, &logged]
            ),
            mocked_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start]),
        );
        let terminated = event("e-1", "terminated");
        assert!(matches!(
            healer.on_state_change(&terminated).await.unwrap(),
            Reaction::Started { generation: 3, .. }
        ));
        assert_eq!(
            healer.on_state_change(&terminated).await.unwrap(),
            Reaction::Duplicate,
            "the same event id again"
        );
        assert_eq!(query.num_calls(), 1, "a duplicate is not looked up");
        assert_eq!(
            healer
                .on_state_change(&event("e-2", "terminated"))
                .await
                .unwrap(),
            Reaction::AlreadyHandled {
                cluster_id: ID.into()
            },
            "another event for the loss being healed"
        );
        assert_eq!(bump.num_calls(), 2, "the second heal request is refused");
        assert_eq!(logged.num_calls(), 1, "one action log entry");
        assert_eq!(start.num_calls(), 1, "one healing run");
    }

    #[tokio::test]
    async fn an_instance_of_no_cluster_is_unknown_and_starts_nothing() {
        let claimed = claim("e-1");
        let none =
            mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build());
        let healer = healer_on(
            mocked_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claimed, &none]),
            // No rule: a started run fails the test.
            mocked_client!(aws_sdk_sfn, []),
        );
        let reaction = healer
            .on_state_change(&event("e-1", "terminated"))
            .await
            .unwrap();
        assert_eq!(reaction, Reaction::UnknownInstance);
        assert_eq!(none.num_calls(), 1);
    }

    /// A heal that fails (the store throttled) gives the event id back, so EventBridge's
    /// retry of the same event is handled instead of taken for a duplicate.
    #[tokio::test]
    async fn a_failed_heal_releases_the_event_for_the_retry() {
        let node = node("web-0", Tier::Web);
        let (claimed, query) = (claim("e-1"), node_item(&node));
        let throttled = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            UpdateItemError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .build(),
            )
        });
        let released = mock!(aws_sdk_dynamodb::Client::delete_item)
            .match_requests(|r| {
                r.key()
                    .and_then(|k| k.get("pk"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk == "EVENT#e-1")
            })
            .then_output(|| DeleteItemOutput::builder().build());
        let healer = healer_on(
            mocked_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&claimed, &query, &throttled, &released]
            ),
            mocked_client!(aws_sdk_sfn, []),
        );
        assert!(
            healer
                .on_state_change(&event("e-1", "terminated"))
                .await
                .is_err()
        );
        assert_eq!(released.num_calls(), 1, "the event id is released");
    }
}
