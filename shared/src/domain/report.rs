//! A database node's view, as `scripts/ssm/db-report.sh` prints it: one JSON line among
//! whatever else the command wrote. The replication tasks turn it into node records (member
//! state, PRIMARY/SECONDARY) and the split-brain guard into decisions.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One database node's own view of its group and data, parsed from `DbReport` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// `ONLINE`, `RECOVERING`, `OFFLINE`, `ERROR`, `UNREACHABLE`.
    pub member_state: String,
    /// `PRIMARY`, `SECONDARY`, or empty when not in a group.
    pub role: String,
    /// `group_replication_group_name`, empty when none is set.
    pub group_name: String,
    /// The InnoDB Cluster its metadata names; empty without metadata.
    pub cluster_name: String,
    /// `@@gtid_executed`, compared to find the node with the most transactions.
    pub gtid_executed: String,
    /// The hosts this node sees as group members. Group Replication expels a member it
    /// cannot reach within seconds, so a lost node soon disappears from this list while it
    /// stays in the cluster's metadata: see `metadata_members`.
    #[serde(default)]
    pub members: Vec<String>,
    /// The hosts the InnoDB Cluster metadata on this node lists as instances of the
    /// cluster (`mysql_innodb_cluster_metadata.instances.address`, without the port). A
    /// member stays here until `cluster.removeInstance()` removes it, whatever Group
    /// Replication thinks of it. Absent from reports of older scripts: empty.
    #[serde(default)]
    pub metadata_members: Vec<String>,
    /// The backup this node's data directory was restored from (`db-restore.sh`'s marker),
    /// if any. Absent from reports of older scripts and of nodes never restored.
    #[serde(default)]
    pub restored_backup: Option<String>,
}

impl NodeReport {
    /// The last line of `output` that is a report (a command may print other lines first).
    pub fn from_output(output: &str) -> Result<Self> {
        output
            .lines()
            .rev()
            .filter(|line| line.trim_start().starts_with('{'))
            .find_map(|line| serde_json::from_str(line.trim()).ok())
            .ok_or_else(|| {
                let excerpt: String = output.chars().take(300).collect();
                Error::MalformedEvent(format!(
                    "no node report line in the command output: {excerpt:?}"
                ))
            })
    }

    /// A member of its group now: OFFLINE and ERROR nodes keep the group's name but must
    /// rejoin it.
    pub fn in_group(&self) -> bool {
        !self.group_name.is_empty() && !matches!(self.member_state.as_str(), "OFFLINE" | "ERROR")
    }

    /// The node takes writes: the one to join new members through.
    pub fn is_primary(&self) -> bool {
        self.member_state == "ONLINE" && self.role == "PRIMARY"
    }

    /// How many transactions the GTID set holds: `uuid:1-12:15,uuid2:1-3` -> 15. The node
    /// with the most complete set is the one to reboot a cluster from after a full outage.
    pub fn transaction_count(&self) -> u64 {
        self.gtid_executed
            .split(',')
            .flat_map(|set| set.trim().split(':').skip(1))
            .map(|interval| match interval.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (
                        from.parse::<u64>().unwrap_or(0),
                        to.parse::<u64>().unwrap_or(0),
                    );
                    to.saturating_sub(from) + 1
                }
                None => u64::from(interval.parse::<u64>().is_ok()),
            })
            .sum()
    }

    /// The members this node knows of, in its metadata or in its group, that are none of
    /// `live_hosts` (the hosts of the cluster's live database nodes), each once, metadata
    /// order first: instances lost (and replaced) that the cluster still counts. The
    /// metadata is what matters: a lost member leaves `members` within ~10 s (expelled), but
    /// stays in the metadata, where it blocks a reboot from complete outage and is what
    /// Router keeps routing to, until it is removed.
    pub fn absent_members(&self, live_hosts: &[&str]) -> Vec<String> {
        let mut absent: Vec<String> = Vec::new();
        for host in self.metadata_members.iter().chain(&self.members) {
            if !live_hosts.contains(&host.as_str()) && !absent.contains(host) {
                absent.push(host.clone());
            }
        }
        absent
    }
}

/// The transactions of a GTID set (`uuid:1-5:7,uuid2:tag:1-3`, as `@@gtid_executed` prints
/// it, tagged GTIDs of 8.3+ included), as closed intervals per `uuid[:tag]`.
fn gtid_intervals(set: &str) -> Vec<(String, u64, u64)> {
    let mut intervals = Vec::new();
    for element in set.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = element.split(':');
        let mut source = parts.next().unwrap_or_default().to_ascii_lowercase();
        for part in parts {
            let bounds = match part.split_once('-') {
                Some((from, to)) => from.parse::<u64>().ok().zip(to.parse::<u64>().ok()),
                None => part.parse::<u64>().ok().map(|n| (n, n)),
            };
            match bounds {
                Some((from, to)) => intervals.push((source.clone(), from, to)),
                // A tag: the intervals after it belong to `uuid:tag`.
                None => {
                    source = format!("{}:{}", source.split(':').next().unwrap_or_default(), part)
                }
            }
        }
    }
    intervals
}

