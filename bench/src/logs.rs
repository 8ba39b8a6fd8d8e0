//! What the functions did, read from their logs: one `aws call` line per AWS request (the
//! metering target, see `orchestrator::aws::metering`) and the runner's `REPORT` line per
//! invocation (handler time, as Lambda reports it).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use local_cloud::{LocalCloud, Stack};
use serde::Serialize;

/// One AWS request a function sent.
#[derive(Debug, Clone, Serialize)]
pub struct AwsCall {
    /// The function's logical id in the template (`ProvisionFunction`).
    pub function: String,
    pub service: String,
    pub operation: String,
    /// When it was sent (Unix milliseconds).
    pub at_ms: u64,
    pub elapsed_ms: f64,
    pub status: String,
    /// DynamoDB items read or written (transactions and batches count each entry).
    pub items: u64,
}

impl AwsCall {
    pub fn key(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }

    /// Reads change nothing: Describe/Get/List, DynamoDB Query/Scan/batch and transact gets,
    /// S3 GET/HEAD, CloudWatch GetMetricData.
    pub fn is_read(&self) -> bool {
        [
            "Describe",
            "Get",
            "List",
            "Query",
            "Scan",
            "BatchGet",
            "TransactGet",
            "GET",
            "HEAD",
        ]
        .iter()
        .any(|prefix| self.operation.starts_with(prefix))
    }
}

/// `service:Operation` -> how many of `calls`.
pub fn count_by_operation<'a>(
    calls: impl IntoIterator<Item = &'a AwsCall>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(call.key()).or_insert(0) += 1;
    }
    counts
}

/// One invocation as the runner saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub function: String,
    pub duration_ms: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Activity {
    pub calls: Vec<AwsCall>,
    pub invocations: Vec<Invocation>,
}

/// Where each function log ended at some moment; [`LogCursor::activity_since`] reads what
/// was written after it.
#[derive(Debug, Default)]
pub struct LogCursor {
    offsets: HashMap<PathBuf, u64>,
}

impl LogCursor {
    pub fn now(cloud: &LocalCloud) -> Self {
        let offsets = cloud
            .function_log_files()
            .into_iter()
            .map(|(_, path)| {
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                (path, len)
            })
            .collect();
        Self { offsets }
    }

    /// Everything the functions logged since this cursor (and in logs created since).
    pub fn activity_since(&self, cloud: &LocalCloud, stack: &Stack) -> Activity {
        let logical: HashMap<&str, &str> = stack
            .resources
            .iter()
            .map(|r| (r.physical_id.as_str(), r.logical_id.as_str()))
            .collect();
        let mut activity = Activity::default();
        for (name, path) in cloud.function_log_files() {
            let function = logical
                .get(name.as_str())
                .copied()
                .unwrap_or(&name)
                .to_string();
            let from = self.offsets.get(&path).copied().unwrap_or(0);
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let mut text = String::new();
            if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_string(&mut text).is_err()
            {
                continue;
            }
            for line in text.lines() {
                parse_line(&function, line, &mut activity);
            }
        }
        activity.calls.sort_by_key(|c| c.at_ms);
        activity
    }
}

pub fn parse_line(function: &str, line: &str, activity: &mut Activity) {
    if let Some(rest) = line.strip_prefix("lambda-runner: REPORT RequestId: ") {
        let duration = rest
            .split("Duration: ")
            .nth(1)
            .and_then(|d| d.trim_end_matches(" ms").trim().parse::<f64>().ok());
        if let Some(duration_ms) = duration {
            activity.invocations.push(Invocation {
                function: function.to_string(),
                duration_ms,
            });
        }
        return;
    }
    if !line.contains("\"aws call\"") {
        return;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    let fields = &value["fields"];
    if fields["message"] != "aws call" {
        return;
    }
    let text = |name: &str| fields[name].as_str().unwrap_or_default().to_string();
    activity.calls.push(AwsCall {
        function: function.to_string(),
        service: text("service"),
        operation: text("operation"),
        at_ms: fields["at_ms"].as_u64().unwrap_or_default(),
        elapsed_ms: fields["elapsed_ms"].as_f64().unwrap_or_default(),
        status: text("status"),
        items: fields["items"].as_u64().unwrap_or_default(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metering_and_report_lines_and_ignores_the_rest() {
        let mut activity = Activity::default();
        for line in [
            r#"{"level":"DEBUG","fields":{"message":"aws call","service":"ec2","operation":"RunInstances","at_ms":1700000000123,"elapsed_ms":4.5,"status":"200","items":0},"target":"orchestrator::metering"}"#,
            "lambda-runner: REPORT RequestId: 0001 Duration: 12.25 ms",
            r#"{"level":"INFO","fields":{"message":"launched"}}"#,
            "lambda-runner: bootstrap exited with exit status: 0",
        ] {
            parse_line("ProvisionFunction", line, &mut activity);
        }
        assert_eq!(activity.calls.len(), 1);
        let call = &activity.calls[0];
        assert_eq!(call.key(), "ec2:RunInstances");
        assert_eq!(call.at_ms, 1_700_000_000_123);
        assert!(!call.is_read());
        assert_eq!(activity.invocations.len(), 1);
        assert_eq!(activity.invocations[0].duration_ms, 12.25);
    }
}
