//! The choice of the next database step from every live node's report: the split-brain
//! guard ([`decide`]) first, then, in a group, the order in which the group is completed
//! (wait for a member on its way, remove a member whose instance is gone, add a node that is
//! not in the group, verify). Pure: the replication task reads the reports, asks this
//! module, and sends what it answers.

use crate::domain::report::{GroupDecision, NodeReport, decide, gtid_subset};

/// One live database node as the converge step sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNode {
    /// Its slot (`db-0`...), what messages name.
    pub slot: String,
    /// Its instance id, for messages an operator can act on.
    pub instance: String,
    /// Its private DNS name: how the group and the metadata know it.
    pub host: String,
    /// What it reported.
    pub report: NodeReport,
}

/// What the database tier needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbStep {
    /// Only a person can resolve this (nodes in two groups): the run stops here.
    Refuse(String),
    /// Nothing to send yet: inspect again after a pause.
    Wait(String),
    /// A cluster restored from a backup: before the group is created, the seed's data
    /// directory is replaced by the backup (and binary logs applied up to the plan's time).
    Restore {
        /// The seed's host.
        host: String,
    },
    /// No group and no metadata anywhere: create the cluster on this host (the seed).
    Create {
        /// The seed's host.
        host: String,
    },
    /// Every member is offline but metadata exists: reboot from this, the most complete,
    /// host. Whether `force` may be passed is EC2's to confirm (the task asks).
    Reboot {
        /// The reboot seed's host.
        host: String,
    },
    /// The metadata lists a member that is no live node: remove it through the primary
    /// before anything is added.
    Remove {
        /// The member the command runs on.
        primary: String,
        /// The member to remove, as the metadata names it.
        stale: String,
    },
    /// A node is not in the group: add it through the primary.
    Join {
        /// The member the command runs on.
        primary: String,
        /// The node to add.
        host: String,
        /// Its slot: a join is sent once per slot and run.
        slot: String,
    },
    /// Every node is ONLINE in one group with one primary: done.
    Verified {
        /// What the action log says: the group, its primary and its size.
        detail: String,
    },
}

/// The next step for `nodes` (in slot order; the first is the seed when nothing exists).
/// `restore_backup` is the backup a restored cluster starts from: until the seed reports
/// it restored, the group is not created (a group created on an empty seed would let the
/// joiners clone nothing, and a restore afterwards would have to undo a live group).
pub fn next_step(nodes: &[ObservedNode], restore_backup: Option<&str>) -> DbStep {
    let Some(seed) = nodes.first() else {
        return DbStep::Wait("no database node reported".into());
    };
    let by_host: Vec<(String, NodeReport)> = nodes
        .iter()
        .map(|n| (n.host.clone(), n.report.clone()))
        .collect();
    let primary = match decide(&by_host, &seed.host) {
        GroupDecision::Conflict(why) => return DbStep::Refuse(why),
        GroupDecision::CreateOn(host) => {
            let restored = nodes
                .iter()
                .find(|n| n.host == host)
                .and_then(|n| n.report.restored_backup.as_deref());
            return match restore_backup {
                Some(backup) if restored != Some(backup) => DbStep::Restore { host },
                _ => DbStep::Create { host },
            };
        }
        GroupDecision::RebootFrom(host) => return DbStep::Reboot { host },
        GroupDecision::JoinThrough(primary) => primary,
    };
    if let Some(node) = nodes
        .iter()
        .find(|n| n.report.in_group() && n.report.member_state != "ONLINE")
    {
        return DbStep::Wait(format!(
            "{} ({}) is {} in the group; waiting for it to come ONLINE",
            node.slot, node.instance, node.report.member_state
        ));
    }
    // The primary's metadata decides, not its group view: Group Replication expels an
    // unreachable member within ~10 s, the metadata keeps it.
    let live_hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
    let stale = nodes
        .iter()
        .find(|n| n.report.is_primary())
        .and_then(|n| n.report.absent_members(&live_hosts).into_iter().next());
    if let Some(stale) = stale {
        return DbStep::Remove { primary, stale };
    }
    if let Some(node) = nodes.iter().find(|n| !n.report.in_group()) {
        return DbStep::Join {
            primary,
            host: node.host.clone(),
            slot: node.slot.clone(),
        };
    }
    let primaries: Vec<&str> = nodes
        .iter()
        .filter(|n| n.report.is_primary())
        .map(|n| n.slot.as_str())
        .collect();
    if primaries.len() != 1 {
        return DbStep::Wait(format!(
            "the group reports {} primaries ({}); waiting for one",
            primaries.len(),
            primaries.join(", ")
        ));
    }
    DbStep::Verified {
        detail: format!(
            "group {}: PRIMARY {}, {} ONLINE",
            seed.report.group_name,
            primaries[0],
            nodes.len()
        ),
    }
}

