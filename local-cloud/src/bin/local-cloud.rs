//! `local-cloud`: start the local cloud, deploy the stack into it, and show what is there.
//!
//! `local-cloud demo` is the main job of `make run` until clusters can be provisioned: it
//! deploys the built template, prints the stack's resources and API endpoint, calls the API,
//! and stops everything it started.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use local_cloud::{LocalCloud, Stack, Tools};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Run the orchestrator's stack on the local cloud (fakecloud)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deploy the stack, show its resources and the API answering, then stop everything.
    Demo {
        #[arg(long, default_value = "ha-orchestrator")]
        stack: String,
    },
    /// Deploy the stack and keep the local cloud running until Ctrl-C.
    Up {
        #[arg(long, default_value = "ha-orchestrator")]
        stack: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-cloud: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let tools = Tools::locate()?;
    let stack_name = match &command {
        Command::Demo { stack } | Command::Up { stack } => stack.clone(),
    };
    eprintln!(
        "[1/4] starting fakecloud {} ...",
        local_cloud::FAKECLOUD_VERSION
    );
    let cloud = LocalCloud::start(&tools)?;
    eprintln!("      listening on {}", cloud.endpoint());
    eprintln!("[2/4] deploying template.yaml as stack {stack_name} (sam deploy) ...");
    let stack = cloud.deploy(&stack_name).await?;
    print_stack(&stack);
    let api = stack
        .api_url
        .clone()
        .ok_or("the stack has no ApiId output; template.yaml must export it")?;
    eprintln!("[3/4] calling the API: GET /clusters ...");
    let response = reqwest::get(format!("{api}/clusters")).await?;
    let status = response.status();
    let body = response.text().await?;
    println!("GET /clusters -> {status}\n{body}");
    if !status.is_success() {
        return Err(format!(
            "the API answered {status}; function logs:\n{}",
            cloud.function_logs()
        )
        .into());
    }
    if let Command::Up { .. } = command {
        eprintln!("local cloud is up at {}; Ctrl-C stops it", cloud.endpoint());
        tokio::signal::ctrl_c().await?;
    }
    eprintln!("[4/4] stopping the local cloud");
    drop(cloud);
    Ok(())
}

fn print_stack(stack: &Stack) {
    println!("\nStack {} ({})", stack.name, stack.status);
    println!("{:<34} {:<44} STATUS", "RESOURCE", "TYPE");
    for r in &stack.resources {
        println!("{:<34} {:<44} {}", r.logical_id, r.resource_type, r.status);
    }
    println!("\nOutputs");
    for (key, value) in &stack.outputs {
        println!("  {key:<24} {value}");
    }
    if let Some(api) = &stack.api_url {
        println!("\nAPI endpoint (local): {api}");
    }
    println!();
}