/// Whether every transaction of `subset` is in `superset` (MySQL's `GTID_SUBSET`): a
/// member whose set is not contained in the reboot seed's has transactions the rebooted
/// group would not have.
pub fn gtid_subset(subset: &str, superset: &str) -> bool {
    let have = gtid_intervals(superset);
    gtid_intervals(subset).iter().all(|(source, from, to)| {
        // Walk the superset's intervals of this source in order, covering [from, to].
        let mut mine: Vec<(u64, u64)> = have
            .iter()
            .filter(|(s, _, _)| s == source)
            .map(|(_, a, b)| (*a, *b))
            .collect();
        mine.sort_unstable();
        let mut next = *from;
        for (a, b) in mine {
            if a > next {
                break;
            }
            if b >= next {
                next = b.saturating_add(1);
            }
            if next > *to {
                return true;
            }
        }
        next > *to
    })
}

/// The distinct groups the reporting members belong to (two or more is a split brain).
pub fn groups_of<'a>(reports: impl Iterator<Item = &'a NodeReport>) -> Vec<&'a str> {
    let mut groups: Vec<&str> = reports
        .filter(|r| r.in_group())
        .map(|r| r.group_name.as_str())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// What the split-brain guard decides from every reachable node's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDecision {
    /// No node belongs to a group and none holds metadata: create on the seed.
    CreateOn(String),
    /// A group exists: add the other nodes to it through this member.
    JoinThrough(String),
    /// Every member is offline but metadata exists: reboot from the most complete node.
    RebootFrom(String),
    /// Nodes report different groups: never pick one automatically.
    Conflict(String),
}