/// Why a forced reboot from `seed` must not run, if it must not: `force` also skips the
/// Shell's check that every reachable member's GTID set fits the seed's (mysql-shell
/// reboot_cluster_from_complete_outage.cc: the replica GTID check runs only without force),
/// so a member with transactions the seed lacks would lose them. A person decides that.
pub fn forced_reboot_refusal(nodes: &[ObservedNode], seed: &str) -> Option<String> {
    let seed_report = &nodes.iter().find(|n| n.host == seed)?.report;
    let (other, report) = nodes
        .iter()
        .map(|n| (&n.host, &n.report))
        .find(|(_, r)| !gtid_subset(&r.gtid_executed, &seed_report.gtid_executed))?;
    Some(format!(
        "{other} has transactions the reboot seed {seed} lacks (its GTID set {} is not \
         contained in {}); a forced reboot from complete outage would discard them: compare \
         the two nodes and reboot by hand",
        report.gtid_executed, seed_report.gtid_executed
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(slot: &str, state: &str, role: &str, group: &str, gtid: &str) -> ObservedNode {
        ObservedNode {
            slot: slot.into(),
            instance: format!("i-{slot}"),
            host: format!("{slot}.internal"),
            report: NodeReport {
                member_state: state.into(),
                role: role.into(),
                group_name: group.into(),
                cluster_name: if group.is_empty() { "" } else { "shop" }.into(),
                gtid_executed: gtid.into(),
                members: Vec::new(),
                metadata_members: Vec::new(),
                restored_backup: None,
            },
        }
    }

    fn fresh(slot: &str) -> ObservedNode {
        node(slot, "", "", "", "")
    }

    #[test]
    fn nothing_anywhere_creates_on_the_first_node() {
        let nodes = [fresh("db-0"), fresh("db-1"), fresh("db-2")];
        assert_eq!(
            next_step(&nodes, None),
            DbStep::Create {
                host: "db-0.internal".into()
            }
        );
        assert!(matches!(next_step(&[], None), DbStep::Wait(_)));
    }

    #[test]
    fn a_restored_cluster_restores_its_seed_before_the_group_is_created() {
        let backup = "20261201T063000Z-0a1b2c3d";
        let mut nodes = [fresh("db-0"), fresh("db-1"), fresh("db-2")];
        assert_eq!(
            next_step(&nodes, Some(backup)),
            DbStep::Restore {
                host: "db-0.internal".into()
            }
        );
        // Restored from another backup (a marker left by an earlier attempt): restore again.
        nodes[0].report.restored_backup = Some("20261130T063000Z-ffffffff".into());
        assert!(matches!(
            next_step(&nodes, Some(backup)),
            DbStep::Restore { .. }
        ));
        nodes[0].report.restored_backup = Some(backup.into());
        assert_eq!(
            next_step(&nodes, Some(backup)),
            DbStep::Create {
                host: "db-0.internal".into()
            }
        );
        // Once the group exists the plan no longer matters: joiners clone the seed.
        let primary = node("db-0", "ONLINE", "PRIMARY", "g1", "g1:1-9");
        assert!(matches!(
            next_step(&[primary, fresh("db-1")], Some(backup)),
            DbStep::Join { .. }
        ));
    }

    #[test]
    fn a_group_is_completed_one_node_at_a_time_then_verified() {
        let primary = node("db-0", "ONLINE", "PRIMARY", "g", "a:1-5");
        let nodes = [primary.clone(), fresh("db-1"), fresh("db-2")];
        assert_eq!(
            next_step(&nodes, None),
            DbStep::Join {
                primary: "db-0.internal".into(),
                host: "db-1.internal".into(),
                slot: "db-1".into()
            }
        );
        let recovering = node("db-1", "RECOVERING", "SECONDARY", "g", "a:1-3");
        let waiting = next_step(&[primary.clone(), recovering, fresh("db-2")], None);
        assert!(
            matches!(&waiting, DbStep::Wait(why) if why.contains("db-1 (i-db-1) is RECOVERING")),
            "{waiting:?}"
        );
        let secondary = |slot| node(slot, "ONLINE", "SECONDARY", "g", "a:1-5");
        assert_eq!(
            next_step(&[primary, secondary("db-1"), secondary("db-2")], None),
            DbStep::Verified {
                detail: "group g: PRIMARY db-0, 3 ONLINE".into()
            }
        );
    }

    #[test]
    fn a_member_the_metadata_keeps_for_a_lost_instance_is_removed_before_any_join() {
        let mut primary = node("db-0", "ONLINE", "PRIMARY", "g", "a:1-5");
        primary.report.metadata_members = vec!["db-0.internal".into(), "gone.internal".into()];
        let step = next_step(&[primary, fresh("db-1")], None);
        assert!(
            matches!(&step, DbStep::Remove { primary, stale }
                if primary == "db-0.internal" && stale == "gone.internal"),
            "{step:?}"
        );
    }

    #[test]
    fn two_groups_are_refused_and_an_outage_reboots() {
        let split = [
            node("db-0", "ONLINE", "PRIMARY", "g1", ""),
            node("db-1", "ONLINE", "PRIMARY", "g2", ""),
        ];
        assert!(matches!(next_step(&split, None), DbStep::Refuse(_)));
        let outage = [
            node("db-0", "OFFLINE", "", "", "a:1-3"),
            node("db-1", "OFFLINE", "", "", "a:1-9"),
        ];
        let mut outage = outage.to_vec();
        for n in &mut outage {
            n.report.cluster_name = "shop".into();
        }
        assert_eq!(
            next_step(&outage, None),
            DbStep::Reboot {
                host: "db-1.internal".into()
            }
        );
    }

    #[test]
    fn a_forced_reboot_is_refused_when_a_member_holds_what_the_seed_lacks() {
        let nodes = [
            node("db-0", "OFFLINE", "", "", "a:1-9"),
            node("db-1", "OFFLINE", "", "", "a:1-5,b:1"),
        ];
        let why = forced_reboot_refusal(&nodes, "db-0.internal").expect("refused");
        assert!(why.contains("db-1.internal has transactions"), "{why}");
        let behind = [
            node("db-0", "OFFLINE", "", "", "a:1-9"),
            node("db-1", "OFFLINE", "", "", "a:1-5"),
        ];
        assert_eq!(forced_reboot_refusal(&behind, "db-0.internal"), None);
    }
}
