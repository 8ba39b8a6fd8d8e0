//! `clusterctl`: the orchestrator's command line for people.
//!
//! ```text
//! clusterctl --endpoint "$ApiEndpoint" create --name shop --web 2 --db 3 --wait
//! clusterctl list
//! clusterctl status c-0123456789ab
//! clusterctl delete c-0123456789ab --wait
//! clusterctl backups create c-0123456789ab --wait
//! clusterctl backups list c-0123456789ab
//! clusterctl create --name copy --restore-from c-0123456789ab --point-in-time 2026-12-01T06:30:00Z --wait
//! ```
//! Requests to AWS are signed with SigV4 from the usual credential chain; requests to the
//! local cloud (a loopback endpoint) go unsigned.

mod client;
mod render;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use client::{ApiClient, CliError};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(version, about = "Create, inspect and delete web + MySQL clusters")]
struct Cli {
    /// The API's base URL (the stack's ApiEndpoint output).
    #[arg(long, env = "CLUSTERCTL_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// Sign requests with SigV4 even for a loopback endpoint.
    #[arg(long, global = true, conflicts_with = "no_sign")]
    sign: bool,
    /// Never sign (only the local cloud accepts that).
    #[arg(long, global = true)]
    no_sign: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the create variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Ask for a new cluster.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 2)]
        web: u32,
        #[arg(long, default_value = "t3.small")]
        web_type: String,
        #[arg(long, default_value_t = 3)]
        db: u32,
        #[arg(long, default_value = "r6i.large")]
        db_type: String,
        /// Subnet ids to spread over (default: the stack's private subnets).
        #[arg(long = "subnet")]
        subnets: Vec<String>,
        /// Makes a retried create return the same cluster (default: derived from the name).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// How often the cluster is backed up: hourly, daily (the default) or <N>h.
        #[arg(long)]
        backup_schedule: Option<String>,
        /// How many days backups are kept, 1-35 (default 7).
        #[arg(long)]
        backup_retention_days: Option<u32>,
        /// Start the database from a backup of this cluster (of this stack; it may be deleted).
        #[arg(long, value_name = "CLUSTER")]
        restore_from: Option<String>,
        /// The backup to restore (default: the latest completed one).
        #[arg(
            long,
            value_name = "ID",
            requires = "restore_from",
            conflicts_with = "point_in_time"
        )]
        backup: Option<String>,
        /// Restore the state at this UTC time (RFC 3339, e.g. 2026-12-01T06:30:00Z).
        #[arg(long, value_name = "TIME", requires = "restore_from")]
        point_in_time: Option<String>,
        /// Follow the workflow until the cluster is READY or FAILED.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many minutes.
        #[arg(long, default_value_t = 30)]
        timeout_minutes: u64,
    },
    /// List clusters, newest first.
    List,
    /// Show one cluster: phase, conditions, nodes, recent actions.
    Status { id: String },
    /// Delete a cluster and everything it owns (its backups are kept unless --purge-backups).
    Delete {
        id: String,
        /// Delete the cluster's backups and archived binary logs too.
        #[arg(long)]
        purge_backups: bool,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 30)]
        timeout_minutes: u64,
    },
    /// List or take a cluster's backups.
    Backups {
        #[command(subcommand)]
        action: BackupsAction,
    },
}

#[derive(Debug, Subcommand)]
enum BackupsAction {
    /// A cluster's backups, newest first, and how far a point-in-time restore can go.
    List { id: String },
    /// Take a backup now (the cluster must be READY).
    Create {
        id: String,
        /// Follow the backup until it is COMPLETED or FAILED.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 60)]
        timeout_minutes: u64,
    },
}

/// What the create options ask for, as the API's request body.
struct CreateOptions {
    name: String,
    web: u32,
    web_type: String,
    db: u32,
    db_type: String,
    subnets: Vec<String>,
    backup_schedule: Option<String>,
    backup_retention_days: Option<u32>,
    restore_from: Option<String>,
    backup: Option<String>,
    point_in_time: Option<String>,
}

