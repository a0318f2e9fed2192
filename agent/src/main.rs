//! The `homelab-agent` binary: parse the command line, set up logging and the runtime,
//! hand over to the library, turn the result into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homelab_agent::commands;

#[derive(Parser)]
#[command(
    name = "homelab-agent",
    version,
    about = "Pull-based upgrade agent for NixOS machines"
)]
struct Cli {
    /// Config file [default: $HOMELAB_AGENT_CONFIG or /etc/homelab-agent/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Poll, and deploy a new commit if there is one (--once: one cycle, as the timer does)
    Run {
        #[arg(long)]
        once: bool,
    },
    /// What is deployed and what happened last
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Past runs, newest first
    History {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run the health checks now, against the current system
    Check,
    /// Go back to the previous generation (same protocol: test, health checks, commit)
    Rollback,
    /// Forget failed commits so the next run tries the branch head again
    Retry,
    /// Configuration commands
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A sandboxed walkthrough: a local repo, a sample flake, real deploys
    Demo {
        /// Keep the sandbox directory afterwards
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and say what is wrong where
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    homelab_agent::logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(homelab_agent::exit::FAILED);
        }
    };
    let config = cli.config.as_deref();
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run { once } => commands::run(config, once).await,
            Command::Status { json } => commands::status(config, json),
            Command::History { json, limit } => commands::history(config, json, limit),
            Command::Check => commands::check(config).await,
            Command::Rollback => commands::rollback(config).await,
            Command::Retry => commands::retry(config),
            Command::Config {
                command: ConfigCommand::Check,
            } => commands::config_check(config),
            Command::Demo { keep } => homelab_agent::demo::run(keep).await,
        }
    });
    ExitCode::from(code)
}
