//! The SSM commands the workflow waits on: `COMMAND#` items (what a status event resolves:
//! the cluster, the step and the task token to answer, answered once) and the run's
//! `STEP#` items (the last command sent for a step and how often it failed), plus the
//! commands of membership surveys, which no workflow waits on.

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::{data_of, happened, is_condition_failure, n, number_attr, s, to_json};
use super::{COMMAND_RECORD_SECONDS, ClusterStore, Fence};
use crate::domain::cluster::{epoch_seconds, now_rfc3339};
use crate::error::{Error, Result, from_sdk};

/// An SSM command a workflow task waits on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    /// SSM's id of the command: the key a status event is looked up by.
    pub command_id: String,
    /// The cluster the command works on.
    pub cluster_id: String,
    /// The generation of the run that sent it: an answer for an older run is stale.
    pub generation: u64,
    /// The workflow step (`db-install`, `db-inspect`, ...): the phase a failure names.
    pub step: String,
    /// The SSM document it ran: how its output is read.
    pub document: crate::domain::commands::Document,
    /// The instances it went to, with their slots.
    pub targets: Vec<CommandTarget>,
    /// The `STEP#` record it counts against (failures are added there).
    pub step_key: String,
    /// When it was sent (RFC 3339), for the record and for people reading it.
    pub sent_at: String,
}

/// What a run sent for one step so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// The last command sent for the step: a retried task waits on it instead of resending.
    pub command_id: String,
    /// How often the step was sent, so a task can stop resending after a few tries.
    pub sends: u32,
    /// How often its commands failed (counted by the event handler).
    pub failures: u32,
    /// The last failure's message, for the error the run ends with.
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
/// One instance a command went to: an answer names the instance, a decision the slot.
pub struct CommandTarget {
    /// The EC2 instance SSM ran the command on.
    pub instance_id: String,
    /// The node's slot in the cluster (`db-0`, `web-1`, ...).
    pub slot: String,
}

impl ClusterStore {
    /// What a run sent for a step (`STEP#<key>` in the cluster partition): the last command,
    /// how often the step was sent and how often its command failed.
    pub async fn step_record(&self, id: &str, step_key: &str) -> Result<Option<StepRecord>> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("STEP#{step_key}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        Ok(item.item().and_then(|item| {
            Some(StepRecord {
                command_id: item.get("command_id")?.as_s().ok()?.clone(),
                sends: number_attr(item, "sends").unwrap_or(1) as u32,
                failures: number_attr(item, "failures").unwrap_or(0) as u32,
                last_failure: item
                    .get("last_failure")
                    .and_then(|v| v.as_s().ok())
                    .cloned(),
            })
        }))
    }

    /// Count a failed command against its step (the event handler calls this). Refused
    /// quietly once the cluster is purged, so a late event creates nothing.
    pub async fn record_step_failure(&self, id: &str, step_key: &str, message: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(format!("STEP#{step_key}")))
            .update_expression("ADD failures :one SET last_failure = :message")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":message", s(message))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Record a command the workflow now waits on, under the run's fence: the command item
    /// (what a status event resolves: the task token to answer) and its step's pointer to
    /// it, now sent `sends` times. Command items expire a week after they are sent.
    pub async fn record_command(
        &self,
        fence: Fence,
        record: &CommandRecord,
        sends: u32,
        task_token: &str,
    ) -> Result<()> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        let id = record.cluster_id.as_str();
        let step_key = format!("STEP#{}", record.step_key);
        let corrupt = |key: String| {
            move |e: aws_sdk_dynamodb::error::BuildError| Error::CorruptRecord {
                key,
                problem: e.to_string(),
            }
        };
        let command = Put::builder()
            .table_name(&self.table)
            .item("pk", s(Self::command_key(&record.command_id)))
            .item("sk", s("COMMAND"))
            .item("cluster_id", s(id))
            .item("task_token", s(task_token))
            .item("data", s(to_json("command record", record)?))
            .item("expires_at", n(epoch_seconds() + COMMAND_RECORD_SECONDS))
            .build()
            .map_err(corrupt(Self::command_key(&record.command_id)))?;
        // An update, not a put: the failure count of earlier sends stays.
        let step = Update::builder()
            .table_name(&self.table)
            .key("pk", s(Self::cluster_key(id)))
            .key("sk", s(&step_key))
            .update_expression("SET command_id = :command, sends = :sends")
            .expression_attribute_values(":command", s(&record.command_id))
            .expression_attribute_values(":sends", n(sends))
            .build()
            .map_err(corrupt(step_key.clone()))?;
        self.fenced_transact(
            id,
            fence,
            vec![
                TransactWriteItem::builder().put(command).build(),
                TransactWriteItem::builder().update(step).build(),
            ],
        )
        .await
    }

    /// Point a command at the task token now waiting for it (a retried or re-armed task).
    pub async fn arm_command(&self, command_id: &str, task_token: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET task_token = :token")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":token", s(task_token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(Error::NotFound {
                kind: "command",
                id: command_id.to_string(),
            }),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// A recorded command and the task token waiting for it; `None` for commands this
    /// orchestrator did not send (or whose record expired).
    pub async fn command(&self, command_id: &str) -> Result<Option<(CommandRecord, String)>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb", "GetItem", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        let record: CommandRecord = data_of(item)?;
        let token = item
            .get("task_token")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        Ok(Some((record, token)))
    }

    /// Note that `instance_id` reported a final status for a command; returns every
    /// instance that has so far (the event handler answers once all targets have).
    pub async fn note_finished(&self, command_id: &str, instance_id: &str) -> Result<Vec<String>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("ADD finished :instance")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":instance",
                AttributeValue::Ss(vec![instance_id.to_string()]),
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output
                .attributes()
                .and_then(|a| a.get("finished"))
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default()),
            Err(e) if is_condition_failure(&e) => Ok(Vec::new()),
            Err(e) => Err(from_sdk("dynamodb", "UpdateItem", e)),
        }
    }

    /// Record a survey's command (no workflow waits on it: no lease, no task token).
    pub async fn record_survey(&self, record: &CommandRecord) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::command_key(&record.command_id)))
            .item("sk", s("COMMAND"))
            .item("cluster_id", s(&record.cluster_id))
            .item("task_token", s(""))
            .item("data", s(to_json("command record", record)?))
            .item("expires_at", n(epoch_seconds() + COMMAND_RECORD_SECONDS))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("dynamodb", "PutItem", e))
    }

    /// Claim the right to judge a survey's answers: true once per command.
    pub async fn claim_survey_result(&self, command_id: &str) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET resolved_at = :at")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(resolved_at)")
            .expression_attribute_values(":at", s(now_rfc3339()))
            .send()
            .await;
        happened(result, "UpdateItem")
    }

    /// Claim the right to answer `task_token` for this command: true once per token, so an
    /// event delivered twice (or an event racing the fallback poll) answers the workflow once.
    pub async fn claim_resolution(&self, command_id: &str, task_token: &str) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::command_key(command_id)))
            .key("sk", s("COMMAND"))
            .update_expression("SET resolved_token = :token, resolved_at = :at")
            .condition_expression(
                "task_token = :token AND (attribute_not_exists(resolved_token) OR resolved_token <> :token)",
            )
            .expression_attribute_values(":token", s(task_token))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .send()
            .await;
        happened(result, "UpdateItem")
    }
}
