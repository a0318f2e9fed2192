//! `homelab-agent demo`: the real deploy cycle in a sandbox directory. A local git
//! repository holds a sample nixpkgs-free flake (the fake NixOS of [`crate::fake_system`]);
//! the agent polls it, builds with the real `nix`, switches a sandbox "current system",
//! sets a sandbox profile with `nix-env`, runs a health check and rolls back a bad commit.

use std::path::Path;
use std::process::Command;

use crate::commands;
use crate::config::{self, Settings};
use crate::fake_system::{self, Host};
use crate::state::Store;
use crate::status::{self, Status};

pub async fn run(keep: bool) -> u8 {
    match demo(keep).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: demo: {e:#}");
            crate::exit::FAILED
        }
    }
}

async fn demo(keep: bool) -> anyhow::Result<u8> {
    require_tools()?;
    let sandbox = tempfile::Builder::new()
        .prefix("homelab-agent-demo-")
        .tempdir()?;
    let root = sandbox.path().to_path_buf();
    prepare_nix_env();
    let repo = root.join("homelab");
    let fake = root.join("machine");
    std::fs::create_dir_all(&repo)?;
    std::fs::create_dir_all(fake.join("run"))?;
    let settings = write_config(&root, &repo, &fake)?;

    let mut tally = Tally::default();
    let mut pi1 = Host::new("pi1");
    let pi2 = Host::new("pi2");
    git(&repo, &["init", "-q", "-b", "main"])?;

    banner(
        1,
        "first deploy: the repository has a configuration for pi1 (this machine) and pi2",
    );
    pi1.content = "v1".into();
    commit(&repo, &fake, &[&pi1, &pi2], "pi1: first configuration")?;
    tally.expect(1, step(&settings).await, crate::exit::OK);

    banner(
        2,
        "poll again with nothing new: one round trip to the remote, no fetch, no build",
    );
    tally.expect(2, step(&settings).await, crate::exit::OK);

    banner(
        3,
        "push a change to pi1: built, activated, health-checked, new generation",
    );
    pi1.content = "v2".into();
    commit(&repo, &fake, &[&pi1, &pi2], "pi1: enable grafana")?;
    tally.expect(3, step(&settings).await, crate::exit::OK);

    banner(
        4,
        "push a change that only touches pi2: same system for pi1, nothing switched",
    );
    let mut pi2b = pi2.clone();
    pi2b.content = "pi2 only".into();
    commit(&repo, &fake, &[&pi1, &pi2b], "pi2: add a backup job")?;
    tally.expect(4, step(&settings).await, crate::exit::OK);

    banner(
        5,
        "push a commit whose health check fails: activated, checked, rolled back",
    );
    let mut broken = pi1.clone();
    broken.content = "v3".into();
    broken.healthy = false;
    commit(&repo, &fake, &[&broken, &pi2b], "pi1: break the web server")?;
    tally.expect(5, step(&settings).await, crate::exit::FAILED);

    banner(
        6,
        "poll again: the bad commit is remembered and not retried",
    );
    tally.expect(6, step(&settings).await, crate::exit::OK);

    banner(7, "history");
    let state = Store::new(&settings.paths.state_dir).peek()?;
    status::write_history_human(
        status::history(&state, 20),
        &mut std::io::stdout(),
        std::time::SystemTime::now(),
        false,
    )?;

    println!();
    if !tally.wrong.is_empty() {
        let _ = sandbox.keep();
        anyhow::bail!(
            "{}", crate::failure::with_hint_line(format!("the demo did not go as it should: {}; the sandbox is kept at {}", tally.wrong.join(", "), root.display()), "the steps' output above says why (`nix` unusable for this user? run as root, or with a nix-daemon: sudo apt-get install nix-setup-systemd)"));
    }
    if keep {
        let kept = sandbox.keep();
        println!("sandbox kept at {}", kept.display());
        println!(
            "try: homelab-agent --config {}/config.toml status",
            kept.display()
        );
    } else {
        println!("done; the sandbox was removed (use `homelab-agent demo --keep` to explore it)");
    }
    Ok(crate::exit::OK)
}

/// One `run --once`, printed with `status`; returns its exit code.
async fn step(settings: &Settings) -> u8 {
    let code = commands::cycle(settings).await;
    println!("\n$ homelab-agent run --once   # exit code {code}");
    let (state, _) = status::load_state(&settings.paths.state_dir);
    println!("$ homelab-agent status");
    let _ = Status::gather(settings, &state)
        .write_human(&mut std::io::stdout(), std::time::SystemTime::now());
    code
}

