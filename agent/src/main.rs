//! The `homelab-agent` binary: parse the command line, set up logging and the runtime,
//! hand over to the library, turn the result into an exit code.
//!
//! Completions and the man page are generated from these clap definitions at run time
//! (`homelab-agent completions <shell>`, `homelab-agent man`): one source of truth, no
//! build script, and the Nix package installs their output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use homelab_agent::commands;

const EXIT_CODES: &str = "\
Exit codes:
  0   ok: up to date, unchanged, deployed, a known-bad head skipped, pinned
  1   failed, including a deployment that was rolled back
  2   bad command line
  3   the rollback failed, or (status) the machine needs attention
  4   another run holds the lock
  71  this machine is the problem (permissions: use sudo; disk full; nix missing),
      or (status, history) the state file cannot be read
  75  transient failure (remote unreachable, timeout): the next run retries
  78  invalid configuration

Environment:
  HOMELAB_AGENT_CONFIG  config file when --config is not given
  HOMELAB_AGENT_LOG     error | warn | info (default) | debug | trace";

/// The man page's sections that clap does not write (roff).
const MAN_EXTRA: &str = r#".SH EXAMPLES
.TP
\fBhomelab\-agent status\fR
What runs, the branch head, the last run and what needs a person; exit 0 when all is well, 3 when something needs attention.
.TP
\fBssh pi1 homelab\-agent status \-\-json\fR
The same for a script, from another machine.
.TP
\fBhomelab\-agent history \-\-limit 5\fR
The last five runs, each with its error and what to do.
.TP
\fBsudo homelab\-agent pause \-\-for 2h "moving the rack"\fR
Deploy nothing for two hours; \fBsudo homelab\-agent resume\fR ends it sooner.
.TP
\fBsudo homelab\-agent rollback\fR
Back to the previous generation, through the health checks, and pinned there until \fBresume\fR.
.TP
\fBsudo homelab\-agent retry\fR
Forget the failed commit and try the branch head again now.
.TP
\fBhomelab\-agent config check\fR
Validate the configuration and the files it names.
.SH FILES
.TP
\fI/etc/homelab\-agent/config.toml\fR
The configuration, unless \fB\-\-config\fR or \fBHOMELAB_AGENT_CONFIG\fR names another (NixOS: written by the module).
.TP
\fI/var/lib/homelab\-agent/\fR
state.json (what was deployed, history, bad commits, the intent of a deployment under way), reboot.json, and the git cache of the homelab repository.
.TP
\fI/run/homelab\-agent/\fR
The run lock, the last poll and the progress of a run under way (volatile: never written to the SD card).
.SH SEE ALSO
\fBnixos\-rebuild\fR(8), \fBsystemctl\fR(1), \fBjournalctl\fR(1). The manual is docs/ in the homelab\-agent repository: docs/cli.md (commands, exit codes), docs/configuration.md, docs/status.md, docs/reboots.md.
"#;