fn create_body(options: &CreateOptions) -> Value {
    let mut body = json!({
        "name": options.name,
        "web": {"count": options.web, "instanceType": options.web_type},
        "db": {"count": options.db, "instanceType": options.db_type},
    });
    if !options.subnets.is_empty() {
        body["subnets"] = json!(options.subnets);
    }
    if options.backup_schedule.is_some() || options.backup_retention_days.is_some() {
        let mut backup = json!({});
        if let Some(schedule) = &options.backup_schedule {
            backup["schedule"] = json!(schedule);
        }
        if let Some(days) = options.backup_retention_days {
            backup["retentionDays"] = json!(days);
        }
        body["backup"] = backup;
    }
    if let Some(source) = &options.restore_from {
        let mut restore = json!({ "fromCluster": source });
        if let Some(backup) = &options.backup {
            restore["backupId"] = json!(backup);
        }
        if let Some(time) = &options.point_in_time {
            restore["pointInTime"] = json!(time);
        }
        body["restore"] = restore;
    }
    body
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("clusterctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let endpoint = cli.endpoint.ok_or_else(|| {
        CliError::Usage("no endpoint: pass --endpoint or set CLUSTERCTL_ENDPOINT to the stack's ApiEndpoint output".into())
    })?;
    let sign = if cli.sign {
        Some(true)
    } else if cli.no_sign {
        Some(false)
    } else {
        None
    };
    let api = ApiClient::new(&endpoint, sign).await?;
    match cli.command {
        Command::Create {
            name,
            web,
            web_type,
            db,
            db_type,
            subnets,
            idempotency_key,
            wait,
            timeout_minutes,
            backup_schedule,
            backup_retention_days,
            restore_from,
            backup,
            point_in_time,
        } => {
            let body = create_body(&CreateOptions {
                name: name.clone(),
                web,
                web_type,
                db,
                db_type,
                subnets,
                backup_schedule,
                backup_retention_days,
                restore_from,
                backup,
                point_in_time,
            });
            let key = idempotency_key.unwrap_or_else(|| format!("clusterctl-create-{name}"));
            let created = api
                .post("/clusters", &body, &[("idempotency-key", key)])
                .await?;
            let id = created["id"].as_str().unwrap_or_default().to_string();
            println!("cluster {id} ({name}) accepted");
            if let Some(plan) = created["restore"].as_object() {
                println!(
                    "restoring backup {} of {}{}",
                    plan.get("backupId").and_then(Value::as_str).unwrap_or("?"),
                    plan.get("sourceCluster")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    plan.get("stopAt")
                        .and_then(Value::as_str)
                        .map(|t| format!(" up to {t}"))
                        .unwrap_or_default()
                );
            }
            if !wait {
                println!("follow it with: clusterctl status {id}");
                return Ok(ExitCode::SUCCESS);
            }
            let cluster = follow(&api, &id, &["READY", "FAILED"], timeout_minutes).await?;
            println!("{}", render::status(&cluster));
            Ok(exit_for(&cluster, "READY"))
        }
        Command::List => {
            let page = api.get("/clusters").await?;
            println!("{}", render::list(&page));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id } => {
            let cluster = api.get(&format!("/clusters/{id}")).await?;
            println!("{}", render::status(&cluster));
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete {
            id,
            purge_backups,
            wait,
            timeout_minutes,
        } => {
            let path = if purge_backups {
                format!("/clusters/{id}?purgeBackups=true")
            } else {
                format!("/clusters/{id}")
            };
            let answer = api.delete(&path).await?;
            if let Some(objects) = answer["backupObjectsPurged"].as_u64() {
                println!("backups of {id} purged ({objects} objects)");
            } else {
                println!("backups of {id} are kept; list them with: clusterctl backups list {id}");
            }
            if answer["phase"] == "DELETED" {
                return Ok(ExitCode::SUCCESS);
            }
            println!("cluster {id} is being deleted");
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            let cluster = follow(&api, &id, &["DELETED", "FAILED"], timeout_minutes).await?;
            println!(
                "cluster {id} is {}",
                cluster["phase"].as_str().unwrap_or("?")
            );
            Ok(exit_for(&cluster, "DELETED"))
        }
        Command::Backups { action } => backups(&api, action).await,
    }
}

