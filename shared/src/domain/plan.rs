//! Planning: from the desired spec and what EC2 reports, decide what to launch and what is
//! surplus. Pure functions, so every rule of idempotency is unit-tested without AWS.
//!
//! Instances carry their cluster and slot as tags from the moment they launch (tags are
//! part of RunInstances), so a task that crashed after launching finds its instance on the
//! next run instead of launching a second one: the slot, not the ClientToken, is the
//! idempotency key the local cloud honours too.

use crate::domain::cluster::{InstanceState, Node, NodeState, Slot, Tier};
use crate::domain::spec::ClusterSpec;
use std::collections::BTreeMap;

/// A subnet and its availability zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The subnet id, which RunInstances takes.
    pub id: String,
    /// Its zone, recorded on the node.
    pub availability_zone: String,
}

/// One instance EC2 reports with the cluster's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    /// EC2's id of the instance.
    pub instance_id: String,
    /// Its slot tag; `None` when absent or unreadable, which makes it surplus.
    pub slot: Option<Slot>,
    /// EC2's state: only pending and running instances fill a slot.
    pub state: InstanceState,
    /// Where it runs, once EC2 reports it.
    pub subnet_id: Option<String>,
    /// Its zone, once EC2 reports it.
    pub availability_zone: Option<String>,
    /// The private DNS name (empty in the EC2 answer until the interface is attached).
    pub private_dns_name: Option<String>,
    /// RFC 3339; the oldest instance of a slot wins when there are two.
    pub launched_at: String,
}

/// What a converge run has to do about instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Slots with no live instance, and the subnet each goes to.
    pub launch: Vec<(Slot, Subnet)>,
    /// Slots already filled, with their instance.
    pub keep: Vec<(Slot, ObservedInstance)>,
    /// Live instances no slot wants: duplicates and slots beyond the spec.
    pub surplus: Vec<ObservedInstance>,
}

/// Every slot the spec asks for, web first.
pub fn desired_slots(spec: &ClusterSpec) -> Vec<Slot> {
    let web = (0..spec.web.count).map(|index| Slot {
        tier: Tier::Web,
        index,
    });
    let db = (0..spec.db.count).map(|index| Slot {
        tier: Tier::Db,
        index,
    });
    web.chain(db).collect()
}

/// Spread each tier over the subnets round-robin, so three database nodes land in three
/// availability zones when three subnets are given (and web nodes alternate likewise).
pub fn subnet_for(slot: Slot, subnets: &[Subnet]) -> Option<&Subnet> {
    if subnets.is_empty() {
        return None;
    }
    // Offset the database tier so a 1-web cluster does not stack web-0 and db-0 together.
    let offset = match slot.tier {
        Tier::Web => 0,
        Tier::Db => 1,
    };
    subnets.get((slot.index as usize + offset) % subnets.len())
}

/// Which slots to launch, which live instance keeps each slot, and what is surplus.
pub fn plan_launches(
    spec: &ClusterSpec,
    subnets: &[Subnet],
    observed: &[ObservedInstance],
) -> LaunchPlan {
    let mut by_slot: BTreeMap<Slot, Vec<&ObservedInstance>> = BTreeMap::new();
    let mut plan = LaunchPlan::default();
    for instance in observed.iter().filter(|i| i.state.is_alive()) {
        match instance.slot {
            Some(slot) => by_slot.entry(slot).or_default().push(instance),
            None => plan.surplus.push(instance.clone()),
        }
    }
    let desired = desired_slots(spec);
    for slot in &desired {
        match by_slot.remove(slot) {
            Some(mut instances) => {
                instances.sort_by(|a, b| {
                    (a.launched_at.as_str(), a.instance_id.as_str())
                        .cmp(&(b.launched_at.as_str(), b.instance_id.as_str()))
                });
                let mut instances = instances.into_iter();
                if let Some(first) = instances.next() {
                    plan.keep.push((*slot, first.clone()));
                }
                plan.surplus.extend(instances.cloned());
            }
            None => {
                if let Some(subnet) = subnet_for(*slot, subnets) {
                    plan.launch.push((*slot, subnet.clone()));
                }
            }
        }
    }
    // Slots beyond the spec (after a scale-in) are surplus.
    plan.surplus
        .extend(by_slot.into_values().flatten().cloned());
    plan
}

