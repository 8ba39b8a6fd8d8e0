//! The SSM Command documents of `template.yaml`, rendered from the scripts in
//! `scripts/ssm/`: the scripts are the source, the template carries them verbatim between
//! two marker lines. `local-cloud render-documents --write` regenerates that block, and a
//! test fails when it has drifted from the scripts.

use std::path::Path;

pub const BEGIN: &str = "  # BEGIN GENERATED SSM DOCUMENTS (local-cloud render-documents --write)";
pub const END: &str = "  # END GENERATED SSM DOCUMENTS";

/// A document parameter: SSM interpolates it into the command text, so each one has an
/// `allowedPattern` that admits no quote, space or shell metacharacter.
struct Parameter {
    name: &'static str,
    /// Passed as this environment variable instead of a positional argument.
    env: Option<&'static str>,
    description: &'static str,
    pattern: &'static str,
    /// SSM's `default`: the value when a command leaves the parameter out.
    default: Option<&'static str>,
}

struct Document {
    logical_id: &'static str,
    name: &'static str,
    script: &'static str,
    /// `aws:runShellScript`'s `timeoutSeconds`: the agent kills the script after it.
    timeout_seconds: &'static str,
    description: &'static str,
    /// Parameters passed to the script as positional arguments, in order.
    args: &'static [Parameter],
}

const ADMIN_SECRET: Parameter = Parameter {
    name: "adminSecretId",
    env: Some("ADMIN_SECRET_ID"),
    description: "Name of the Secrets Manager secret holding the cluster admin password (never the password)",
    pattern: "^[A-Za-z0-9/_+=.@-]{1,512}$",
    default: None,
};

const APP_SECRET: Parameter = Parameter {
    name: "appSecretId",
    env: Some("APP_SECRET_ID"),
    description: "Name of the Secrets Manager secret holding the application user's password (never the password)",
    pattern: "^[A-Za-z0-9/_+=.@-]{1,512}$",
    default: None,
};

const NODE: Parameter = Parameter {
    name: "node",
    env: None,
    description: "Host name of the node (its report_host)",
    pattern: "^[A-Za-z0-9.-]{1,253}$",
    default: None,
};

const CLUSTER_NAME: Parameter = Parameter {
    name: "clusterName",
    env: None,
    description: "InnoDB Cluster name",
    pattern: "^[a-z][a-z0-9-]{0,31}$",
    default: None,
};

/// Whether the reboot from complete outage may pass `--force` (db-reboot-cluster.sh).
const REBOOT_FORCE: Parameter = Parameter {
    name: "force",
    env: None,
    description: "true only once EC2 confirmed every unreachable member of the metadata terminated: lets the reboot proceed without them",
    pattern: "^(true|false)$",
    default: Some("false"),
};

/// The stack's backup bucket (BackupBucket): S3 bucket naming rules (S3 User Guide, "General
/// purpose bucket naming rules": 3-63 lowercase letters, digits, dots and hyphens).
const BACKUP_BUCKET: Parameter = Parameter {
    name: "bucket",
    env: None,
    description: "The stack's backup bucket",
    pattern: "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    default: None,
};

/// A cluster id (`c-` and 12 lowercase hex digits, `domain::cluster::ClusterId`).
const CLUSTER_ID: Parameter = Parameter {
    name: "clusterId",
    env: None,
    description: "The cluster's id (the S3 prefix of its backups)",
    pattern: "^c-[0-9a-f]{12}$",
    default: None,
};

/// A backup id (`domain::backup::BackupId`: UTC time and 8 hex digits).
const BACKUP_ID: Parameter = Parameter {
    name: "backupId",
    env: None,
    description: "The backup's id",
    pattern: "^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$",
    default: None,
};

