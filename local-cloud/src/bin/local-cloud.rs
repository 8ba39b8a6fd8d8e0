//! `local-cloud`: start the local cloud, deploy the stack into it, and show what is there.
//!
//! `local-cloud demo` is the main job of `make run`: it deploys the built template, prints
//! the stack's resources and API endpoint, then drives the real `clusterctl` through a
//! demo cluster's life (create 2 web + 3 db and wait, list, delete and wait), and stops
//! everything it started.

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
    /// Deploy the stack, provision and delete a demo cluster with clusterctl, stop everything.
    Demo {
        #[arg(long, default_value = "ha-orchestrator")]
        stack: String,
    },
    /// Regenerate the SSM documents in template.yaml from scripts/ssm/.
    RenderDocuments {
        /// Write template.yaml instead of printing the block.
        #[arg(long)]
        write: bool,
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
    if let Command::RenderDocuments { write } = command {
        return render_documents(write);
    }
    let tools = Tools::locate()?;
    let stack_name = match &command {
        Command::Demo { stack } | Command::Up { stack } => stack.clone(),
        Command::RenderDocuments { .. } => unreachable!("handled above"),
    };
    eprintln!(
        "[1/5] starting fakecloud {} ...",
        local_cloud::FAKECLOUD_VERSION
    );
    let cloud = LocalCloud::start(&tools)?;
    eprintln!("      listening on {}", cloud.endpoint());
    eprintln!("[2/5] deploying template.yaml as stack {stack_name} (sam deploy) ...");
    // The stack's VPC block is the real hosts' network: held before the deploy, so another
    // run on this machine cannot take it in between.
    let vpc = local_cloud::hosts::AddressSpace::claim(DEMO_VPC_CIDR)?;
    let stack = cloud.deploy(&stack_name).await?;
    print_stack(&stack);
    // The instances' SSM agent: runs the documents on real hosts, one per instance, each a
    // network namespace with a real MySQL 9.7 (see local_cloud::agent and local_cloud::hosts).
    let agent = local_cloud::agent::SsmAgent::start_on_real_hosts(&cloud, &stack.name, vpc).await?;
    let api = stack
        .api_url
        .clone()
        .ok_or("the stack has no ApiId output; template.yaml must export it")?;
    if let Command::Up { .. } = command {
        eprintln!("local cloud is up; try: clusterctl --endpoint {api} list\nCtrl-C stops it");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let clusterctl = |args: &[&str]| -> Result<(), Box<dyn std::error::Error>> {
        println!("\n$ clusterctl {}", args.join(" "));
        let status = std::process::Command::new(local_cloud::built_binary("clusterctl"))
            .arg("--endpoint")
            .arg(&api)
            .args(args)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "clusterctl {} failed ({status}); function logs:\n{}",
                args.join(" "),
                cloud.function_logs()
            )
            .into())
        }
    };
    eprintln!("[3/5] provisioning a demo cluster (2 web + 3 db) ...");
    clusterctl(&[
        "create", "--name", "demo", "--web", "2", "--db", "3", "--wait",
    ])?;
    clusterctl(&["list"])?;
    let id = demo_cluster_id(&cloud, &api).await?;
    clusterctl(&["status", &id])?;
    if let Some(members) = agent.real_hosts().and_then(|hosts| hosts.group_members()) {
        println!(
            "\nThe group, as its real MySQL members see it (performance_schema.replication_group_members):"
        );
        println!(
            "{:<40} {:<10} {:<10} VERSION",
            "MEMBER_HOST", "STATE", "ROLE"
        );
        for row in members.lines() {
            let fields: Vec<&str> = row.split('\t').collect();
            if let [host, state, role, version] = fields.as_slice() {
                println!("{host:<40} {state:<10} {role:<10} {version}");
            }
        }
    }
    eprintln!("[4/5] deleting the demo cluster ...");
    clusterctl(&["delete", &id, "--wait"])?;
    clusterctl(&["list"])?;
    eprintln!("[5/5] stopping the local cloud");
    drop(cloud);
    Ok(())
}

/// The id of the cluster named `demo`, looked up to go on with it.
async fn demo_cluster_id(
    cloud: &LocalCloud,
    api: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let page: serde_json::Value = reqwest::get(format!("{api}/clusters"))
        .await?
        .json()
        .await?;
    page["clusters"]
        .as_array()
        .and_then(|clusters| clusters.iter().find(|c| c["name"] == "demo"))
        .and_then(|c| c["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "no cluster named demo in the listing; function logs:\n{}",
                cloud.function_logs()
            )
            .into()
        })
}

/// The template's default `VpcCidr`: the instances keep the private addresses EC2 gives
/// them in it, on the real hosts' network.
const DEMO_VPC_CIDR: &str = "10.40.0.0/16";

fn render_documents(write: bool) -> Result<(), Box<dyn std::error::Error>> {
    use local_cloud::documents;
    let root = local_cloud::project_root();
    let block = documents::render(&root)?;
    if !write {
        println!("{block}");
        return Ok(());
    }
    let path = root.join("template.yaml");
    let template = std::fs::read_to_string(&path)?;
    let updated = documents::replace_block(&template, &block).ok_or_else(|| {
        format!(
            "template.yaml has no generated block; add the lines {:?} and {:?} under Resources",
            documents::BEGIN,
            documents::END
        )
    })?;
    std::fs::write(&path, updated)?;
    eprintln!("template.yaml: SSM documents regenerated from scripts/ssm/");
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
