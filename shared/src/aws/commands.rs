//! SSM Run Command adapter: sends the stack's Command documents (rendered into
//! `template.yaml` from `scripts/`) to cluster instances and reads what they did.
//!
//! Output is read from the stack's command-output bucket first, where the SSM agent writes
//! it in full (`<prefix>/<command>/<instance>/awsrunShellScript/run/{stdout,stderr}`), and
//! from `GetCommandInvocation` (which truncates at 24,000 characters) when the object is
//! missing. Only names and host names go into command parameters, never a secret: the
//! scripts read the cluster admin password on the instance with the instance role.

use crate::config::required_from;
use crate::domain::commands::CommandStatus;
use crate::domain::commands::Document;
use crate::error::{Error, Result, from_sdk, sdk_error_code};

/// The step name every generated document gives its one `aws:runShellScript` step.
pub const STEP_NAME: &str = "run";
/// How much of a command's stderr a failure message carries.
pub const STDERR_EXCERPT_CHARS: usize = 600;

/// What the stack tells the adapter: how its documents are named, where output goes.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// Documents are named `<prefix>-<suffix>`: the stack name.
    pub document_prefix: String,
    /// Where the SSM agent writes command output.
    pub output_bucket: String,
}

impl CommandSettings {
    const DOCUMENT_PREFIX: &'static str = "DOCUMENT_PREFIX";
    const OUTPUT_BUCKET: &'static str = "COMMAND_OUTPUT_BUCKET";

    /// From `DOCUMENT_PREFIX` and `COMMAND_OUTPUT_BUCKET`.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Ok(Self {
            document_prefix: required_from(Self::DOCUMENT_PREFIX, &lookup)?,
            output_bucket: required_from(Self::OUTPUT_BUCKET, &lookup)?,
        })
    }

    fn document_name(&self, document: Document) -> String {
        format!("{}-{}", self.document_prefix, document.suffix())
    }
}

/// One instance's part of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The instance this part ran on.
    pub instance_id: String,
    /// SSM's status of this part; terminal once the script ended or SSM gave up.
    pub status: CommandStatus,
    /// The script's exit code (-1 until it ends).
    pub response_code: i32,
    /// SSM's finer status (`DeliveryTimedOut`, `Undeliverable`, ...), for messages.
    pub status_details: String,
}

/// What a command printed on one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output: in full from the bucket, else as SSM returned it (truncated).
    pub stdout: String,
    /// Standard error, likewise; failure messages quote its tail.
    pub stderr: String,
}

/// The key prefix a cluster's command output goes under.
pub fn output_prefix(cluster_id: &str) -> String {
    format!("commands/{cluster_id}")
}

/// Where the SSM agent writes one stream of one invocation of a `schemaVersion: 2.2`
/// document: `<prefix>/<command>/<instance>/awsrunShellScript/<step>/<stream>`.
pub fn output_key(prefix: &str, command_id: &str, instance_id: &str, stream: &str) -> String {
    format!("{prefix}/{command_id}/{instance_id}/awsrunShellScript/{STEP_NAME}/{stream}")
}

/// The last `chars` characters of `text`, on a line boundary when one is near.
pub fn tail(text: &str, chars: usize) -> String {
    let count = text.chars().count();
    if count <= chars {
        return text.trim().to_string();
    }
    let cut: String = text.chars().skip(count - chars).collect();
    match cut.find('\n') {
        Some(i) if i < chars / 2 => cut[i + 1..].trim().to_string(),
        _ => format!("...{}", cut.trim()),
    }
}

/// Sends the stack's documents to cluster instances and reads what they did.
#[derive(Debug, Clone)]
pub struct Commands {
    ssm: aws_sdk_ssm::Client,
    output: CommandOutput,
    settings: CommandSettings,
}