const DOCUMENTS: &[Document] = &[
    Document {
        logical_id: "DbInstallDocument",
        name: "DbInstall",
        script: "db-install.sh",
        timeout_seconds: "1800",
        description: "Install and configure MySQL 9.7 LTS and MySQL Shell for InnoDB Cluster",
        args: &[],
    },
    Document {
        logical_id: "DbReportDocument",
        name: "DbReport",
        script: "db-report.sh",
        timeout_seconds: "1800",
        description: "Report this node's view of the group as one JSON line",
        args: &[],
    },
    Document {
        logical_id: "DbCreateClusterDocument",
        name: "DbCreateCluster",
        script: "db-create-cluster.sh",
        timeout_seconds: "1800",
        description: "Create the InnoDB Cluster on the seed node unless any group exists (split-brain guard), then the application account",
        args: &[CLUSTER_NAME, APP_SECRET],
    },
    Document {
        logical_id: "DbAddInstanceDocument",
        name: "DbAddInstance",
        script: "db-add-instance.sh",
        timeout_seconds: "1800",
        description: "Add a node to the cluster with clone-based recovery (run on the primary)",
        args: &[NODE],
    },
    Document {
        logical_id: "DbRebootClusterDocument",
        name: "DbRebootCluster",
        script: "db-reboot-cluster.sh",
        timeout_seconds: "1800",
        description: "Reboot the InnoDB Cluster from complete outage on the node with the most complete GTID set",
        args: &[CLUSTER_NAME, REBOOT_FORCE],
    },
    Document {
        logical_id: "WebRouterDocument",
        name: "WebRouter",
        script: "web-router.sh",
        timeout_seconds: "1800",
        description: "Install MySQL Router on a web node and bootstrap it against the InnoDB Cluster (127.0.0.1:6446 read-write)",
        args: &[
            CLUSTER_NAME,
            APP_SECRET,
            Parameter {
                name: "primaryHost",
                env: None,
                description: "Host name of a cluster member to bootstrap from (the primary)",
                pattern: "^[A-Za-z0-9.-]{1,253}$",
                default: None,
            },
        ],
    },
    Document {
        logical_id: "DbBackupDocument",
        name: "DbBackup",
        script: "db-backup.sh",
        timeout_seconds: "14400",
        description: "Back up this node (a SECONDARY; the PRIMARY refuses while a secondary is ONLINE) with CLONE LOCAL, streamed compressed to the backup bucket, manifest last",
        args: &[BACKUP_BUCKET, CLUSTER_ID, BACKUP_ID],
    },
    Document {
        logical_id: "DbBinlogArchiveDocument",
        name: "DbBinlogArchive",
        script: "db-binlog-archive.sh",
        timeout_seconds: "1800",
        description: "On the PRIMARY, rotate the binary log and ship every closed one to the backup bucket (point-in-time recovery); elsewhere nothing",
        args: &[BACKUP_BUCKET, CLUSTER_ID],
    },
    Document {
        logical_id: "DbRestoreDocument",
        name: "DbRestore",
        script: "db-restore.sh",
        timeout_seconds: "14400",
        description: "Replace this new seed's data with a backup (checksum first, old data kept aside), reset its accounts, drop the old cluster's metadata, apply archived binary logs up to stopAt",
        args: &[
            BACKUP_BUCKET,
            Parameter {
                name: "sourceClusterId",
                env: None,
                description: "The id of the cluster the backup was taken of",
                pattern: "^c-[0-9a-f]{12}$",
                default: None,
            },
            BACKUP_ID,
            Parameter {
                name: "stopAt",
                env: None,
                description: "Apply archived binary logs up to this UTC second (RFC 3339, Z); empty: the backup as taken",
                pattern: "^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?$",
                default: Some(""),
            },
            APP_SECRET,
        ],
    },
    Document {
        logical_id: "DbRemoveInstanceDocument",
        name: "DbRemoveInstance",
        script: "db-remove-instance.sh",
        timeout_seconds: "1800",
        description: "Remove a lost node from the cluster (run on a remaining member)",
        args: &[NODE],
    },
];