/// Each step's exit code against the one it must have; what went otherwise.
#[derive(Default)]
struct Tally {
    wrong: Vec<String>,
}

impl Tally {
    fn expect(&mut self, n: u32, got: u8, want: u8) {
        if got != want {
            self.wrong
                .push(format!("step {n} exited {got}, expected {want}"));
        }
    }
}

fn banner(n: u32, text: &str) {
    println!("\n==== {n}. {text}");
}

fn require_tools() -> anyhow::Result<()> {
    const HINT: &str = "from the checkout, run `tests/demo` (it installs what is missing when run \
         as root, or prints the one command to run), or `sudo tests/setup`";
    for tool in ["nix", "nix-env", "git"] {
        if Command::new(tool).arg("--version").output().is_err() {
            anyhow::bail!(
                "{}",
                crate::failure::with_hint_line(format!("`{tool}` not found on PATH"), HINT)
            );
        }
    }
    // Not root: nix builds through the daemon, which must be there.
    let socket = Path::new("/nix/var/nix/daemon-socket/socket");
    if !nix::unistd::Uid::effective().is_root() && !socket.exists() {
        anyhow::bail!(
            "{}", crate::failure::with_hint_line(format!("nix cannot build for this user: not root, and no nix-daemon ({} is missing)", socket.display()), "run the demo as root, or start a nix-daemon: sudo apt-get install nix-setup-systemd"));
    }
    Ok(())
}

/// Every Nix setting the demo relies on, for this process and its children only, after
/// whatever the user has (later lines win), so nothing depends on /etc/nix/nix.conf: the
/// sample flake needs no substituter and a builder that can run /bin/sh; root builds
/// without build users (Debian's nix-bin creates no `nixbld` group).
fn nix_settings(root_user: bool) -> String {
    let mut extra = String::from(
        "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false\n",
    );
    if root_user {
        extra.push_str("build-users-group =\n");
    }
    extra
}

// Unsafe: `std::env::set_var` (the sandbox's NIX_CONFIG for the demo's nix children).
#[allow(unsafe_code)]
fn prepare_nix_env() {
    let extra = nix_settings(nix::unistd::Uid::effective().is_root());
    let current = std::env::var("NIX_CONFIG").unwrap_or_default();
    // SAFETY: single-threaded at this point of the demo; only our children read it.
    unsafe { std::env::set_var("NIX_CONFIG", format!("{current}\n{extra}")) };
}

fn write_config(root: &Path, repo: &Path, fake: &Path) -> anyhow::Result<Settings> {
    let current = fake.join("run/current-system");
    let text = format!(
        r#"# Written by `homelab-agent demo`.
[source]
url = "{repo}"
branch = "main"

[host]
name = "pi1"

[paths]
state_dir = "{root}/state"
runtime_dir = "{root}/runtime"
profile = "{root}/profiles/system"
current_system = "{current}"
booted_system = "{fake}/run/booted-system"

[activation]
mode = "direct"

[health]
settle = "0s"
timeout = "3s"
interval = "1s"

[[health.checks]]
name = "web server answers"
type = "command"
command = ["/bin/sh", "-c", "test -e {current}/healthy"]
timeout = "5s"
"#,
        repo = repo.display(),
        root = root.display(),
        fake = fake.display(),
        current = current.display(),
    );
    let file = root.join("config.toml");
    std::fs::write(&file, text)?;
    std::fs::create_dir_all(root.join("profiles"))?;
    config::load(&file).map_err(Into::into)
}

fn commit(repo: &Path, fake: &Path, hosts: &[&Host], message: &str) -> anyhow::Result<()> {
    let hosts: Vec<Host> = hosts.iter().map(|h| (*h).clone()).collect();
    fake_system::write(repo, fake, &hosts)?;
    git(repo, &["add", "-A"])?;
    git(
        repo,
        &[
            "-c",
            "user.name=demo",
            "-c",
            "user.email=demo@example.org",
            "commit",
            "-q",
            "-m",
            message,
        ],
    )?;
    println!("$ git commit -m {message:?} && git push");
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nix_settings;

    #[test]
    fn nix_settings_state_everything_the_demo_relies_on() {
        let root = nix_settings(true);
        for line in [
            "experimental-features = nix-command flakes",
            "substituters =",
            "sandbox = false",
            "build-users-group =",
        ] {
            assert!(
                root.lines().any(|l| l == line),
                "{line:?} missing in {root:?}"
            );
        }
        // A user goes through the daemon, whose build users are its own business.
        assert!(!nix_settings(false).contains("build-users-group"));
    }
}