async fn backups(api: &ApiClient, action: BackupsAction) -> Result<ExitCode, CliError> {
    match action {
        BackupsAction::List { id } => {
            let listing = api.get(&format!("/clusters/{id}/backups")).await?;
            println!("{}", render::backups(&listing));
            Ok(ExitCode::SUCCESS)
        }
        BackupsAction::Create {
            id,
            wait,
            timeout_minutes,
        } => {
            let created = api
                .post(&format!("/clusters/{id}/backups"), &json!({}), &[])
                .await?;
            let backup = created["id"].as_str().unwrap_or_default().to_string();
            println!("backup {backup} of {id} requested");
            if !wait {
                println!("follow it with: clusterctl backups list {id}");
                return Ok(ExitCode::SUCCESS);
            }
            let record = follow_backup(api, &id, &backup, timeout_minutes).await?;
            println!("{}", render::backup_line(&record));
            Ok(if record["state"] == "COMPLETED" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Poll a cluster's backups until `backup` is COMPLETED or FAILED, a line per state change.
async fn follow_backup(
    api: &ApiClient,
    id: &str,
    backup: &str,
    timeout_minutes: u64,
) -> Result<Value, CliError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_minutes * 60);
    let mut last = String::new();
    loop {
        let listing = api.get(&format!("/clusters/{id}/backups")).await?;
        let record = listing["backups"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["id"] == backup))
            .cloned()
            .unwrap_or(Value::Null);
        let state = record["state"].as_str().unwrap_or("?").to_string();
        if state != last {
            eprintln!("[{:>6.1}s] {state}", started.elapsed().as_secs_f64());
            last = state.clone();
        }
        if matches!(state.as_str(), "COMPLETED" | "FAILED") {
            return Ok(record);
        }
        if Instant::now() > deadline {
            return Err(CliError::Usage(format!(
                "backup {backup} is still {state} after {timeout_minutes} min; check `clusterctl backups list {id}`"
            )));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn exit_for(cluster: &Value, wanted: &str) -> ExitCode {
    if cluster["phase"] == wanted {
        ExitCode::SUCCESS
    } else {
        if let Some(error) = cluster["lastError"].as_object() {
            eprintln!(
                "clusterctl: failed in {}: {}",
                error.get("phase").and_then(Value::as_str).unwrap_or("?"),
                error.get("message").and_then(Value::as_str).unwrap_or("?")
            );
        }
        ExitCode::FAILURE
    }
}

/// Poll the cluster, showing every phase/step change as a line and the live conditions on
/// a spinner, until it reaches one of `phases`.
async fn follow(
    api: &ApiClient,
    id: &str,
    phases: &[&str],
    timeout_minutes: u64,
) -> Result<Value, CliError> {
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_minutes * 60);
    let mut last = String::new();
    loop {
        let cluster = api.get(&format!("/clusters/{id}")).await?;
        let phase = cluster["phase"].as_str().unwrap_or("?");
        let step = cluster["step"].as_str().unwrap_or("-");
        let line = format!("{phase:<13} {step}");
        if line != last {
            let text = format!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            if progress.is_hidden() {
                eprintln!("{text}");
            } else {
                progress.println(text);
            }
            last = line;
        }
        progress.set_message(render::conditions(&cluster));
        if phases.contains(&phase) {
            progress.finish_and_clear();
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            progress.finish_and_clear();
            return Err(CliError::Usage(format!(
                "{id} is still {phase} after {timeout_minutes} min; it keeps converging: check `clusterctl status {id}`"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> CreateOptions {
        CreateOptions {
            name: "copy".into(),
            web: 2,
            web_type: "t3.small".into(),
            db: 3,
            db_type: "r6i.large".into(),
            subnets: vec![],
            backup_schedule: None,
            backup_retention_days: None,
            restore_from: None,
            backup: None,
            point_in_time: None,
        }
    }

    #[test]
    fn a_create_asks_for_backups_and_restores_as_the_api_reads_them() {
        let plain = create_body(&options());
        assert!(
            plain.get("backup").is_none() && plain.get("restore").is_none(),
            "{plain}"
        );
        let body = create_body(&CreateOptions {
            backup_schedule: Some("6h".into()),
            backup_retention_days: Some(14),
            restore_from: Some("c-0123456789ab".into()),
            point_in_time: Some("2026-12-01T06:30:00Z".into()),
            ..options()
        });
        assert_eq!(
            body["backup"],
            json!({"schedule": "6h", "retentionDays": 14})
        );
        assert_eq!(
            body["restore"],
            json!({"fromCluster": "c-0123456789ab", "pointInTime": "2026-12-01T06:30:00Z"})
        );
        let by_id = create_body(&CreateOptions {
            restore_from: Some("c-0123456789ab".into()),
            backup: Some("20261201T063000Z-0a1b2c3d".into()),
            ..options()
        });
        assert_eq!(
            by_id["restore"],
            json!({"fromCluster": "c-0123456789ab", "backupId": "20261201T063000Z-0a1b2c3d"})
        );
    }

    #[test]
    fn backup_and_point_in_time_need_a_source_and_exclude_each_other() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                [
                    "clusterctl",
                    "--endpoint",
                    "http://127.0.0.1:1",
                    "create",
                    "--name",
                    "copy",
                ]
                .iter()
                .chain(args),
            )
        };
        assert!(parse(&["--backup", "20261201T063000Z-0a1b2c3d"]).is_err());
        assert!(parse(&["--point-in-time", "2026-12-01T06:30:00Z"]).is_err());
        assert!(
            parse(&[
                "--restore-from",
                "c-0123456789ab",
                "--backup",
                "20261201T063000Z-0a1b2c3d",
                "--point-in-time",
                "2026-12-01T06:30:00Z"
            ])
            .is_err()
        );
        assert!(parse(&["--restore-from", "c-0123456789ab"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "clusterctl",
                "backups",
                "create",
                "c-0123456789ab",
                "--wait"
            ])
            .is_ok()
        );
    }
}