/// Decide from `(host, report)` pairs; `seed` creates when nothing exists yet.
pub fn decide(reports: &[(String, NodeReport)], seed: &str) -> GroupDecision {
    let groups = groups_of(reports.iter().map(|(_, r)| r));
    if groups.len() > 1 {
        return GroupDecision::Conflict(format!(
            "nodes report {} different groups ({}); resolve by hand before the orchestrator acts",
            groups.len(),
            groups.join(", ")
        ));
    }
    if groups.len() == 1 {
        let through = reports
            .iter()
            .find(|(_, r)| r.is_primary())
            .or_else(|| reports.iter().find(|(_, r)| r.in_group()))
            .map(|(host, _)| host.clone())
            .unwrap_or_default();
        return GroupDecision::JoinThrough(through);
    }
    let with_metadata = reports.iter().filter(|(_, r)| !r.cluster_name.is_empty());
    if let Some((host, _)) = with_metadata.max_by_key(|(_, r)| r.transaction_count()) {
        return GroupDecision::RebootFrom(host.clone());
    }
    GroupDecision::CreateOn(seed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str, role: &str, group: &str, cluster: &str, gtid: &str) -> NodeReport {
        NodeReport {
            member_state: state.into(),
            role: role.into(),
            group_name: group.into(),
            cluster_name: cluster.into(),
            gtid_executed: gtid.into(),
            members: Vec::new(),
            metadata_members: Vec::new(),
            restored_backup: None,
        }
    }

    #[test]
    fn gtid_subsets_are_decided_per_source_interval_and_tag() {
        let seed = "aaaa:1-10:12,bbbb:1-3,aaaa:tx:1-2";
        assert!(gtid_subset("aaaa:1-10", seed));
        assert!(gtid_subset("aaaa:3-5:12,bbbb:2", seed));
        assert!(gtid_subset("", seed));
        assert!(
            gtid_subset("AAAA:1-4", seed),
            "UUIDs compare case-insensitively"
        );
        assert!(gtid_subset("aaaa:tx:2", seed));
        assert!(!gtid_subset("aaaa:1-11", seed), "11 is missing");
        assert!(!gtid_subset("cccc:1", seed), "a source the seed never saw");
        assert!(!gtid_subset("aaaa:tx:3", seed));
        assert!(!gtid_subset("aaaa:other:1", seed), "another tag");
        assert!(
            gtid_subset("aaaa:1-5:6-10", "aaaa:1-3,aaaa:4-10"),
            "adjacent intervals join"
        );
    }

    #[test]
    fn reports_parse_with_and_without_the_metadata_members() {
        // An older db-report.sh printed no metadataMembers: the field is empty, not an error.
        let old = "{\"memberState\":\"ONLINE\",\"role\":\"PRIMARY\",\"groupName\":\"g\",\"clusterName\":\"shop\",\"gtidExecuted\":\"u:1-5\",\"members\":[\"db-0\"]}";
        let parsed = NodeReport::from_output(old).unwrap();
        assert_eq!(parsed.members, vec!["db-0".to_string()]);
        assert!(parsed.metadata_members.is_empty());

        let new = "{\"memberState\":\"ONLINE\",\"role\":\"PRIMARY\",\"groupName\":\"g\",\"clusterName\":\"shop\",\"gtidExecuted\":\"u:1-5\",\"members\":[\"db-0\"],\"metadataMembers\":[\"db-0\",\"db-lost\"]}";
        let parsed = NodeReport::from_output(new).unwrap();
        assert_eq!(
            parsed.metadata_members,
            vec!["db-0".to_string(), "db-lost".to_string()]
        );
        // The camelCase name is the one the script prints and the one serialised back.
        let json = serde_json::to_value(&parsed).unwrap();
        assert_eq!(json["metadataMembers"][1], "db-lost");
    }

    #[test]
    fn a_member_expelled_from_the_group_is_still_absent_by_the_metadata() {
        // db-2 was lost: Group Replication expelled it (no longer in `members`), but the
        // metadata still lists it; db-3 replaced it and is live.
        let mut primary = report("ONLINE", "PRIMARY", "g", "shop", "u:1-9");
        primary.members = vec!["db-0".into(), "db-1".into()];
        primary.metadata_members = vec!["db-0".into(), "db-1".into(), "db-2".into()];
        let live = ["db-0", "db-1", "db-3"];
        assert_eq!(primary.absent_members(&live), vec!["db-2".to_string()]);

        // A member the group lists but the metadata does not is absent too, once.
        primary.members.push("db-2".into());
        primary.members.push("db-7".into());
        assert_eq!(
            primary.absent_members(&live),
            vec!["db-2".to_string(), "db-7".to_string()]
        );
        primary.metadata_members.clear();
        primary.members = vec!["db-0".into()];
        assert!(primary.absent_members(&live).is_empty());
    }

    #[test]
    fn the_report_line_is_found_among_other_output() {
        let output = "installing...\n{not json\n{\"memberState\":\"ONLINE\",\"role\":\"PRIMARY\",\"groupName\":\"g\",\"clusterName\":\"shop\",\"gtidExecuted\":\"u:1-5\"}\n";
        let parsed = NodeReport::from_output(output).unwrap();
        assert!(parsed.is_primary());
        assert_eq!(parsed.transaction_count(), 5);
        let err = NodeReport::from_output("nothing useful").unwrap_err();
        assert!(err.to_string().contains("nothing useful"), "{err}");
    }

    #[test]
    fn gtid_sets_count_every_interval() {
        assert_eq!(
            report("", "", "", "", "a:1-12:15,b:1-3").transaction_count(),
            16
        );
        assert_eq!(report("", "", "", "", "").transaction_count(), 0);
    }

    #[test]
    fn fresh_nodes_create_on_the_seed() {
        let fresh = report("OFFLINE", "", "", "", "");
        let reports = vec![("db-0".into(), fresh.clone()), ("db-1".into(), fresh)];
        assert_eq!(
            decide(&reports, "db-0"),
            GroupDecision::CreateOn("db-0".into())
        );
    }

    #[test]
    fn an_existing_group_is_joined_through_its_primary_never_recreated() {
        let reports = vec![
            ("db-0".into(), report("OFFLINE", "", "", "", "")),
            (
                "db-1".into(),
                report("ONLINE", "SECONDARY", "g1", "shop", "u:1-9"),
            ),
            (
                "db-2".into(),
                report("ONLINE", "PRIMARY", "g1", "shop", "u:1-9"),
            ),
        ];
        assert_eq!(
            decide(&reports, "db-0"),
            GroupDecision::JoinThrough("db-2".into())
        );
    }

    #[test]
    fn a_full_outage_reboots_from_the_most_complete_node() {
        let reports = vec![
            ("db-0".into(), report("OFFLINE", "", "", "shop", "u:1-9")),
            ("db-1".into(), report("OFFLINE", "", "", "shop", "u:1-12")),
            ("db-2".into(), report("OFFLINE", "", "", "", "")),
        ];
        assert_eq!(
            decide(&reports, "db-0"),
            GroupDecision::RebootFrom("db-1".into())
        );
    }

    #[test]
    fn two_groups_are_a_conflict_for_a_person() {
        let reports = vec![
            (
                "db-0".into(),
                report("ONLINE", "PRIMARY", "g1", "shop", "u:1-9"),
            ),
            (
                "db-1".into(),
                report("ONLINE", "PRIMARY", "g2", "shop", "v:1-3"),
            ),
        ];
        assert!(matches!(
            decide(&reports, "db-0"),
            GroupDecision::Conflict(_)
        ));
    }
}