#[derive(Parser)]
#[command(
    name = "homelab-agent",
    version,
    about = "Pull-based upgrade agent for NixOS machines",
    long_about = "Pull-based upgrade agent for NixOS machines: polls a git flake repository, \
builds this host's system, activates it, runs health checks, then makes it the boot \
default or rolls back.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct ConfigArg {
    /// Config file [default: $HOMELAB_AGENT_CONFIG, else /etc/homelab-agent/config.toml]
    #[arg(long = "config", value_name = "PATH")]
    path: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Poll, and deploy a new commit if there is one; a loop unless --once
    #[command(after_help = EXIT_CODES)]
    Run {
        /// One cycle, then exit (what the systemd timer runs); without it, poll every
        /// [run] interval plus jitter until SIGTERM
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// What runs, the branch head, what the agent is doing, what needs attention
    #[command(
        after_help = "Exit codes:\n  0   idle, running, pinned or failed (the last run failed; see `last run`)\n  3   needs attention: a rollback failed, a run was interrupted, or the live system is not the boot default\n  71  the state file cannot be read (what runs is still shown, from the system links)\n  78  invalid configuration"
    )]
    Status {
        /// Machine-readable output (schema_version, state, head, ...; docs/status.md)
        #[arg(long)]
        json: bool,
        /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never
        #[arg(long, value_enum, default_value_t, value_name = "WHEN")]
        color: homelab_agent::status::style::ColorChoice,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Past runs, newest first
    #[command(
        after_help = "Exit codes:\n  0   ok (also with no runs recorded yet)\n  2   bad command line (--limit 0)\n  71  the state file cannot be read\n  78  invalid configuration"
    )]
    History {
        /// Machine-readable output: a JSON array of runs, newest first
        #[arg(long)]
        json: bool,
        /// Show at most N runs (1 or more; the last 100 are kept)
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = limit)]
        limit: usize,
        /// Times as dates and times (local, with the offset) instead of "3h ago"
        #[arg(long)]
        absolute: bool,
        /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never
        #[arg(long, value_enum, default_value_t, value_name = "WHEN")]
        color: homelab_agent::status::style::ColorChoice,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the health checks now, against the current system, and print each verdict
    #[command(
        after_help = "Exit codes:\n  0   every check healthy (or none configured)\n  1   a check is not healthy\n  78  invalid configuration"
    )]
    Check {
        /// Machine-readable output: {"healthy": bool, "checks": [{"name", "verdict": healthy | unhealthy | cannot-run, "detail"}]}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Go back to the previous generation (same protocol: test, health checks, commit)
    /// and pin the machine there until `resume`
    #[command(after_help = EXIT_CODES)]
    Rollback {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// End a `pause`, and unpin after a `rollback`: the next run follows the branch head
    /// again (says which it ended)
    #[command(
        after_help = "Exit codes:\n  0   resumed: the pause ended and/or unpinned (or was neither)\n  4   another run holds the lock\n  71  cannot take the lock or write the state (not root? use sudo)\n  78  invalid configuration"
    )]
    Resume {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop deploying (maintenance): runs still poll, so `status` shows the branch head,
    /// but deploy nothing until `resume` or the end of --for
    #[command(
        after_help = "Example: homelab-agent pause --for 2h \"moving the rack\"\n\nExit codes:\n  0   paused (a pause in force is replaced)\n  2   bad command line (--for not a positive duration)\n  4   another run holds the lock (wait for it, or stop the unit)\n  71  cannot take the lock or write the state (not root? use sudo)\n  78  invalid configuration"
    )]
    Pause {
        /// End the pause by itself after this long (30m, 2h, 1d; at most 366 days);
        /// without it, the pause lasts until `resume`
        // (`allow_hyphen_values`: `--for -1h` is a bad value, refused by pause_for with
        // what to give, not clap's "unexpected argument '-1'")
        #[arg(long = "for", value_name = "DURATION", value_parser = pause_for, allow_hyphen_values = true)]
        duration: Option<std::time::Duration>,
        /// Why (shown by `status` and kept in the state file; not a secret)
        reason: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// What a commit would do on this machine, without touching it: the build plan, the
    /// packages added, removed and changed against the live system, the size difference,
    /// and whether it needs a reboot (docs/plan.md)
    #[command(
        after_help = "Builds the commit (or with --eval-only only evaluates it), never activates it, never \
records it, never marks it bad. Takes the run lock: while a run deploys, plan says it is busy.\n\n\
Examples:\n  homelab-agent plan                 the branch head\n  homelab-agent plan 3f2a9c1e        a commit on the watched branch\n  homelab-agent plan --eval-only --json\n\n\
Exit codes:\n  0   planned\n  1   the commit is not on the branch, would be refused (unsigned), or fails to evaluate or build\n  2   bad command line (not a commit id)\n  4   another run holds the lock\n  71  this machine is the problem (nix missing, disk full, permissions: use sudo)\n  75  transient failure (remote unreachable, timeout)\n  78  invalid configuration"
    )]
    Plan {
        /// The commit (4 to 40 hex digits) on the watched branch [default: the branch head]
        commit: Option<String>,
        /// Only evaluate (the build plan's dry run): no build, so no closure difference
        /// and no reboot answer
        #[arg(long)]
        eval_only: bool,
        /// Machine-readable output (docs/plan.md)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Forget failed commits so the next run tries the branch head again
    #[command(
        after_help = "Exit codes:\n  0   done\n  4   another run holds the lock\n  71  cannot take the lock or write the state (not root? use sudo)\n  78  invalid configuration"
    )]
    Retry {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deploy on push: start the agent's unit now (systemctl start --no-block) and return
    /// at once; the forced command of a restricted SSH key (docs/deploy-on-push.md)
    #[command(
        after_help = "Exit codes:\n  0   the unit was started (its run logs to the journal)\n  1   systemctl failed (not root? unit not installed?)\n  71  systemctl not found\n  78  invalid configuration"
    )]
    Trigger {
        /// The systemd unit to start
        #[arg(long, value_name = "UNIT", default_value = homelab_agent::trigger::UNIT, value_parser = unit_name)]
        unit: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// At boot (a unit before boot-complete.target): verify a boot the agent rebooted
    /// into with the health checks, fall back to the previous generation if they fail,
    /// record a boot the bootloader fell back from
    #[command(
        after_help = "Exit codes:\n  0   verified, nothing to verify, or a fallback boot recorded\n  1   verification failed (the previous generation is the boot default again)\n  4   another run held the lock for 10 minutes\n  71  the reboot record cannot be read, or there is nothing to fall back to\n  78  invalid configuration"
    )]
    VerifyBoot {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// At every boot (a unit outside multi-user.target, emergency and rescue mode
    /// included): reboot a trial boot that is not verified within [reboot] trial_deadline
    #[command(
        after_help = "Exit codes:\n  0   not a trial boot, verified in time, or the reboot was queued\n  1   the deadline passed and the reboot failed\n  78  invalid configuration"
    )]
    TrialDeadline {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// U-Boot one-shot trials: provision the boot command, arm or disarm a trial, show
    /// the environment (docs/reboots-uboot.md)
    Bootloader {
        #[command(subcommand)]
        command: homelab_agent::doors::uboot::cli::BootloaderCommand,
    },
    /// Configuration commands
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A sandboxed walkthrough: a local repo, a sample flake, real deploys (uses no config
    /// file: it writes its own in the sandbox)
    // Hidden where it is not built (the NixOS package): it only says how to get it.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo {
        /// Keep the sandbox directory afterwards
        #[arg(long)]
        keep: bool,
    },
    /// On a workstation or in CI: build the hosts' systems for a commit, copy them to a
    /// binary cache and publish a signed manifest on the repository's `homelab-prebuilt`
    /// branch, so small machines fetch instead of evaluating (docs/publish.md)
    #[command(
        after_help = "Examples:\n  homelab-agent publish --to 'file:///srv/nix-cache?secret-key=/etc/nix/cache.sec' --ssh-key ~/.ssh/id_ed25519\n  homelab-agent publish --host pi1 --host pi2 --to ssh://cache-host --gpg-key ci@example.org --remote origin\n\n\
Exit codes:\n  0   published (and pushed, unless --no-push)\n  1   the commit failed to evaluate or build: nothing was copied or published\n  2   bad command line\n  71  a tool is missing (nix, git, ssh-keygen or gpg)\n  75  the copy, the fetch or the push failed (the network, the cache, the remote): run it again\n  78  the repository, revision, host or key cannot be used"
    )]
    Publish(PublishArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    Man,
    /// Internal: one git call for the daemon (`head`, or `fetch --cache DIR`), answered
    /// as JSON on stdout (source/child.rs)
    #[command(hide = true)]
    SourceCall {
        /// The call: head, fetch, verify or read
        what: String,
        /// The agent's git cache (fetch, verify, read)
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The call's deadline, in milliseconds
        #[arg(long)]
        timeout_ms: u64,
        /// The commit to verify or read from
        #[arg(long)]
        commit: Option<String>,
        /// The file to read, its path in the commit (read)
        #[arg(long)]
        file: Option<String>,
        /// The most bytes of it to read (read)
        #[arg(long)]
        max_bytes: Option<usize>,
        /// The downgrade floors, as JSON pairs [commit, where from] (verify)
        #[arg(long)]
        floors: Option<String>,
        /// The branch to use instead of the config's (the testing branch)
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `publish`'s flags.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["ssh_key", "gpg_key"])))]
struct PublishArgs {
    /// The binary cache: any store URL nix accepts (file:///srv/cache?secret-key=FILE,
    /// s3://bucket, ssh://host); the agents list it in their substituters
    #[arg(long, value_name = "STORE_URL")]
    to: String,
    /// Sign the manifest with this ssh key (a private key, or a public key whose
    /// private half is in ssh-agent); agents check it with [prebuilt] allowed_signers_file
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// Sign the manifest with this gpg key (id, fingerprint or e-mail); agents check it
    /// with [prebuilt] keyring_file
    #[arg(long, value_name = "KEY")]
    gpg_key: Option<String>,
    /// The repository (a work tree or a bare repository)
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// The revision to publish (its work tree's changes are never included)
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    commit: String,
    /// A host to build (repeat for more) [default: every nixosConfigurations entry]
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// The branch that holds the manifests (the agents' [prebuilt] branch)
    #[arg(long, value_name = "NAME", default_value = homelab_agent::publish::DEFAULT_BRANCH)]
    branch: String,
    /// The remote (name or URL) the branch is pushed to
    #[arg(long, value_name = "REMOTE", default_value = "origin")]
    remote: String,
    /// Only commit the manifest to the local branch; push it yourself
    #[arg(long)]
    no_push: bool,
    /// Deadline of the evaluation and build, and again of the copy (e.g. 2h)
    #[arg(long, value_name = "DURATION", default_value = "4h", value_parser = publish_timeout)]
    timeout: std::time::Duration,
    /// Machine-readable output: {"commit", "hosts", "cache", "branch", "branch_commit", "pushed_to"}
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and say what is wrong where
    #[command(
        after_help = "Exit codes:\n  0   valid\n  78  invalid (each problem with its file, line and key)"
    )]
    Check {
        /// Machine-readable output: {"file", "ok", "error", "errors", "summary"}
        #[arg(long)]
        json: bool,
        /// Skip checking that the files it names (keys, token, known_hosts, check
        /// commands) exist and are readable: for a config validated off the machine
        #[arg(long)]
        no_file_checks: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `history --limit`: a count of runs to show, 1 or more.
fn limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 shows nothing: give 1 or more (the last 100 runs are kept)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a count of runs: give 1 or more".into()),
    }
}

