//! Domain types shared by the API, the workflow tasks and the event handlers.

use serde::{Deserialize, Serialize};

/// Where a cluster is in its life. The workflow moves it forward; events move it to
/// `Healing`/`Scaling`; only a finished teardown reaches `Deleted` (kept as a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Accepted by the API; its first run has not begun.
    Pending,
    /// Its create run is launching and bootstrapping it.
    Provisioning,
    /// Its last run converged it; alarms scale only a READY cluster.
    Ready,
    /// A heal or sweep run is replacing nodes or rejoining members.
    Healing,
    /// A scale run is changing its web tier.
    Scaling,
    /// A delete run is tearing it down; it takes no more changes.
    Deleting,
    /// Torn down; the record stays as a tombstone.
    Deleted,
    /// A run failed; `lastError` says why.
    Failed,
}

impl Phase {
    /// The name as stored and shown (`READY`).
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

    /// The phase a stored name means, if any.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_string())).ok()
    }
}

/// What `GET /clusters` lists: enough to pick a cluster, not its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// The cluster's id (`c-` and 12 hex digits).
    pub id: String,
    /// Its name from the spec.
    pub name: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// Web instances its spec asks for.
    pub web_count: u32,
    /// Database nodes its spec asks for.
    pub db_count: u32,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// EC2's instance state, as events and DescribeInstances report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Starting up.
    Pending,
    /// Up: it fills its slot.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped: it serves nothing, and the node is lost.
    Stopped,
    /// Being terminated.
    ShuttingDown,
    /// Gone for good.
    Terminated,
}

impl InstanceState {
    /// EC2's name for the state (`shutting-down`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    /// The state EC2 names (`shutting-down`), if any.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_string())).ok()
    }

    /// Serving or about to: the instance fills its slot.
    pub fn is_alive(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// No longer serving: the node has to be replaced.
    pub fn is_lost(self) -> bool {
        !self.is_alive()
    }

    /// Terminated: the instance can never come back.
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Terminated)
    }
}

/// The two tiers of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The application instances behind the load balancer.
    Web,
    /// The MySQL InnoDB Cluster nodes.
    Db,
}

impl Tier {
    /// The name in slot names and tags (`web`, `db`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Db => "db",
        }
    }

    /// The tier a name means, if any.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "web" => Some(Self::Web),
            "db" => Some(Self::Db),
            _ => None,
        }
    }
}

/// A position in a tier (`web-0`, `db-2`). Instances are launched into slots, so a retried
/// launch finds the instance its slot already has instead of launching another.
/// In JSON (the Step Functions payloads of the replication tasks) a slot is its name, `db-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slot {
    /// Which tier.
    pub tier: Tier,
    /// Its position in the tier, from 0.
    pub index: u32,
}

impl Slot {
    /// `web-0`: how tags and records name the slot.
    pub fn name(self) -> String {
        format!("{}-{}", self.tier.as_str(), self.index)
    }

    /// The slot a name (`db-2`) means, if any.
    pub fn parse(value: &str) -> Option<Self> {
        let (tier, index) = value.rsplit_once('-')?;
        Some(Self {
            tier: Tier::parse(tier)?,
            index: index.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.tier.as_str(), self.index)
    }
}

impl TryFrom<String> for Slot {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("{value:?} is no slot name (web-N or db-N)"))
    }
}

impl From<Slot> for String {
    fn from(slot: Slot) -> Self {
        slot.name()
    }
}

/// What the orchestrator last recorded about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    /// Slot reserved, RunInstances not yet confirmed.
    Launching,
    /// EC2 reports its instance pending.
    Pending,
    /// EC2 reports its instance running.
    Running,
    /// Web node registered with the target group, not yet healthy.
    Registered,
    /// The target group reports the web node healthy.
    Healthy,
    /// The target group reports the web node unhealthy.
    Unhealthy,
    /// Its instance is stopping or shutting down, or a teardown is removing it.
    Terminating,
    /// Its instance is stopped or terminated: it no longer fills the slot.
    Terminated,
}

/// One instance of a cluster, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The slot it fills (`web-0`).
    pub slot: String,
    /// Its tier.
    pub tier: Tier,
    /// Its instance; `None` until a launch is confirmed.
    pub instance_id: Option<String>,
    /// What was last recorded about it.
    pub state: NodeState,
    /// Its zone, once known.
    pub availability_zone: Option<String>,
    /// Its subnet, once known.
    pub subnet_id: Option<String>,
    /// `PRIMARY` / `SECONDARY` for database nodes once the group reports it.
    pub role: Option<String>,
    /// The target group's view of a web node (`healthy`, `initial`, ...).
    pub target_health: Option<String>,
    /// The private DNS name: a database node's `report_host`, the name its group knows it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Group Replication member state (`ONLINE`, `RECOVERING`, `OFFLINE`, ...) as last
    /// reported by the node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_state: Option<String>,
    /// The Group Replication group (a UUID) the node last reported belonging to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The RunInstances ClientToken of the launch this record reserves (see
    /// `plan::launch_token`): kept so a retry of that same launch sends the same token and
    /// gets the same instance, and replaced by a fresh one for every new launch of the slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_token: Option<String>,
    /// When the record last changed (RFC 3339).
    pub updated_at: String,
}