/// The RunInstances ClientToken for filling `slot`: one token per *launch intent*.
///
/// EC2 answers a repeated token with the instance of the first request (for at least 24
/// hours, even after that instance terminated), and with `IdempotentParameterMismatch` when
/// the parameters differ (EC2 API reference, "Ensuring idempotency"). So a token must be
/// stable across retries of one launch (a lost answer, a crashed task) and new for every
/// other launch of the slot (a relaunch after its instance was lost, a later generation,
/// different parameters). The token of a launch is minted when the slot is reserved and
/// kept in the slot's record; a record still reserving (`Launching`, no instance yet)
/// means the same launch is being retried, and its token is reused. Anything else (no
/// record, a record of an instance, one without a token) starts a new launch.
pub fn launch_token(cluster_id: &str, slot: Slot, recorded: Option<&Node>) -> String {
    match recorded {
        Some(Node {
            state: NodeState::Launching,
            instance_id: None,
            launch_token: Some(token),
            ..
        }) if token.starts_with(&token_prefix(cluster_id, slot)) => token.clone(),
        _ => fresh_launch_token(cluster_id, slot),
    }
}

/// A token no earlier launch has used: `<cluster>-<slot>-<16 random hex digits>` (at most
/// 64 ASCII characters, as EC2 requires).
pub fn fresh_launch_token(cluster_id: &str, slot: Slot) -> String {
    format!(
        "{}{:016x}",
        token_prefix(cluster_id, slot),
        fastrand::u64(..)
    )
}