/// `pause --for`: a positive duration (see [`homelab_agent::pause::parse_for`]).
fn pause_for(text: &str) -> Result<std::time::Duration, homelab_agent::failure::Invalid> {
    homelab_agent::pause::parse_for(text)
}

/// `publish --timeout`: held to `[build] timeout`'s range (1 s to 7 days).
fn publish_timeout(text: &str) -> Result<std::time::Duration, homelab_agent::failure::Invalid> {
    homelab_agent::publish::parse_timeout(text)
}

/// `trigger --unit`: a systemd unit name, never an option for systemctl.
fn unit_name(s: &str) -> Result<String, String> {
    if homelab_agent::config::valid_unit_name(s) {
        Ok(s.to_string())
    } else {
        Err(homelab_agent::failure::with_hint_line(
            format!("{s:?} is not a systemd unit name"),
            "e.g. homelab-agent.service",
        ))
    }
}

/// Commands that only print (status, history, the man page, the demo...) end quietly when
/// their reader goes away (`homelab-agent status | head -1`), as Unix tools do: SIGPIPE's
/// default action, instead of Rust's ignored SIGPIPE and an `error: Broken pipe` or a
/// panic from `println!`. Those that talk to the network, run a deployment or run at boot
/// as a unit whose output is the journal's socket (verify-boot, the trial deadline, the
/// U-Boot setup) keep it ignored: a closed socket is an error they handle, never their
/// death (a trial deadline killed by a restarted journald would never reboot the trial).
// Unsafe: signal(2) to restore SIGPIPE's default for commands that only print.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe(command: &Command) {
    let prints_only = !matches!(
        command,
        Command::Run { .. }
            | Command::Check { .. }
            | Command::Rollback { .. }
            | Command::Trigger { .. }
            | Command::VerifyBoot { .. }
            | Command::TrialDeadline { .. }
            | Command::Bootloader { .. }
            | Command::Plan { .. }
            | Command::Publish { .. }
            | Command::SourceCall { .. }
    );
    if prints_only {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: called first thing in main, before any thread or handler exists;
        // SIG_DFL installs no Rust code as a handler.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
}

