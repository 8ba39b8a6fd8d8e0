//! The membership survey: the health sweep's check that every database node of a READY
//! cluster is still an ONLINE member of its one group, even though its instance runs (a
//! mysqld restart without Group Replication, a member expelled after a network partition).
//!
//! The sweep sends `DbReport` to the cluster's database nodes, at most once per
//! interval (`MembershipSurveySeconds`), and records the command without a task token.
//! The command's SSM status events reach the `replication` function like any other; for a
//! survey it calls [`MembershipSurvey::judge`] instead of answering a workflow. A node that
//! reports itself out of the group starts a converge run (reason `sweep`), whose
//! ConvergeDatabase step rejoins it through the primary. Two groups are never "fixed" by
//! the survey: that is noted for an operator, exactly as a run would refuse it.
use crate::aws::commands::Commands;

use crate::aws::store::{ClusterStore, CommandRecord, CommandTarget};
use crate::domain::cluster::{Cluster, NodeState, Phase, Tier, now_rfc3339};
use crate::domain::commands::Document;
use crate::domain::report::NodeReport;
use crate::error::Result;
use crate::tasks::runs::Runs;

/// The `step` of a survey's command record (no workflow step has this name).
pub const SURVEY_STEP: &str = "survey";

/// Default time between two surveys of one cluster.
pub const DEFAULT_SURVEY_SECONDS: i64 = 900;

/// What a survey's answers say about the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every node is an ONLINE member of one group (or still RECOVERING into it).
    Whole,
    /// These nodes (slot, what they report) are out of the group: converge.
    MembersOut(Vec<(String, String)>),
    /// Nodes report different groups: an operator decides.
    TwoGroups(String),
    /// Not enough to judge (a node did not answer): the next survey asks again.
    Unknown(String),
}

/// Judge the reports of a cluster's database nodes: `(slot, report or why none)`.
fn verdict(reports: &[(String, std::result::Result<NodeReport, String>)]) -> Verdict {
    let groups =
        crate::domain::report::groups_of(reports.iter().filter_map(|(_, r)| r.as_ref().ok()));
    if groups.len() > 1 {
        return Verdict::TwoGroups(format!(
            "nodes report {} different groups ({})",
            groups.len(),
            groups.join(", ")
        ));
    }
    let mut out = Vec::new();
    for (slot, report) in reports {
        match report {
            Err(why) => return Verdict::Unknown(format!("{slot}: {why}")),
            Ok(report) if matches!(report.member_state.as_str(), "ONLINE" | "RECOVERING") => {}
            Ok(report) => out.push((slot.clone(), report.member_state.clone())),
        }
    }
    if out.is_empty() {
        Verdict::Whole
    } else {
        Verdict::MembersOut(out)
    }
}

/// Sends the survey (from the sweep) and acts on its answers (from the `replication`
/// function, which receives the command's status events).
#[derive(Debug, Clone)]
pub struct MembershipSurvey {
    /// Survey claims and records, the action log.
    pub store: ClusterStore,
    /// Sends `DbReport` to the database nodes.
    pub commands: Commands,
    /// Starts the converge run a member out of its group needs.
    pub runs: Runs,
}

impl MembershipSurvey {
    /// Survey a READY cluster's group unless one was sent within `interval_seconds`; the
    /// command id when sent.
    pub async fn survey(&self, cluster: &Cluster, interval_seconds: i64) -> Result<Option<String>> {
        if cluster.phase != Phase::Ready {
            return Ok(None);
        }
        let db: Vec<CommandTarget> = cluster
            .nodes
            .iter()
            .filter(|n| {
                n.tier == Tier::Db
                    && !matches!(n.state, NodeState::Terminating | NodeState::Terminated)
            })
            .filter_map(|n| {
                Some(CommandTarget {
                    instance_id: n.instance_id.clone()?,
                    slot: n.slot.clone(),
                })
            })
            .collect();
        if db.is_empty()
            || !self
                .store
                .claim_survey(&cluster.id, interval_seconds)
                .await?
        {
            return Ok(None);
        }
        let instance_ids: Vec<String> = db.iter().map(|t| t.instance_id.clone()).collect();
        let secret = crate::aws::secrets::admin_secret_name(&cluster.id);
        let command_id = self
            .commands
            .send(
                &cluster.id,
                Document::DbReport,
                &instance_ids,
                &[("adminSecretId", secret.as_str())],
            )
            .await?;
        self.store
            .record_survey(&CommandRecord {
                command_id: command_id.clone(),
                cluster_id: cluster.id.clone(),
                generation: cluster.generation,
                step: SURVEY_STEP.into(),
                document: Document::DbReport,
                targets: db,
                step_key: SURVEY_STEP.into(),
                sent_at: now_rfc3339(),
            })
            .await?;
        Ok(Some(command_id))
    }

