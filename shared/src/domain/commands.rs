//! The stack's SSM Command documents and the statuses their invocations report.

use serde::{Deserialize, Serialize};

/// The stack's Command documents; the name in SSM is `<stack>-<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Document {
    /// Installs and configures MySQL and MySQL Shell on a database node.
    DbInstall,
    /// Prints the node's view of its group (a [`crate::domain::report::NodeReport`]).
    DbReport,
    /// Creates the InnoDB Cluster on its first node.
    DbCreateCluster,
    /// Adds a node to the cluster.
    DbAddInstance,
    /// Removes a (lost) node from the cluster, run on a remaining member.
    DbRemoveInstance,
    /// Reboots the cluster after a complete outage, on the node the orchestrator picked.
    DbRebootCluster,
    /// Installs MySQL Router on a web node and bootstraps it against the cluster.
    WebRouter,
    /// Copies a database node's data (CLONE LOCAL) to the backup bucket with its manifest
    /// (`db-backup.sh`; exit 3 when the node is the PRIMARY or not ONLINE).
    DbBackup,
    /// Ships the PRIMARY's closed binary logs to the backup bucket (`db-binlog-archive.sh`;
    /// a no-op elsewhere).
    DbBinlogArchive,
    /// Restores a backup (and archived binlogs up to a time) onto a new cluster's seed
    /// before the cluster is created (`db-restore.sh`).
    DbRestore,
}

impl Document {
    /// Every document the stack defines.
    pub const ALL: [Document; 10] = [
        Self::DbInstall,
        Self::DbReport,
        Self::DbCreateCluster,
        Self::DbAddInstance,
        Self::DbRemoveInstance,
        Self::DbRebootCluster,
        Self::WebRouter,
        Self::DbBackup,
        Self::DbBinlogArchive,
        Self::DbRestore,
    ];

    /// The part of the SSM name after the stack's prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::DbInstall => "DbInstall",
            Self::DbReport => "DbReport",
            Self::DbCreateCluster => "DbCreateCluster",
            Self::DbAddInstance => "DbAddInstance",
            Self::DbRemoveInstance => "DbRemoveInstance",
            Self::DbRebootCluster => "DbRebootCluster",
            Self::WebRouter => "WebRouter",
            Self::DbBackup => "DbBackup",
            Self::DbBinlogArchive => "DbBinlogArchive",
            Self::DbRestore => "DbRestore",
        }
    }

    /// The document an SSM document name (`<stack>-<suffix>`) refers to, if one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| name.ends_with(&format!("-{}", d.suffix())))
    }
}

/// The status of a command invocation, as SSM reports it (in `GetCommandInvocation` and in
/// the "EC2 Command Invocation Status-change Notification" event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Not yet run on the instance.
    Pending,
    /// Running on the instance.
    InProgress,
    /// SSM could not deliver it yet and tries again.
    Delayed,
    /// The script succeeded.
    Success,
    /// Cancelled before it finished.
    Cancelled,
    /// The command did not succeed on the instance.
    Failed,
    /// SSM gave up waiting for it.
    TimedOut,
    /// Being cancelled.
    Cancelling,
}

impl CommandStatus {
    /// No further status will come: the outcome can be judged.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Cancelled | Self::Failed | Self::TimedOut
        )
    }
}
