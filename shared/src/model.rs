//! Domain types shared by the API, the workflow tasks and the event handlers.

use serde::{Deserialize, Serialize};

/// Where a cluster is in its life. The workflow moves it forward; events move it to
/// `Healing`/`Scaling`; only a finished teardown reaches `Deleted` (kept as a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Pending,
    Provisioning,
    Ready,
    Healing,
    Scaling,
    Deleting,
    Deleted,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Provisioning => "PROVISIONING",
            Self::Ready => "READY",
            Self::Healing => "HEALING",
            Self::Scaling => "SCALING",
            Self::Deleting => "DELETING",
            Self::Deleted => "DELETED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_string())).ok()
    }
}

/// What `GET /clusters` lists: enough to pick a cluster, not its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    pub web_count: u32,
    pub db_count: u32,
    pub created_at: String,
}

/// One page of a listing and the opaque cursor for the next one, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_round_trips_through_its_wire_name() {
        for phase in [
            Phase::Pending,
            Phase::Provisioning,
            Phase::Ready,
            Phase::Healing,
            Phase::Scaling,
            Phase::Deleting,
            Phase::Deleted,
            Phase::Failed,
        ] {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                serde_json::Value::String(phase.as_str().into())
            );
        }
        assert_eq!(Phase::parse("ready"), None);
    }
}
