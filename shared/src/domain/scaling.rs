//! The names of a cluster's scaling alarms and which way each one scales: shared by the
//! alarm adapter that creates them and the scaling task that reacts to them.

/// Default time between two alarm-driven changes of one cluster.
pub const DEFAULT_COOLDOWN_SECONDS: i64 = 300;

/// The name prefix of every cluster alarm (`ha-` + a cluster id, which starts with `c-`):
/// what the EventBridge rule matches and what the recheck asks CloudWatch for.
pub const CLUSTER_ALARM_PREFIX: &str = "ha-c-";

/// Which way an alarm scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

impl Direction {
    pub fn step(self) -> i32 {
        match self {
            Self::Out => 1,
            Self::In => -1,
        }
    }
}

/// `ha-c-0123456789ab-web-high` -> (`c-0123456789ab`, Out).
pub fn parse_alarm_name(name: &str) -> Option<(String, Direction)> {
    let rest = name.strip_prefix("ha-")?;
    let (cluster_id, direction) = if let Some(id) = rest.strip_suffix("-web-high") {
        (id, Direction::Out)
    } else if let Some(id) = rest.strip_suffix("-web-low") {
        (id, Direction::In)
    } else {
        return None;
    };
    let valid = cluster_id.len() == 14
        && cluster_id.starts_with("c-")
        && cluster_id[2..].chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| (cluster_id.to_string(), direction))
}

/// The name of a cluster's alarm in `direction`.
pub fn alarm_name(cluster_id: &str, direction: Direction) -> String {
    match direction {
        Direction::Out => format!("ha-{cluster_id}-web-high"),
        Direction::In => format!("ha-{cluster_id}-web-low"),
    }
}
