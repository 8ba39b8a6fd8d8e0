//! `clusterctl`: the orchestrator's command line for people.
//!
//! ```text
//! clusterctl --endpoint "$ApiEndpoint" create --name shop --web 2 --db 3 --wait
//! clusterctl list
//! clusterctl status c-0123456789ab
//! clusterctl delete c-0123456789ab --wait
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
    /// Delete a cluster and everything it owns.
    Delete {
        id: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 30)]
        timeout_minutes: u64,
    },
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
        } => {
            let mut body = json!({
                "name": name,
                "web": {"count": web, "instanceType": web_type},
                "db": {"count": db, "instanceType": db_type},
            });
            if !subnets.is_empty() {
                body["subnets"] = json!(subnets);
            }
            let key = idempotency_key.unwrap_or_else(|| format!("clusterctl-create-{name}"));
            let created = api
                .post("/clusters", &body, &[("idempotency-key", key)])
                .await?;
            let id = created["id"].as_str().unwrap_or_default().to_string();
            println!("cluster {id} ({name}) accepted");
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
            wait,
            timeout_minutes,
        } => {
            api.delete(&format!("/clusters/{id}")).await?;
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
