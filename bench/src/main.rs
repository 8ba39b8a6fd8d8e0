//! `make bench`: how fast the functions start and how little they cost, side by side with a
//! Python/boto3 peer; what each cluster operation costs in AWS calls, state transitions,
//! invocations and dollars; how quickly events are acted on; and how the health sweep scales.
//! Prints a table, writes `report.json`, `report.md` and `startup.svg` to `--out`, and marks
//! each target met or not met. Never part of `make test`: numbers, not pass/fail (it fails
//! only when it cannot measure).
//!
//! One local cloud for everything, with the stack deployed as `sam deploy` deploys it,
//! metering on (`LogLevel=info,orchestrator::metering=debug`) and the sweep schedule set to a
//! day so no scheduled sweep runs inside a measured operation.

mod backups;
mod database;
mod logs;
mod operations;
mod pricing;
mod real_hosts;
mod report;
mod startup;
mod stats;
mod sweep;

use std::path::PathBuf;

use clap::Parser;
use local_cloud::{LocalCloud, Tools};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot set up the benchmark: {0}")]
    Setup(String),
    #[error("benchmark run failed: {0}")]
    Run(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Startup,
    Operations,
    Sweep,
    /// Real MySQL 9.7 hosts (needs root): primary loss, rejoin, join with clone.
    Database,
    /// Real MySQL 9.7 hosts (needs root): db-backup.sh / db-restore.sh beside mysqldump.
    Backups,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the orchestrator against the local cloud (make bench)")]
struct Args {
    /// Where report.json, report.md and startup.svg go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Cold starts per function (and per peer).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Warm invocations of the last process of each function.
    #[arg(long, default_value_t = 50)]
    warm: usize,
    /// EC2 reaction runs (each heals a web node); SSM samples are topped up to as many.
    #[arg(long, default_value_t = 20)]
    reaction_runs: usize,
    /// Fleet sizes the sweep is measured at (clusters of 2 web + 3 db).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sweep_sizes: Vec<usize>,
    /// Primary losses and rejoins measured on real MySQL (the database part).
    #[arg(long, default_value_t = 5)]
    db_rounds: usize,
    /// Rows written while a member is out, before its rejoin is timed.
    #[arg(long, default_value_t = 1000)]
    db_rejoin_rows: usize,
    /// MiB loaded into the cluster before a fresh node joins with clone.
    #[arg(long, default_value_t = 50)]
    db_clone_mb: usize,
    /// MiB loaded into the cluster before backups and dumps are measured (the backups part).
    #[arg(long, default_value_t = 100)]
    backup_mb: usize,
    /// Backups, restores, dumps and loads measured, each (the backups part).
    #[arg(long, default_value_t = 3)]
    backup_rounds: usize,
    /// The parts to run (all by default).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// The stripped release binaries (`cargo build --release`).
    #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/release")]
    release_dir: PathBuf,
    /// The Python with boto3 for the peer (the project's .venv).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = run(args).await {
        eprintln!("bench: {error}");
        std::process::exit(1);
    }
}

/// Print a real-host part's table and write it to `<out>/<part>.md`, its figures to
/// `<out>/<part>.json`.
fn write_part(
    out: &std::path::Path,
    part: &str,
    table: &str,
    figures: &impl serde::Serialize,
) -> Result<()> {
    println!("{table}");
    std::fs::create_dir_all(out).map_err(|e| BenchError::Io(out.display().to_string(), e))?;
    let json = serde_json::to_string_pretty(figures)
        .map_err(|e| BenchError::Run(format!("{part}.json: {e}")))?;
    for (name, text) in [
        (format!("{part}.md"), table.to_string()),
        (format!("{part}.json"), json),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| BenchError::Io(path.display().to_string(), e))?;
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let wants = |part| args.only.is_empty() || args.only.contains(&part);
    let root = local_cloud::project_root();
    let database = if wants(Part::Database) {
        let settings = database::Settings {
            rounds: args.db_rounds,
            rejoin_rows: args.db_rejoin_rows,
            clone_mb: args.db_clone_mb,
        };
        let figures = tokio::task::spawn_blocking(move || database::measure(settings))
            .await
            .map_err(|e| BenchError::Run(format!("database: {e}")))??;
        let table = database::table(&figures);
        write_part(&root.join(&args.out), "database", &table, &figures)?;
        Some(table)
    } else {
        None
    };
    let backups = if wants(Part::Backups) {
        let settings = backups::Settings {
            mb: args.backup_mb,
            rounds: args.backup_rounds,
        };
        let figures = tokio::task::spawn_blocking(move || backups::measure(settings))
            .await
            .map_err(|e| BenchError::Run(format!("backups: {e}")))??;
        let table = backups::table(&figures);
        write_part(&root.join(&args.out), "backups", &table, &figures)?;
        Some(table)
    } else {
        None
    };
    if !args.only.is_empty()
        && args
            .only
            .iter()
            .all(|p| matches!(p, Part::Database | Part::Backups))
    {
        return Ok(());
    }
    let tools = Tools::locate().map_err(|e| BenchError::Setup(e.to_string()))?;
    let cloud = LocalCloud::start(&tools).map_err(|e| BenchError::Setup(e.to_string()))?;
    let stack = cloud
        .deploy_with(
            "ha-bench",
            &[
                ("LogLevel", "info,orchestrator::metering=debug"),
                ("SweepSchedule", "rate(1 day)"),
            ],
        )
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    eprintln!(
        "[bench] stack {} deployed at {}",
        stack.name,
        cloud.endpoint()
    );

    let functions = if wants(Part::Startup) {
        let programs = startup::Programs {
            release_dir: root.join(&args.release_dir),
            python: root.join(&args.python),
            peer_script: root.join("bench/peer/handler.py"),
        };
        startup::measure(&cloud, &stack, &programs, args.runs, args.warm).await?
    } else {
        Vec::new()
    };

    let (operations, reactions) = if wants(Part::Operations) {
        let agent = local_cloud::agent::SsmAgent::start(&cloud, &stack.name)
            .await
            .map_err(|e| BenchError::Setup(format!("SSM agent: {e}")))?;
        let mut scenario = operations::Scenario::new(&cloud, &stack, &agent).await?;
        let (operations, reactions) = scenario.run(args.reaction_runs).await?;
        (operations, Some(reactions))
    } else {
        (Vec::new(), None)
    };

    let sweeps = if wants(Part::Sweep) {
        sweep::measure(&cloud, &stack, &args.sweep_sizes).await?
    } else {
        Vec::new()
    };

    let targets = report::targets(&functions, &operations, reactions.as_ref(), &sweeps);
    let report = report::Report {
        machine: report::Machine::describe(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs: args.runs,
        functions,
        operations,
        reactions,
        sweeps,
        targets,
    };
    let table = report::table(&report);
    println!("{table}");
    if let Some(database) = &database {
        println!("{database}");
    }
    if let Some(backups) = &backups {
        println!("{backups}");
    }
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).map_err(|e| BenchError::Io(out.display().to_string(), e))?;
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| BenchError::Run(format!("report.json: {e}")))?;
    for (name, text) in [
        ("report.json", json),
        ("report.md", table),
        ("startup.svg", report::chart(&report.functions)),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| BenchError::Io(path.display().to_string(), e))?;
    }
    let met = report.targets.iter().filter(|t| t.met).count();
    println!(
        "{met} of {} targets met; report in {}",
        report.targets.len(),
        out.display()
    );
    Ok(())
}