/// One line of a cluster's audit log: every mutating action, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// When (RFC 3339).
    pub at: String,
    /// What was done, as a short name.
    pub action: String,
    /// Why, and to what.
    pub detail: String,
    /// The cluster's generation then: which run did it.
    pub generation: u64,
}

/// The last failure of a cluster, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// The phase it failed in.
    pub phase: String,
    /// What went wrong.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A cluster with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// The cluster's id (`c-` and 12 hex digits).
    pub id: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// The workflow step running or last run (`launch`, `wait-running`, ...).
    pub step: Option<String>,
    /// What was asked for.
    pub spec: crate::domain::spec::ClusterSpec,
    /// Bumped by every request that needs a run; fences older runs.
    pub generation: u64,
    /// Bumped by every write; conditional writes on it keep one writer at a time.
    pub version: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When the record last changed (RFC 3339).
    pub updated_at: String,
    /// Why the last failed run failed, if one did.
    pub last_error: Option<LastError>,
    /// Its web target group, once a run has created it.
    pub target_group_arn: Option<String>,
    /// Instances an operator (or the sweep) asked to replace; the running heal run launches
    /// their successors and retires them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replacing: Vec<String>,
    /// Every node recorded.
    pub nodes: Vec<Node>,
    /// The most recent actions (the store keeps the full log).
    #[serde(rename = "recentActions")]
    pub actions: Vec<Action>,
}

/// The time now as RFC 3339 with milliseconds (UTC), the only timestamp format we store.
pub fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// A cluster's id: `c-` and 12 lowercase hex digits, as the API makes them. The one place
/// that says what an id looks like: the API checks a path's id with it and the scaling task
/// an alarm name's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// The id made of the low 48 bits of `bits`.
    pub fn from_bits(bits: u64) -> Self {
        Self(format!("c-{:012x}", bits & 0xffff_ffff_ffff))
    }

    /// `text` as an id, if it is one (uppercase hex is not: no id is made with it).
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("c-")?;
        let valid = hex.len() == 12
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        valid.then(|| Self(text.to_string()))
    }

    /// The id as the store and AWS resource names spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> Self {
        id.0
    }
}

/// Seconds since the Unix epoch: what TTL attributes and the health watches store.
pub fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// One page of a listing and the opaque cursor for the next one, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_c_and_twelve_lowercase_hex_digits() {
        let id = ClusterId::from_bits(0xffff_0123_4567_89ab);
        assert_eq!(id.as_str(), "c-0123456789ab");
        assert_eq!(ClusterId::parse("c-0123456789ab"), Some(id));
        for bad in [
            "c-XYZ",
            "c-0123456789abc",
            "0123456789ab",
            "c-0123456789AB",
            "c-",
        ] {
            assert_eq!(ClusterId::parse(bad), None, "{bad}");
        }
    }

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

    #[test]
    fn instance_states_parse_from_ec2_names() {
        assert_eq!(
            InstanceState::parse("shutting-down"),
            Some(InstanceState::ShuttingDown)
        );
        assert_eq!(
            InstanceState::parse("running"),
            Some(InstanceState::Running)
        );
        assert_eq!(InstanceState::parse("exploded"), None);
        for state in [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
        ] {
            assert_eq!(InstanceState::parse(state.as_str()), Some(state));
        }
        assert!(InstanceState::Stopped.is_lost() && !InstanceState::Pending.is_lost());
    }

    #[test]
    fn slots_round_trip_through_their_names() {
        let slot = Slot {
            tier: Tier::Db,
            index: 2,
        };
        assert_eq!(slot.name(), "db-2");
        assert_eq!(Slot::parse("db-2"), Some(slot));
        assert_eq!(Slot::parse("web-10").map(|s| s.index), Some(10));
        for bad in ["db", "cache-1", "web-x", "web--1"] {
            assert_eq!(Slot::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn slots_travel_as_their_names_in_json() {
        let slot = Slot {
            tier: Tier::Web,
            index: 10,
        };
        let json = serde_json::to_value(slot).unwrap();
        assert_eq!(json, serde_json::json!("web-10"));
        assert_eq!(serde_json::from_value::<Slot>(json).unwrap(), slot);
        for bad in ["", "cache-1", "web-x"] {
            let error = serde_json::from_value::<Slot>(serde_json::json!(bad)).unwrap_err();
            assert!(
                error.to_string().contains("is no slot name"),
                "{bad}: {error}"
            );
        }
        assert!(serde_json::from_value::<Slot>(serde_json::json!(3)).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.contains('T'), "{now}");
    }
}