fn token_prefix(cluster_id: &str, slot: Slot) -> String {
    format!("{cluster_id}-{slot}-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::TierSpec;

    fn spec(web: u32, db: u32) -> ClusterSpec {
        ClusterSpec {
            name: "shop".into(),
            web: TierSpec {
                count: web,
                instance_type: "t3.small".into(),
            },
            db: TierSpec {
                count: db,
                instance_type: "r6i.large".into(),
            },
            subnets: vec![],
            scaling: None,
            backup: Default::default(),
            restore: None,
        }
    }

    fn subnets() -> Vec<Subnet> {
        ["a", "b", "c"]
            .iter()
            .map(|az| Subnet {
                id: format!("subnet-0000000{az}"),
                availability_zone: format!("us-east-1{az}"),
            })
            .collect()
    }

    fn instance(id: &str, slot: &str, state: InstanceState, at: &str) -> ObservedInstance {
        ObservedInstance {
            instance_id: id.into(),
            slot: Slot::parse(slot),
            state,
            subnet_id: None,
            availability_zone: None,
            private_dns_name: None,
            launched_at: at.into(),
        }
    }

    #[test]
    fn a_new_cluster_launches_every_slot_spread_over_zones() {
        let plan = plan_launches(&spec(2, 3), &subnets(), &[]);
        assert_eq!(plan.launch.len(), 5);
        assert!(plan.keep.is_empty() && plan.surplus.is_empty());
        let db_zones: std::collections::BTreeSet<_> = plan
            .launch
            .iter()
            .filter(|(slot, _)| slot.tier == Tier::Db)
            .map(|(_, subnet)| subnet.availability_zone.clone())
            .collect();
        assert_eq!(db_zones.len(), 3, "three database nodes in three zones");
        let web_zones: std::collections::BTreeSet<_> = plan
            .launch
            .iter()
            .filter(|(slot, _)| slot.tier == Tier::Web)
            .map(|(_, subnet)| subnet.availability_zone.clone())
            .collect();
        assert_eq!(web_zones.len(), 2);
    }

    #[test]
    fn a_second_run_launches_nothing() {
        let first = plan_launches(&spec(2, 3), &subnets(), &[]);
        let observed: Vec<_> = first
            .launch
            .iter()
            .enumerate()
            .map(|(i, (slot, _))| {
                instance(
                    &format!("i-{i}"),
                    &slot.name(),
                    InstanceState::Running,
                    "2026-01-01T00:00:00Z",
                )
            })
            .collect();
        let second = plan_launches(&spec(2, 3), &subnets(), &observed);
        assert!(second.launch.is_empty());
        assert_eq!(second.keep.len(), 5);
        assert!(second.surplus.is_empty());
    }

    #[test]
    fn a_crash_after_some_launches_launches_only_the_rest() {
        let observed = [
            instance(
                "i-1",
                "web-0",
                InstanceState::Pending,
                "2026-01-01T00:00:00Z",
            ),
            instance(
                "i-2",
                "db-1",
                InstanceState::Running,
                "2026-01-01T00:00:00Z",
            ),
        ];
        let plan = plan_launches(&spec(2, 3), &subnets(), &observed);
        let launched: Vec<String> = plan.launch.iter().map(|(s, _)| s.name()).collect();
        assert_eq!(launched, ["web-1", "db-0", "db-2"]);
    }

    #[test]
    fn a_duplicate_in_one_slot_keeps_the_oldest_and_reports_the_other() {
        let observed = [
            instance(
                "i-new",
                "web-0",
                InstanceState::Running,
                "2026-01-01T00:05:00Z",
            ),
            instance(
                "i-old",
                "web-0",
                InstanceState::Running,
                "2026-01-01T00:00:00Z",
            ),
        ];
        let plan = plan_launches(&spec(1, 1), &subnets(), &observed);
        assert_eq!(plan.keep[0].1.instance_id, "i-old");
        assert_eq!(plan.surplus.len(), 1);
        assert_eq!(plan.surplus[0].instance_id, "i-new");
    }

    #[test]
    fn terminated_instances_leave_their_slot_free_and_extra_slots_are_surplus() {
        let observed = [
            instance(
                "i-dead",
                "web-0",
                InstanceState::Terminated,
                "2026-01-01T00:00:00Z",
            ),
            instance(
                "i-extra",
                "web-3",
                InstanceState::Running,
                "2026-01-01T00:00:00Z",
            ),
            instance(
                "i-untagged",
                "",
                InstanceState::Running,
                "2026-01-01T00:00:00Z",
            ),
        ];
        let plan = plan_launches(&spec(1, 1), &subnets(), &observed);
        let launched: Vec<String> = plan.launch.iter().map(|(s, _)| s.name()).collect();
        assert_eq!(launched, ["web-0", "db-0"]);
        let surplus: Vec<&str> = plan
            .surplus
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect();
        assert_eq!(surplus, ["i-untagged", "i-extra"]);
    }

    fn reserved(token: Option<&str>, instance: Option<&str>, state: NodeState) -> Node {
        Node {
            slot: "db-1".into(),
            tier: Tier::Db,
            instance_id: instance.map(str::to_string),
            state,
            availability_zone: None,
            subnet_id: None,
            role: None,
            target_health: None,
            host: None,
            member_state: None,
            group_name: None,
            launch_token: token.map(str::to_string),
            updated_at: String::new(),
        }
    }

    const DB_1: Slot = Slot {
        tier: Tier::Db,
        index: 1,
    };

    #[test]
    fn a_retried_launch_reuses_its_reserved_token() {
        let token = fresh_launch_token("c-0123456789ab", DB_1);
        let record = reserved(Some(&token), None, NodeState::Launching);
        assert_eq!(
            launch_token("c-0123456789ab", DB_1, Some(&record)),
            token,
            "a crashed or lost launch must be retried with its own token"
        );
        assert!(token.len() <= 64 && token.is_ascii(), "{token}");
        assert!(token.starts_with("c-0123456789ab-db-1-"), "{token}");
    }

    #[test]
    fn every_new_launch_of_a_slot_gets_a_new_token() {
        let first = fresh_launch_token("c-0123456789ab", DB_1);
        // The slot's instance was launched (and since lost): a relaunch must not get the
        // old, terminated instance back from EC2.
        let launched = reserved(Some(&first), Some("i-0old"), NodeState::Terminated);
        let relaunch = launch_token("c-0123456789ab", DB_1, Some(&launched));
        assert_ne!(relaunch, first);
        // No record, or one written before tokens were kept: new tokens, never equal.
        let a = launch_token("c-0123456789ab", DB_1, None);
        let b = launch_token("c-0123456789ab", DB_1, None);
        assert_ne!(a, b);
        let legacy = reserved(None, None, NodeState::Launching);
        assert_ne!(launch_token("c-0123456789ab", DB_1, Some(&legacy)), a);
        // A token recorded for another slot or cluster is never borrowed.
        let other = reserved(
            Some(&fresh_launch_token("c-ffffffffffff", DB_1)),
            None,
            NodeState::Launching,
        );
        assert!(
            launch_token("c-0123456789ab", DB_1, Some(&other)).starts_with("c-0123456789ab-db-1-")
        );
    }
}