impl Commands {
    /// The adapter; output is read from `settings.output_bucket`.
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        s3: aws_sdk_s3::Client,
        settings: CommandSettings,
    ) -> Self {
        Self {
            ssm,
            output: CommandOutput::new(s3, settings.output_bucket.clone()),
            settings,
        }
    }

    /// Send `document` to `instance_ids`; returns the command id.
    pub async fn send(
        &self,
        cluster_id: &str,
        document: Document,
        instance_ids: &[String],
        parameters: &[(&str, &str)],
    ) -> Result<String> {
        let mut request = self
            .ssm
            .send_command()
            .document_name(self.settings.document_name(document))
            .set_instance_ids(Some(instance_ids.to_vec()))
            .comment(format!(
                "ha-orchestrator {cluster_id} {}",
                document.suffix()
            ))
            .output_s3_bucket_name(&self.settings.output_bucket)
            .output_s3_key_prefix(output_prefix(cluster_id))
            // How long SSM keeps trying to deliver to an instance whose agent is not up yet.
            .timeout_seconds(600);
        for (name, value) in parameters {
            request = request.parameters(*name, vec![(*value).to_string()]);
        }
        let output = request
            .send()
            .await
            .map_err(|e| from_sdk("ssm", "SendCommand", e))?;
        output
            .command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| Error::Aws {
                service: "ssm",
                operation: "SendCommand",
                code: "MissingCommandId".into(),
                message: "the answer carries no command id".into(),
                retryable: true,
            })
    }

    /// Every instance's status for a command.
    pub async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>> {
        let mut invocations = Vec::new();
        let mut pages = self
            .ssm
            .list_command_invocations()
            .command_id(command_id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("ssm", "ListCommandInvocations", e))?;
            for invocation in page.command_invocations() {
                let status = invocation
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "Pending".into());
                invocations.push(Invocation {
                    instance_id: invocation.instance_id().unwrap_or_default().to_string(),
                    status: serde_json::from_value(serde_json::Value::String(status))
                        .unwrap_or(CommandStatus::Pending),
                    response_code: -1,
                    status_details: invocation.status_details().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(invocations)
    }

    /// One instance's part of a command, from `GetCommandInvocation` (the one SSM read the
    /// backups function is granted); `None` while SSM has no invocation for it yet
    /// (`InvocationDoesNotExist`: the API reference says it may take a moment after
    /// `SendCommand`, or the command never targeted that instance).
    pub async fn invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<Option<Invocation>> {
        let detail = match self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(detail) => detail,
            Err(e) if sdk_error_code(&e) == Some("InvocationDoesNotExist") => return Ok(None),
            Err(e) => return Err(from_sdk("ssm", "GetCommandInvocation", e)),
        };
        let status = detail
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "Pending".into());
        Ok(Some(Invocation {
            instance_id: instance_id.to_string(),
            status: serde_json::from_value(serde_json::Value::String(status))
                .unwrap_or(CommandStatus::Pending),
            response_code: detail.response_code(),
            status_details: detail.status_details().unwrap_or_default().to_string(),
        }))
    }

    /// What one invocation printed, and its exit code: the bucket first, the API second.
    pub async fn output(
        &self,
        cluster_id: &str,
        command_id: &str,
        instance_id: &str,
    ) -> Result<(Output, i32)> {
        // One step per document, so the step (plugin) name may be left out.
        let detail = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| from_sdk("ssm", "GetCommandInvocation", e))?;
        let prefix = output_prefix(cluster_id);
        let stdout = self
            .output
            .read(&output_key(&prefix, command_id, instance_id, "stdout"))
            .await?
            .unwrap_or_else(|| detail.standard_output_content().unwrap_or_default().into());
        let stderr = self
            .output
            .read(&output_key(&prefix, command_id, instance_id, "stderr"))
            .await?
            .unwrap_or_else(|| detail.standard_error_content().unwrap_or_default().into());
        Ok((Output { stdout, stderr }, detail.response_code()))
    }
}

