//! The names of a cluster's scaling alarms and which way each one scales: shared by the
//! alarm adapter that creates them and the scaling task that reacts to them.

use crate::domain::cluster::ClusterId;

/// Default time between two alarm-driven changes of one cluster.
pub const DEFAULT_COOLDOWN_SECONDS: i64 = 300;

/// The name prefix of every cluster alarm (`ha-` + a cluster id, which starts with `c-`):
/// what the EventBridge rule matches and what the recheck asks CloudWatch for.
pub const CLUSTER_ALARM_PREFIX: &str = "ha-c-";

/// Which way an alarm scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `web-high`: one more web instance.
    Out,
    /// `web-low`: one web instance less.
    In,
}

impl Direction {
    /// The change to the web count: +1 or -1.
    pub fn step(self) -> i32 {
        match self {
            Self::Out => 1,
            Self::In => -1,
        }
    }
}

/// `ha-c-0123456789ab-web-high` -> (`c-0123456789ab`, Out).
pub fn parse_alarm_name(name: &str) -> Option<(ClusterId, Direction)> {
    let rest = name.strip_prefix("ha-")?;
    let (cluster_id, direction) = if let Some(id) = rest.strip_suffix("-web-high") {
        (id, Direction::Out)
    } else if let Some(id) = rest.strip_suffix("-web-low") {
        (id, Direction::In)
    } else {
        return None;
    };
    Some((ClusterId::parse(cluster_id)?, direction))
}

/// The name of a cluster's alarm in `direction`.
pub fn alarm_name(cluster_id: &str, direction: Direction) -> String {
    match direction {
        Direction::Out => format!("ha-{cluster_id}-web-high"),
        Direction::In => format!("ha-{cluster_id}-web-low"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_names_carry_the_cluster_and_the_direction() {
        let id = "c-0123456789ab";
        for direction in [Direction::Out, Direction::In] {
            assert_eq!(
                parse_alarm_name(&alarm_name(id, direction)),
                Some((ClusterId::parse(id).unwrap(), direction))
            );
        }
        for foreign in [
            "ha-orchestrator-web-high-request-count",
            "ha-c-0123-web-high",
            "ha-c-0123456789zz-web-low",
            "ha-c-0123456789AB-web-high",
            "cpu-high",
        ] {
            assert_eq!(parse_alarm_name(foreign), None, "{foreign}");
        }
    }
}
