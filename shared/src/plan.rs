//! Planning: from the desired spec and what EC2 reports, decide what to launch and what is
//! surplus. Pure functions, so every rule of idempotency is unit-tested without AWS.
//!
//! Instances carry their cluster and slot as tags from the moment they launch (tags are
//! part of RunInstances), so a task that crashed after launching finds its instance on the
//! next run instead of launching a second one: the slot, not the ClientToken, is the
//! idempotency key the local cloud honours too.

use std::collections::BTreeMap;

use crate::model::{InstanceState, Slot, Tier};
use crate::spec::ClusterSpec;

/// A subnet and its availability zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub availability_zone: String,
}

/// One instance EC2 reports with the cluster's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    pub instance_id: String,
    pub slot: Option<Slot>,
    pub state: InstanceState,
    pub subnet_id: Option<String>,
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

/// The ClientToken of a slot's RunInstances: the same (cluster, generation, slot) always
/// sends the same token, so AWS returns the first launch instead of making a second.
pub fn client_token(cluster_id: &str, generation: u64, slot: Slot) -> String {
    format!("{cluster_id}-g{generation}-{slot}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TierSpec;

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

    #[test]
    fn client_tokens_are_stable_per_cluster_generation_and_slot() {
        let slot = Slot {
            tier: Tier::Db,
            index: 1,
        };
        assert_eq!(client_token("c-1", 3, slot), "c-1-g3-db-1");
        assert_eq!(client_token("c-1", 3, slot), client_token("c-1", 3, slot));
        assert_ne!(client_token("c-1", 4, slot), client_token("c-1", 3, slot));
    }
}