/// The script with its helpers inlined, the way SSM runs it: one bash program.
fn program(scripts: &Path, script: &str) -> std::io::Result<String> {
    let strip = |text: &str| {
        text.lines()
            .filter(|l| {
                !l.starts_with("#!")
                    && !l.starts_with("source ")
                    && !l.starts_with("# shellcheck source=")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let library = std::fs::read_to_string(scripts.join("db-lib.sh"))?;
    let body = std::fs::read_to_string(scripts.join(script))?;
    Ok(format!("{}\n{}", strip(&library), strip(&body)))
}

/// A document's one `runCommand` entry, before SSM interpolates `{{ parameter }}`: the
/// script with its helpers inlined, fed to bash with the parameters as arguments.
fn command_text(scripts: &Path, doc: &Document) -> std::io::Result<String> {
    let all = || std::iter::once(&ADMIN_SECRET).chain(doc.args.iter());
    let env: String = all()
        .filter_map(|p| p.env.map(|var| format!("{var}='{{{{ {} }}}}' ", p.name)))
        .collect();
    let args: String = all()
        .filter(|p| p.env.is_none())
        .map(|p| format!(" '{{{{ {} }}}}'", p.name))
        .collect();
    Ok(format!(
        "{env}bash -s --{args} <<'HA_ORCHESTRATOR_SCRIPT'\n{}\nHA_ORCHESTRATOR_SCRIPT\n",
        program(scripts, doc.script)?
    ))
}

/// The command a document runs with `parameters` interpolated the way SSM does, after
/// checking each value against the document's `allowedPattern` (SSM refuses the command
/// otherwise). `name` is the document's name without the stack prefix (`DbInstall`).
pub fn interpolated_command(
    project_root: &Path,
    name: &str,
    parameters: &[(String, String)],
) -> Result<String, String> {
    let doc = DOCUMENTS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| format!("no document named {name} in template.yaml"))?;
    let mut text = command_text(&project_root.join("scripts/ssm"), doc)
        .map_err(|e| format!("read scripts/ssm: {e}"))?;
    for parameter in std::iter::once(&ADMIN_SECRET).chain(doc.args.iter()) {
        let value = parameters
            .iter()
            .find(|(n, _)| n == parameter.name)
            .map(|(_, v)| v.as_str())
            .or(parameter.default)
            .ok_or_else(|| format!("{name}: parameter {} is required", parameter.name))?;
        let pattern = regex_lite::Regex::new(parameter.pattern)
            .map_err(|e| format!("{name}: allowedPattern of {}: {e}", parameter.name))?;
        if !pattern.is_match(value) {
            return Err(format!(
                "{name}: parameter {} value {value:?} fails allowedPattern {}",
                parameter.name, parameter.pattern
            ));
        }
        text = text.replace(&format!("{{{{ {} }}}}", parameter.name), value);
    }
    Ok(text)
}

/// The generated block, markers included.
pub fn render(project_root: &Path) -> std::io::Result<String> {
    let scripts = project_root.join("scripts/ssm");
    let mut out = vec![BEGIN.to_string()];
    for doc in DOCUMENTS {
        let params: Vec<&Parameter> = std::iter::once(&ADMIN_SECRET)
            .chain(doc.args.iter())
            .collect();
        out.push(format!("  {}:", doc.logical_id));
        out.push("    Type: AWS::SSM::Document".into());
        out.push("    Properties:".into());
        out.push("      DocumentType: Command".into());
        out.push("      DocumentFormat: YAML".into());
        out.push(format!(
            "      Name: !Sub \"${{AWS::StackName}}-{}\"",
            doc.name
        ));
        // A fixed name and the default UpdateMethod (Replace) make CloudFormation replace the
        // document whenever its content changes, which it refuses for a custom-named resource
        // ("cannot update a stack when a custom-named resource requires replacing"): every
        // redeploy after a change under scripts/ssm would fail. NewVersion updates the
        // document in place and makes the new version the default (AWS::SSM::Document,
        // UpdateMethod). The cfn-lint rule E9106 keeps it so.
        out.push("      UpdateMethod: NewVersion".into());
        out.push("      Content:".into());
        out.push("        schemaVersion: \"2.2\"".into());
        out.push(format!(
            "        description: \"{} (generated from scripts/ssm/{})\"",
            doc.description, doc.script
        ));
        out.push("        parameters:".into());
        for p in &params {
            out.push(format!("          {}:", p.name));
            out.push("            type: String".into());
            out.push(format!("            description: \"{}\"", p.description));
            out.push(format!("            allowedPattern: \"{}\"", p.pattern));
            if let Some(default) = p.default {
                out.push(format!("            default: \"{default}\""));
            }
        }
        out.push("        mainSteps:".into());
        out.push("          - action: aws:runShellScript".into());
        out.push("            name: run".into());
        out.push("            inputs:".into());
        out.push(format!(
            "              timeoutSeconds: \"{}\"",
            doc.timeout_seconds
        ));
        out.push("              runCommand:".into());
        out.push("                - |".into());
        let indent = "                  ";
        for line in command_text(&scripts, doc)?.lines() {
            if line.is_empty() {
                out.push(String::new());
            } else {
                out.push(format!("{indent}{line}"));
            }
        }

        out.push(String::new());
    }
    out.push(END.to_string());
    Ok(out.join("\n"))
}

/// The template with its generated block replaced by `block`; `None` when the markers
/// are missing.
pub fn replace_block(template: &str, block: &str) -> Option<String> {
    let start = template.find(BEGIN)?;
    let end = template[start..].find(END)? + start + END.len();
    Some(format!(
        "{}{}{}",
        &template[..start],
        block,
        &template[end..]
    ))
}

/// The generated block as it is in the template now.
pub fn current_block(template: &str) -> Option<&str> {
    let start = template.find(BEGIN)?;
    let end = template[start..].find(END)? + start + END.len();
    Some(&template[start..end])
}

/// An `AWS::SSM::Document` of a built template, as CloudFormation would provision it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateDocument {
    pub name: String,
    /// `Replace` (CloudFormation's default) or `NewVersion`.
    pub update_method: String,
    pub document_type: String,
    pub content: serde_json::Value,
}

/// The SSM documents of a built template (`.aws-sam/build/template.yaml` or a copy), by
/// logical id, with `${AWS::StackName}` resolved to `stack`. YAML with CloudFormation's
/// short tags is read by the SAM translator's own parser in the project's venv.
pub fn template_documents(
    project_root: &Path,
    template: &Path,
    stack: &str,
) -> Result<std::collections::BTreeMap<String, TemplateDocument>, String> {
    const READ: &str = "import json, sys\n\
        from samtranslator.yaml_helper import yaml_parse\n\
        t = yaml_parse(open(sys.argv[1]).read())\n\
        print(json.dumps({k: v.get('Properties') or {} for k, v in (t.get('Resources') or {}).items()\n\
                          if v.get('Type') == 'AWS::SSM::Document'}))\n";
    let python = project_root.join(".venv/bin/python");
    let output = std::process::Command::new(&python)
        .args(["-c", READ])
        .arg(template)
        .output()
        .map_err(|e| format!("run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "read {}: {}",
            template.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let resources: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{e}"))?;
    let mut documents = std::collections::BTreeMap::new();
    for (logical_id, props) in resources {
        let name = match &props["Name"] {
            serde_json::Value::String(name) => name.clone(),
            serde_json::Value::Object(sub) => sub
                .get("Fn::Sub")
                .and_then(|s| s.as_str())
                .map(|s| s.replace("${AWS::StackName}", stack))
                .filter(|s| !s.contains("${"))
                .ok_or_else(|| format!("{logical_id}: Name {sub:?} is not resolvable here"))?,
            // No Name: CloudFormation generates one (and replaces freely).
            _ => format!("{stack}-{logical_id}-generated"),
        };
        documents.insert(
            logical_id,
            TemplateDocument {
                name,
                update_method: props["UpdateMethod"]
                    .as_str()
                    .unwrap_or("Replace")
                    .to_string(),
                document_type: props["DocumentType"]
                    .as_str()
                    .unwrap_or("Command")
                    .to_string(),
                content: props["Content"].clone(),
            },
        );
    }
    Ok(documents)
}

/// What [`apply_stack_documents`] did to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentChange {
    Created(String),
    /// A new version, made the default (UpdateMethod NewVersion).
    NewVersion(String, String),
    Replaced(String),
    Deleted(String),
}

/// fakecloud 0.51.0's CloudFormation has no `AWS::SSM::Document` provisioner: it records
/// the resource and creates nothing, and a stack update that changes a document's content
/// succeeds whatever its `UpdateMethod` (`fakecloud-cloudformation` 0.51.0,
/// `resource_provisioner/mod.rs`, the fallback arm of `create_resource`). This plays the
/// part of CloudFormation's document handler against the local cloud's SSM API after a
/// deploy (`previous`: the template deployed before, `None` on the first deploy), so the
/// documents exist and a redeploy is held to what CloudFormation does:
/// - `Name` and `DocumentType` are create-only (the resource schema's
///   `createOnlyProperties`), and a content change with the default `UpdateMethod`
///   (`Replace`) replaces the document too (AWS::SSM::Document reference, UpdateMethod);
///   CloudFormation refuses to replace a resource with a custom name ("CloudFormation
///   cannot update a stack when a custom-named resource requires replacing"), so that is
///   an error here as well;
/// - with `NewVersion`, the content becomes a new version of the same document, made its
///   default version (UpdateDocument, then UpdateDocumentDefaultVersion, as the handler in
///   aws-cloudformation-resource-providers-ssm does);
/// - a document no longer in the template is deleted.
///
/// Assumption, stated: a template `Name` is always custom (the project's documents all
/// have one); content is sent as JSON, which SSM accepts for the same document.
pub async fn apply_stack_documents(
    ssm: &aws_sdk_ssm::Client,
    project_root: &Path,
    stack: &str,
    previous: Option<&Path>,
    template: &Path,
) -> Result<Vec<DocumentChange>, String> {
    let old = match previous {
        Some(path) => template_documents(project_root, path, stack)?,
        None => Default::default(),
    };
    let new = template_documents(project_root, template, stack)?;
    let mut changes = Vec::new();
    for (logical_id, doc) in &new {
        let content = doc.content.to_string();
        match old.get(logical_id) {
            None => {
                create_document(ssm, doc, &content).await?;
                changes.push(DocumentChange::Created(doc.name.clone()));
            }
            Some(before) if before == doc => {}
            Some(before)
                if before.name != doc.name
                    || before.document_type != doc.document_type
                    || doc.update_method != "NewVersion" =>
            {
                // A replacement: CloudFormation creates the new resource first, which a
                // fixed name makes impossible while the old one exists.
                if before.name == doc.name {
                    return Err(format!(
                        "UPDATE_FAILED {logical_id}: CloudFormation cannot update a stack when a \
                         custom-named resource requires replacing. Rename {} and update the \
                         stack again. (UpdateMethod {}: a content change replaces the document)",
                        doc.name, doc.update_method
                    ));
                }
                create_document(ssm, doc, &content).await?;
                delete_document(ssm, &before.name).await?;
                changes.push(DocumentChange::Replaced(doc.name.clone()));
            }
            Some(_) => {
                let updated = ssm
                    .update_document()
                    .name(&doc.name)
                    .content(&content)
                    .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
                    .document_version("$LATEST")
                    .send()
                    .await
                    .map_err(|e| format!("UpdateDocument {}: {e:?}", doc.name))?;
                let version = updated
                    .document_description()
                    .and_then(|d| d.document_version())
                    .ok_or_else(|| format!("UpdateDocument {}: no version", doc.name))?
                    .to_string();
                ssm.update_document_default_version()
                    .name(&doc.name)
                    .document_version(&version)
                    .send()
                    .await
                    .map_err(|e| format!("UpdateDocumentDefaultVersion {}: {e:?}", doc.name))?;
                changes.push(DocumentChange::NewVersion(doc.name.clone(), version));
            }
        }
    }
    for (logical_id, before) in &old {
        if !new.contains_key(logical_id) {
            delete_document(ssm, &before.name).await?;
            changes.push(DocumentChange::Deleted(before.name.clone()));
        }
    }
    Ok(changes)
}

async fn create_document(
    ssm: &aws_sdk_ssm::Client,
    doc: &TemplateDocument,
    content: &str,
) -> Result<(), String> {
    ssm.create_document()
        .name(&doc.name)
        .content(content)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
        .document_type(aws_sdk_ssm::types::DocumentType::from(
            doc.document_type.as_str(),
        ))
        .send()
        .await
        .map_err(|e| format!("CreateDocument {}: {e:?}", doc.name))?;
    Ok(())
}

async fn delete_document(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<(), String> {
    ssm.delete_document()
        .name(name)
        .send()
        .await
        .map_err(|e| format!("DeleteDocument {name}: {e:?}"))?;
    Ok(())
}
