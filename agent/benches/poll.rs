//! The cost of a poll that finds nothing new, measured against the floor: `git ls-remote`
//! of the same ref from the same server (git daemon on loopback). Also counts the nix
//! processes the polls spawned, the bytes they wrote under the state directory, and the
//! agent's peak memory. A measurement, not a test: it asserts nothing about time.
//!
//! Run: `cargo bench --bench poll` (needs git; nix is not needed: a poll must not use it).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 40;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let work = root.join("work");
    run("git", &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    std::fs::write(work.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
    run_in(&work, &["add", "-A"]);
    run_in(
        &work,
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.org",
            "commit",
            "-q",
            "-m",
            "bench",
        ],
    );
    run(
        "git",
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            served.join("homelab.git").to_str().unwrap(),
        ],
    );
    let head = out_in(&work, &["rev-parse", "HEAD"]);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", served.display()))
        .arg(&served)
        .stderr(Stdio::null())
        // `git daemon` runs `git-daemon` as a child: stop the whole group at the end.
        .process_group(0)
        .spawn()
        .expect("git daemon");
    let url = format!("git://127.0.0.1:{port}/homelab.git");
    wait_for(&url);

    // A machine that already handled `head`; nix is a shim that counts its calls.
    let state = root.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("state.json"),
        format!("{{\"version\":1,\"last_handled\":\"{head}\"}}"),
    )
    .unwrap();
    let shim = root.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let counter = root.join("nix-calls");
    std::fs::write(
        shim.join("nix"),
        format!("#!/bin/sh\necho x >> {}\nexit 1\n", counter.display()),
    )
    .unwrap();
    std::fs::set_permissions(shim.join("nix"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{url}\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{s}\"\nruntime_dir = \"{r}/runtime\"\nprofile = \"{r}/profile\"\ncurrent_system = \"{r}/current\"\nbooted_system = \"{r}/booted\"\n",
            s = state.display(),
            r = root.display()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let before = snapshot(&state);

    let agent = env!("CARGO_BIN_EXE_homelab-agent");
    let poll = || {
        let status = Command::new(agent)
            .arg("--config")
            .arg(&config)
            .args(["run", "--once"])
            .env("PATH", &path)
            .env("HOMELAB_AGENT_LOG", "warn")
            .status()
            .unwrap();
        assert!(status.success(), "the poll failed");
    };
    let ls_remote = || {
        let out = Command::new("git")
            .args(["ls-remote", &url, "refs/heads/main"])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    poll();
    ls_remote();
    let agent_times = time(ROUNDS, poll);
    let git_times = time(ROUNDS, ls_remote);
    let after = snapshot(&state);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = daemon.wait();

    let (a, g) = (median(&agent_times), median(&git_times));
    let nix_calls = std::fs::read_to_string(&counter)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let written: u64 = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| f.1)
        .sum();
    println!("no-change poll, {ROUNDS} rounds each, git daemon on loopback");
    println!("  homelab-agent run --once   median {:>7.2} ms", ms(a));
    println!("  git ls-remote (same ref)   median {:>7.2} ms", ms(g));
    println!(
        "  ratio agent / ls-remote    {:.2}",
        a.as_secs_f64() / g.as_secs_f64()
    );
    println!("  nix processes spawned      {nix_calls}");
    println!("  bytes written to state dir {written}");
    println!("  agent peak RSS             {} KiB", peak_child_rss_kib());
}

fn time(n: usize, f: impl Fn()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Largest resident set of any child waited for so far (the agent's runs dominate: git
/// ls-remote is smaller). Linux reports KiB.
fn peak_child_rss_kib() -> i64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(-1)
}

/// (path, size, mtime) of every file under `dir`.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        files.push((e.path(), m.len(), m.modified().unwrap()));
    }
    files
}

fn wait_for(url: &str) {
    for _ in 0..100 {
        if Command::new("git")
            .args(["ls-remote", url])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("git daemon did not come up");
}

fn run(program: &str, args: &[&str]) {
    assert!(
        Command::new(program).args(args).status().unwrap().success(),
        "{program} {args:?}"
    );
}

fn run_in(dir: &Path, args: &[&str]) {
    assert!(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .status()
            .unwrap()
            .success(),
        "git {args:?}"
    );
}

fn out_in(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string()
}
