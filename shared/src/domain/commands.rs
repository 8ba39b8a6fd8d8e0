//! The stack's SSM Command documents and the statuses their invocations report.

use serde::{Deserialize, Serialize};

/// The stack's Command documents; the name in SSM is `<stack>-<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Document {
    DbInstall,
    DbReport,
    DbCreateCluster,
    DbAddInstance,
    DbRemoveInstance,
    DbRebootCluster,
    WebRouter,
}

impl Document {
    pub const ALL: [Document; 7] = [
        Self::DbInstall,
        Self::DbReport,
        Self::DbCreateCluster,
        Self::DbAddInstance,
        Self::DbRemoveInstance,
        Self::DbRebootCluster,
        Self::WebRouter,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Self::DbInstall => "DbInstall",
            Self::DbReport => "DbReport",
            Self::DbCreateCluster => "DbCreateCluster",
            Self::DbAddInstance => "DbAddInstance",
            Self::DbRemoveInstance => "DbRemoveInstance",
            Self::DbRebootCluster => "DbRebootCluster",
            Self::WebRouter => "WebRouter",
        }
    }

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
    Pending,
    InProgress,
    Delayed,
    Success,
    Cancelled,
    Failed,
    TimedOut,
    Cancelling,
}

impl CommandStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Cancelled | Self::Failed | Self::TimedOut
        )
    }
}