/// The command-output bucket: read one stream, or delete a cluster's prefix at purge.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl CommandOutput {
    pub(crate) fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
        }
    }

    /// The bucket named by `COMMAND_OUTPUT_BUCKET`.
    pub(crate) fn from_env(s3: aws_sdk_s3::Client) -> Result<Self> {
        Ok(Self::new(
            s3,
            crate::config::required(CommandSettings::OUTPUT_BUCKET)?,
        ))
    }

    /// One object as text; `None` when the agent wrote none (an empty stream).
    pub(crate) async fn read(&self, key: &str) -> Result<Option<String>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => {
                let bytes = object.body.collect().await.map_err(|e| Error::Aws {
                    service: "s3",
                    operation: "GetObject",
                    code: "BodyRead".into(),
                    message: e.to_string(),
                    retryable: true,
                })?;
                Ok(Some(
                    String::from_utf8_lossy(&bytes.into_bytes()).into_owned(),
                ))
            }
            // The agent uploads a stream only when it is not empty (amazon-ssm-agent,
            // agent/framework/processor/executer/iohandler: empty files are skipped), so an
            // absent key is the normal answer for an empty stderr.
            Err(e) if matches!(sdk_error_code(&e), Some("NoSuchKey" | "NotFound")) => Ok(None),
            // Without s3:ListBucket on the bucket, S3 answers a missing key with 403 instead
            // of 404 (S3 API reference, GetObject, "Permissions"): say what to grant.
            Err(e) if sdk_error_code(&e) == Some("AccessDenied") => Err(Error::Aws {
                service: "s3",
                operation: "GetObject",
                code: "AccessDenied".into(),
                message: format!(
                    "reading s3://{}/{key} was denied; the function's role needs s3:GetObject on \
                     the commands/ keys and s3:ListBucket on the bucket for that prefix (without \
                     ListBucket, S3 answers 403 for the absent stream of an empty output)",
                    self.bucket
                ),
                retryable: false,
            }),
            Err(e) => Err(from_sdk("s3", "GetObject", e)),
        }
    }

    /// Delete every object of a cluster's command output; returns how many.
    pub async fn delete_cluster_output(&self, cluster_id: &str) -> Result<usize> {
        let prefix = format!("{}/", output_prefix(cluster_id));
        let mut deleted = 0;
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("s3", "ListObjectsV2", e))?;
            // One DeleteObject per key: DeleteObjects needs a Content-MD5 that not every
            // S3 implementation accepts, and a cluster has a few dozen objects at most.
            for key in page.contents().iter().filter_map(|o| o.key()) {
                self.s3
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| from_sdk("s3", "DeleteObject", e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mocked_client;
    use aws_smithy_mocks::{RuleMode, mock};

    fn s3_error(code: &'static str) -> aws_sdk_s3::operation::get_object::GetObjectError {
        aws_sdk_s3::operation::get_object::GetObjectError::generic(
            aws_smithy_types::error::ErrorMetadata::builder()
                .code(code)
                .build(),
        )
    }

    #[tokio::test]
    async fn an_absent_stream_is_empty_and_a_denied_read_says_what_to_grant() {
        let stdout = mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/stdout")))
            .then_output(|| {
                aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(
                        b"{\"ok\":1}\n",
                    ))
                    .build()
            });
        let stderr = mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/stderr")))
            .then_error(|| s3_error("NoSuchKey"));
        let invocation = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
            aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
                .response_code(0)
                .standard_output_content("{\"ok\":1}\n")
                .standard_error_content("")
                .build()
        });
        let commands = Commands::new(
            mocked_client!(aws_sdk_ssm, [&invocation]),
            mocked_client!(aws_sdk_s3, RuleMode::MatchAny, [&stdout, &stderr]),
            CommandSettings {
                document_prefix: "stack".into(),
                output_bucket: "bucket".into(),
            },
        );
        let (output, code) = commands.output("c-1", "cmd-1", "i-1").await.unwrap();
        assert_eq!(code, 0);
        assert_eq!(output.stdout, "{\"ok\":1}\n");
        assert_eq!(output.stderr, "");

        let denied = mock!(aws_sdk_s3::Client::get_object).then_error(|| s3_error("AccessDenied"));
        let reader = CommandOutput::new(mocked_client!(aws_sdk_s3, [&denied]), "bucket");
        let error = reader.read("commands/c-1/x/stderr").await.unwrap_err();
        assert!(!error.is_retryable(), "{error}");
        assert!(error.to_string().contains("s3:ListBucket"), "{error}");
    }

    #[test]
    fn documents_round_trip_through_their_ssm_names() {
        let settings = CommandSettings {
            document_prefix: "ha-demo".into(),
            output_bucket: "b".into(),
        };
        for document in Document::ALL {
            let name = settings.document_name(document);
            assert_eq!(Document::from_name(&name), Some(document), "{name}");
        }
        assert_eq!(Document::from_name("AWS-RunShellScript"), None);
    }

    #[test]
    fn output_keys_follow_the_agent_layout() {
        assert_eq!(
            output_key(&output_prefix("c-1"), "cmd", "i-1", "stdout"),
            "commands/c-1/cmd/i-1/awsrunShellScript/run/stdout"
        );
    }

    #[test]
    fn tails_keep_the_end_on_a_line_boundary() {
        assert_eq!(tail("short\n", 100), "short");
        let long = format!("{}\nlast line of the error", "x".repeat(50));
        assert_eq!(tail(&long, 30), "last line of the error");
        let one_line = "y".repeat(40);
        assert_eq!(tail(&one_line, 10), format!("...{}", "y".repeat(10)));
    }

    #[test]
    fn settings_name_the_missing_variable() {
        let err = CommandSettings::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains("DOCUMENT_PREFIX"), "{err}");
    }
}