    /// Act on a finished survey: `(slot, stdout, or why there is none)` per node.
    pub async fn judge(
        &self,
        record: &CommandRecord,
        answers: Vec<(String, std::result::Result<String, String>)>,
    ) -> Result<Verdict> {
        let reports: Vec<(String, std::result::Result<NodeReport, String>)> = answers
            .into_iter()
            .map(|(slot, answer)| {
                let report = answer
                    .and_then(|stdout| NodeReport::from_output(&stdout).map_err(|e| e.to_string()));
                (slot, report)
            })
            .collect();
        let verdict = verdict(&reports);
        let id = record.cluster_id.as_str();
        match &verdict {
            Verdict::Whole => {}
            Verdict::Unknown(why) => {
                tracing::warn!(cluster_id = id, %why, "survey inconclusive; the next one asks again");
            }
            Verdict::TwoGroups(why) => {
                self.store
                    .append_action(
                        id,
                        record.generation,
                        "GroupConflict",
                        &format!("{why} (found by the membership survey); resolve by hand"),
                    )
                    .await?;
            }
            Verdict::MembersOut(out) => {
                let who: Vec<String> = out
                    .iter()
                    .map(|(slot, state)| format!("{slot} reports {state}"))
                    .collect();
                let detail = format!(
                    "{} (found by the membership survey); rejoining",
                    who.join(", ")
                );
                // Only the generation surveyed: a run since then has looked at the group.
                if self
                    .runs
                    .converge(id, record.generation, &detail)
                    .await?
                    .is_none()
                {
                    tracing::info!(
                        cluster_id = id,
                        "cluster moved on since the survey; nothing to do"
                    );
                }
            }
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str, group: &str) -> std::result::Result<NodeReport, String> {
        Ok(NodeReport {
            member_state: state.into(),
            role: String::new(),
            group_name: group.into(),
            cluster_name: "shop".into(),
            gtid_executed: String::new(),
            members: Vec::new(),
            metadata_members: Vec::new(),
            restored_backup: None,
        })
    }

    #[test]
    fn a_whole_group_needs_nothing() {
        let reports = vec![
            ("db-0".to_string(), report("ONLINE", "g")),
            ("db-1".to_string(), report("ONLINE", "g")),
            ("db-2".to_string(), report("RECOVERING", "g")),
        ];
        assert_eq!(verdict(&reports), Verdict::Whole);
    }

    #[test]
    fn an_offline_or_failed_member_is_out() {
        let reports = vec![
            ("db-0".to_string(), report("ONLINE", "g")),
            ("db-1".to_string(), report("OFFLINE", "g")),
            ("db-2".to_string(), report("ERROR", "g")),
        ];
        assert_eq!(
            verdict(&reports),
            Verdict::MembersOut(vec![
                ("db-1".into(), "OFFLINE".into()),
                ("db-2".into(), "ERROR".into())
            ])
        );
    }

    #[test]
    fn two_groups_and_silence_are_not_acted_on() {
        let split = vec![
            ("db-0".to_string(), report("ONLINE", "g1")),
            ("db-1".to_string(), report("ONLINE", "g2")),
        ];
        assert!(matches!(verdict(&split), Verdict::TwoGroups(_)));
        let silent = vec![
            ("db-0".to_string(), report("ONLINE", "g")),
            ("db-1".to_string(), Err("Failed, exit code 1".to_string())),
        ];
        assert!(matches!(verdict(&silent), Verdict::Unknown(why) if why.contains("db-1")));
    }
}