/// `homelab-agent demo`: the walkthrough (the `demo` feature).
#[cfg(feature = "demo")]
async fn demo(keep: bool) -> u8 {
    homelab_agent::demo::run(keep).await
}

/// `homelab-agent demo` in a build without the `demo` feature (the NixOS package): what
/// to run instead (tests/package-build checks it).
#[cfg(not(feature = "demo"))]
async fn demo(_keep: bool) -> u8 {
    eprintln!("{DEMO_NOT_BUILT}");
    homelab_agent::exit::USAGE
}

#[cfg(not(feature = "demo"))]
const DEMO_NOT_BUILT: &str = "error: this homelab-agent was built without the demo (the `demo` cargo feature, which the NixOS package leaves out: its fake NixOS has no place on a managed machine)
hint: run the demo from a checkout of homelab-agent on a Debian/Ubuntu machine: tests/demo (or cargo run --features demo -- demo)";

/// `publish`: on a workstation or in CI; it uses no config file.
async fn publish(args: PublishArgs, config_given: bool) -> u8 {
    if config_given {
        eprintln!("error: `publish` runs on a workstation or in CI and uses no config file; drop --config");
        return 2; // a bad command line, as clap exits
    }
    let signer = match (args.ssh_key, args.gpg_key) {
        (Some(key), _) => homelab_agent::publish::Signer::Ssh { key },
        (None, Some(key_id)) => homelab_agent::publish::Signer::Gpg { key_id },
        (None, None) => unreachable!("clap requires one"),
    };
    let request = homelab_agent::publish::Request {
        repo: args.repo,
        commit: Some(args.commit),
        hosts: args.hosts,
        to: args.to,
        signer,
        branch: args.branch,
        remote: (!args.no_push).then_some(args.remote),
        timeout: args.timeout,
    };
    commands::publish(&request, args.json).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "homelab-agent", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            let mut page = Vec::new();
            let written = man.render(&mut page).and_then(|()| {
                use std::io::Write;
                page.extend_from_slice(MAN_EXTRA.as_bytes());
                std::io::stdout().write_all(&page)
            });
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the man page: {e}");
                    ExitCode::from(homelab_agent::exit::FAILED)
                }
            };
        }
        _ => {}
    }
    if let Some(problem) = homelab_agent::logging::init() {
        eprintln!("warning: {problem}");
    }
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
    let top = cli.config.path;
    // `--config` before or after the command name.
    let pick = |c: ConfigArg| c.path.or_else(|| top.clone());
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run { once, config } => commands::run(pick(config).as_deref(), once).await,
            Command::Status {
                json,
                color,
                config,
            } => commands::status(pick(config).as_deref(), json, color),
            Command::History {
                json,
                limit,
                absolute,
                color,
                config,
            } => commands::history(pick(config).as_deref(), json, limit, absolute, color),
            Command::Check { json, config } => {
                commands::check(pick(config).as_deref(), json).await
            }
            Command::Rollback { config } => commands::rollback(pick(config).as_deref()).await,
            Command::Resume { config } => commands::resume(pick(config).as_deref()),
            Command::Retry { config } => commands::retry(pick(config).as_deref()),
            Command::Plan {
                commit,
                eval_only,
                json,
                config,
            } => commands::plan(pick(config).as_deref(), commit, eval_only, json).await,
            Command::Trigger { unit, config } => {
                commands::trigger(pick(config).as_deref(), &unit).await
            }
            Command::VerifyBoot { config } => {
                commands::verify_boot(pick(config).as_deref()).await
            }
            Command::TrialDeadline { config } => {
                commands::trial_deadline(pick(config).as_deref()).await
            }
            Command::Pause {
                duration,
                reason,
                config,
            } => commands::pause(pick(config).as_deref(), duration, reason.as_deref()),
            Command::Bootloader { command } => {
                homelab_agent::doors::uboot::cli::run(command).await
            }
            Command::Config {
                command:
                    ConfigCommand::Check {
                        json,
                        no_file_checks,
                        config,
                    },
            } => commands::config_check(pick(config).as_deref(), json, !no_file_checks),
            Command::Publish(args) => publish(args, top.is_some()).await,
            Command::Demo { keep } => match top {
                Some(_) => {
                    eprintln!("error: `demo` uses no config file (it writes its own in its sandbox); drop --config");
                    2 // a bad command line, as clap exits
                }
                None => demo(keep).await,
            },
            Command::SourceCall {
                what,
                cache,
                timeout_ms,
                commit,
                file,
                max_bytes,
                floors,
                branch,
                config,
            } => {
                let read = match (commit.clone(), file, max_bytes) {
                    (Some(c), Some(p), Some(m)) => Some((c, p, m)),
                    _ => None,
                };
                let verify = commit.zip(floors);
                commands::source_call(
                    pick(config).as_deref(),
                    &what,
                    cache,
                    verify,
                    read,
                    branch,
                    timeout_ms,
                )
                .await
            }
            Command::Completions { .. } | Command::Man => unreachable!("handled above"),
        }
    });
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(
                    arg.get_help().is_some_and(|h| !h.to_string().is_empty()),
                    "{path} --{} has no help",
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "homelab-agent");
    }

    #[test]
    fn demo_does_not_offer_config() {
        let cmd = Cli::command();
        let demo = cmd.find_subcommand("demo").unwrap();
        assert!(demo.get_arguments().all(|a| a.get_id() != "path"));
    }
}
