//! A command's status events -> the answer to the workflow. Each instance's final status
//! event is counted; once every target has reported, the API gives statuses and output,
//! and the waiting token is answered once: the outputs on success, or the first failure
//! with its stderr excerpt. A membership survey's command goes to the survey's judge.

use super::{CommandResult, InstanceOutput, Replicator, STDOUT_TAIL_CHARS};
use crate::aws::commands::{STDERR_EXCERPT_CHARS, tail};
use crate::aws::store::CommandRecord;
use crate::domain::cluster::Slot;
use crate::domain::commands::{CommandStatus, Document};
use crate::error::{ERROR_TYPE_COMMAND_FAILED, ERROR_TYPE_TERMINAL, Error, Result};

/// Why a command failed, as the workflow and the API show it.
fn failure_message(
    document: Document,
    instance: &str,
    slot: Slot,
    status: CommandStatus,
    code: i32,
    stderr: &str,
    details: &str,
) -> String {
    let excerpt = tail(stderr, STDERR_EXCERPT_CHARS);
    let excerpt = if excerpt.is_empty() {
        "(no stderr)".to_string()
    } else {
        excerpt
    };
    format!(
        "{} {status:?} on {instance} ({slot}), exit code {code}{}: {excerpt}",
        document.suffix(),
        if details.is_empty() || details == format!("{status:?}") {
            String::new()
        } else {
            format!(" ({details})")
        }
    )
}

/// The slot of the target `instance` of a recorded command. The command went to exactly
/// its recorded targets (SendCommand by instance ids), each recorded with its slot's name,
/// so a miss is a corrupt record.
fn slot_of(record: &CommandRecord, instance: &str) -> Result<Slot> {
    record
        .targets
        .iter()
        .find(|t| t.instance_id == instance)
        .and_then(|t| Slot::parse(&t.slot))
        .ok_or_else(|| Error::CorruptRecord {
            key: format!("COMMAND#{}", record.command_id),
            problem: format!("{instance} ran the command but is no target with a slot name"),
        })
}

/// Exit code 3 is the scripts' deliberate refusal (split-brain guard): retrying cannot help.
/// A cancelled command was cancelled by a person. Anything else may be transient.
fn failure_type(status: CommandStatus, code: i32) -> &'static str {
    if code == 3 || status == CommandStatus::Cancelled {
        ERROR_TYPE_TERMINAL
    } else {
        ERROR_TYPE_COMMAND_FAILED
    }
}

impl Replicator {
    /// Answer the task waiting on `command_id` once every instance has finished; a no-op
    /// for commands this orchestrator did not send, still running, or already answered.
    /// `finished` is the instance whose final status event arrived: completion is counted
    /// from the events (one per target), then the API gives statuses and output. Without
    /// it (the task's own check, the fallback poll) the API alone decides.
    /// Returns whether this call answered.
    #[tracing::instrument(skip(self))]
    pub async fn resolve(&self, command_id: &str, finished: Option<&str>) -> Result<bool> {
        let Some((record, token)) = self.store.command(command_id).await? else {
            tracing::info!("not a command of this orchestrator; ignored");
            return Ok(false);
        };
        if let Some(instance) = finished {
            let reported = self.store.note_finished(command_id, instance).await?;
            let waiting: Vec<&str> = record
                .targets
                .iter()
                .map(|t| t.instance_id.as_str())
                .filter(|i| !reported.iter().any(|r| r == i))
                .collect();
            if !waiting.is_empty() {
                tracing::info!(?waiting, "waiting for the other instances");
                return Ok(false);
            }
        }
        let invocations = self.commands.invocations(command_id).await?;
        if invocations.is_empty() || invocations.iter().any(|i| !i.status.is_terminal()) {
            return Ok(false);
        }
        if record.step == crate::tasks::survey::SURVEY_STEP {
            return self.judge_survey(&record, &invocations).await;
        }
        // Each invocation's slot before the claim: a record that cannot name one fails
        // here and leaves the token to a later event or the fallback poll.
        let slots = invocations
            .iter()
            .map(|i| slot_of(&record, &i.instance_id))
            .collect::<Result<Vec<Slot>>>()?;
        if token.is_empty() || !self.store.claim_resolution(command_id, &token).await? {
            tracing::info!(%command_id, "already answered");
            return Ok(false);
        }
        let mut outputs = Vec::new();
        let mut failure = None;
        for (invocation, slot) in invocations.iter().zip(slots) {
            let (output, code) = self
                .commands
                .output(&record.cluster_id, command_id, &invocation.instance_id)
                .await?;
            if invocation.status != CommandStatus::Success && failure.is_none() {
                failure = Some((
                    failure_type(invocation.status, code),
                    failure_message(
                        record.document,
                        &invocation.instance_id,
                        slot,
                        invocation.status,
                        code,
                        &output.stderr,
                        &invocation.status_details,
                    ),
                ));
            }
            outputs.push(InstanceOutput {
                instance_id: invocation.instance_id.clone(),
                slot,
                stdout: tail(&output.stdout, STDOUT_TAIL_CHARS),
            });
        }
        let outcome = match failure {
            Some((error_type, message)) => {
                tracing::warn!(step = %record.step, %message, "command failed");
                self.store
                    .record_step_failure(&record.cluster_id, &record.step_key, &message)
                    .await?;
                Err((error_type, message))
            }
            None => Ok(CommandResult {
                done: false,
                wait: false,
                step: record.step.clone(),
                detail: format!(
                    "{} succeeded on {} instance(s)",
                    record.document.suffix(),
                    outputs.len()
                ),
                outputs,
            }),
        };
        self.answer(&token, outcome).await
    }

    /// A finished membership survey: hand every node's report to the survey's judge, once.
    async fn judge_survey(
        &self,
        record: &CommandRecord,
        invocations: &[crate::aws::commands::Invocation],
    ) -> Result<bool> {
        if !self.store.claim_survey_result(&record.command_id).await? {
            return Ok(false);
        }
        let mut answers = Vec::new();
        for target in &record.targets {
            let answer = match invocations
                .iter()
                .find(|i| i.instance_id == target.instance_id)
            {
                None => Err("no invocation".to_string()),
                Some(invocation) if invocation.status != CommandStatus::Success => {
                    Err(format!("{:?}", invocation.status))
                }
                Some(invocation) => self
                    .commands
                    .output(
                        &record.cluster_id,
                        &record.command_id,
                        &invocation.instance_id,
                    )
                    .await
                    .map(|(output, _)| output.stdout)
                    .map_err(|e| e.to_string()),
            };
            answers.push((target.slot.clone(), answer));
        }
        let verdict = self.survey.judge(record, answers).await?;
        tracing::info!(cluster_id = %record.cluster_id, ?verdict, "membership survey judged");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::store::CommandTarget;

    const COMMAND: &str = "cmd-1";

    #[test]
    fn an_invocation_on_no_recorded_target_is_a_corrupt_record() {
        let record = CommandRecord {
            command_id: COMMAND.into(),
            cluster_id: "c-0123456789ab".into(),
            generation: 1,
            step: "db-inspect".into(),
            document: Document::DbReport,
            targets: vec![
                CommandTarget {
                    instance_id: "i-1".into(),
                    slot: "db-0".into(),
                },
                CommandTarget {
                    instance_id: "i-2".into(),
                    slot: "db".into(),
                },
            ],
            step_key: "g1#inspect".into(),
            sent_at: "2026-11-23T12:02:00Z".into(),
        };
        assert_eq!(
            slot_of(&record, "i-1").unwrap(),
            Slot::parse("db-0").unwrap()
        );
        for instance in ["i-2", "i-3"] {
            let error = slot_of(&record, instance).unwrap_err();
            assert!(
                matches!(&error, Error::CorruptRecord { key, .. } if key == "COMMAND#cmd-1"),
                "{error}"
            );
        }
    }

    #[test]
    fn refusals_and_cancellations_are_terminal_the_rest_retryable() {
        assert_eq!(failure_type(CommandStatus::Failed, 3), ERROR_TYPE_TERMINAL);
        assert_eq!(
            failure_type(CommandStatus::Cancelled, -1),
            ERROR_TYPE_TERMINAL
        );
        assert_eq!(
            failure_type(CommandStatus::Failed, 1),
            ERROR_TYPE_COMMAND_FAILED
        );
        assert_eq!(
            failure_type(CommandStatus::TimedOut, -1),
            ERROR_TYPE_COMMAND_FAILED
        );
    }

    #[test]
    fn failure_messages_name_document_instance_slot_and_stderr() {
        let message = failure_message(
            Document::DbCreateCluster,
            "i-0abc",
            Slot::parse("db-0").unwrap(),
            CommandStatus::Failed,
            1,
            "noise\nDba.createCluster: access denied\n",
            "Failed",
        );
        assert_eq!(
            message,
            "DbCreateCluster Failed on i-0abc (db-0), exit code 1: noise\nDba.createCluster: access denied"
        );
        let quiet = failure_message(
            Document::DbInstall,
            "i-1",
            Slot::parse("db-1").unwrap(),
            CommandStatus::TimedOut,
            -1,
            "",
            "Delivery Timed Out",
        );
        assert!(
            quiet.ends_with("(Delivery Timed Out): (no stderr)"),
            "{quiet}"
        );
    }
}
