//! The cost of a poll that finds nothing new, measured against the floor: `git ls-remote`
//! of the same ref from the same server (git daemon on loopback), in paired rounds: wall
//! time and CPU time (user + sys of the process, from its rusage). Also counts the nix
//! processes the polls spawned, the bytes they changed under the state directory and
//! wrote to storage (`/proc/<pid>/io` write_bytes), and the resident memory of the daemon
//! (`run` without `--once`) after 100 polls (each asked for with SIGUSR1). A
//! measurement, not a test: it asserts nothing about time.
//!
//! Run: `cargo bench --bench poll` (needs git; nix is not needed: a poll must not use it).
//! `HOMELAB_BENCH_AGENT=/path/to/homelab-agent` measures another build instead.

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
    // Written by the agent's own store, so the format is always the current one.
    homelab_agent::state::Store::new(&state)
        .save(&homelab_agent::state::State {
            last_handled: Some(head.clone()),
            ..Default::default()
        })
        .expect("write the state");
    let shim = root.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let counter = root.join("nix-calls");
    std::fs::write(
        shim.join("nix"),
        format!("#!/bin/sh\necho x >> {}\nexit 1\n", counter.display()),
    )
    .unwrap();
    std::fs::set_permissions(shim.join("nix"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The runtime directory on a tmpfs, as /run is under systemd: what a poll writes
    // there (last-poll.json) never reaches storage, and write_bytes counts storage.
    let volatile = tempfile::Builder::new()
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("tempdir for the runtime directory");
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{url}\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{s}\"\nruntime_dir = \"{rt}\"\nprofile = \"{r}/profile\"\ncurrent_system = \"{r}/current\"\nbooted_system = \"{r}/booted\"\n",
            s = state.display(),
            r = root.display(),
            rt = volatile.path().join("runtime").display(),
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let before = snapshot(&state);

    // HOMELAB_BENCH_AGENT: another build of the agent, to compare two builds on one machine.
    let agent_override = std::env::var("HOMELAB_BENCH_AGENT").ok();
    let agent = agent_override
        .as_deref()
        .unwrap_or(env!("CARGO_BIN_EXE_homelab-agent"));
    let poll = || {
        let mut c = Command::new(agent);
        c.arg("--config")
            .arg(&config)
            .args(["run", "--once"])
            .env("PATH", &path)
            .env("HOMELAB_AGENT_LOG", "warn");
        c
    };
    let ls_remote = || {
        let mut c = Command::new("git");
        c.args(["ls-remote", &url, "refs/heads/main"]);
        c
    };
    measure(poll());
    measure(ls_remote());
    // Paired: each round runs the agent, then `git ls-remote`, so both see the same
    // machine load.
    let (mut agent_runs, mut git_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        agent_runs.push(measure(poll()));
        git_runs.push(measure(ls_remote()));
    }
    let after = snapshot(&state);
    let rss = daemon_rss(agent, root, volatile.path(), &url, &state, &path);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = daemon.wait();

    let nix_calls = std::fs::read_to_string(&counter)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let changed: u64 = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| f.1.max(1))
        .sum::<u64>()
        + before.iter().filter(|f| !after.contains(f)).count() as u64;
    let storage: u64 = agent_runs.iter().map(|r| r.write_bytes).sum();
    let median_of = |runs: &[Sample], f: fn(&Sample) -> Duration| {
        median(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let (aw, ac) = (
        median_of(&agent_runs, |r| r.wall),
        median_of(&agent_runs, |r| r.cpu),
    );
    let (gw, gc) = (
        median_of(&git_runs, |r| r.wall),
        median_of(&git_runs, |r| r.cpu),
    );
    println!("no-change poll, {ROUNDS} paired rounds, git daemon on loopback (medians)");
    println!("                               wall ms   cpu ms (user+sys)");
    println!(
        "  homelab-agent run --once   {:>8.2} {:>8.2}",
        ms(aw),
        ms(ac)
    );
    println!(
        "  git ls-remote (same ref)   {:>8.2} {:>8.2}",
        ms(gw),
        ms(gc)
    );
    println!(
        "  ratio agent / ls-remote    {:>8.2} {:>8.2}",
        aw.as_secs_f64() / gw.as_secs_f64(),
        ac.as_secs_f64() / gc.as_secs_f64().max(1e-6)
    );
    println!("  nix processes spawned      {nix_calls}");
    println!("  state dir bytes changed    {changed}");
    println!("  agent storage write_bytes  {storage} (sum over all polls, /proc/<pid>/io)");
    match rss {
        Some([rss, hwm, anon, file]) => println!(
            "  daemon RSS after {DAEMON_POLLS} polls   {:.1} MiB (peak {:.1} MiB; anonymous {:.1} MiB, file-backed {:.1} MiB)",
            mib(rss),
            mib(hwm),
            mib(anon),
            mib(file)
        ),
        None => println!("  daemon RSS after {DAEMON_POLLS} polls   unknown (see above)"),
    }
    println!("  targets: cpu <= 10 ms, wall ratio <= 1.00, 0 nix, 0 bytes, RSS <= 8 MiB");
}

const DAEMON_POLLS: usize = 100;

/// One finished process: wall time, its CPU (user + sys, from the rusage of waited-for
/// children) and the bytes it caused to be written to storage.
struct Sample {
    wall: Duration,
    cpu: Duration,
    write_bytes: u64,
}

fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn measure(mut command: Command) -> Sample {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    command.stdout(Stdio::null());
    let cpu = children_cpu();
    let t = Instant::now();
    let mut child = command.spawn().expect("spawn");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Exited but not reaped: its /proc/<pid>/io still holds the totals.
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");
    let wall = t.elapsed();
    let write_bytes = io_write_bytes(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{command:?} failed");
    Sample {
        wall,
        cpu: children_cpu() - cpu,
        write_bytes,
    }
}

fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("write_bytes:")
                        .map(|v| v.trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

/// `run` without `--once`, told to poll now by SIGUSR1 [`DAEMON_POLLS`] times: its
/// resident and peak memory (KiB) afterwards.
fn daemon_rss(
    agent: &str,
    root: &Path,
    volatile: &Path,
    url: &str,
    state: &Path,
    path: &str,
) -> Option<[u64; 4]> {
    let runtime = volatile.join("daemon-runtime");
    let config = root.join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{url}\"\n[host]\nname = \"pi1\"\n[run]\ninterval = \"1h\"\njitter = \"0s\"\n[paths]\nstate_dir = \"{s}\"\nruntime_dir = \"{r}\"\nprofile = \"{d}/profile\"\ncurrent_system = \"{d}/current\"\nbooted_system = \"{d}/booted\"\n",
            s = state.display(),
            r = runtime.display(),
            d = root.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(agent)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("PATH", path)
        .env("HOMELAB_AGENT_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the daemon");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let last_poll = runtime.join("last-poll.json");
    let mut seen = wait_cycle(&last_poll, None);
    let ticks_before = cpu_ticks(pid.as_raw() as u32);
    for _ in 0..DAEMON_POLLS {
        if seen.is_none() {
            break;
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        seen = wait_cycle(&last_poll, seen);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
    };
    let ticks = cpu_ticks(pid.as_raw() as u32).saturating_sub(ticks_before);
    // USER_HZ is 100 on Linux.
    println!(
        "  daemon CPU per poll         {:.2} ms (its own and its reaped children's, over {DAEMON_POLLS} polls)",
        ticks as f64 * 10.0 / DAEMON_POLLS as f64
    );
    if std::env::var_os("HOMELAB_BENCH_SMAPS").is_some() {
        print_smaps(pid.as_raw() as u32);
    }
    let found = match seen {
        Some(_) => match (
            field("VmRSS:"),
            field("VmHWM:"),
            field("RssAnon:"),
            field("RssFile:"),
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        },
        None => {
            eprintln!("the daemon did not finish a cycle in time");
            None
        }
    };
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    found
}

/// utime + stime + cutime + cstime of a live process, in clock ticks (/proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// With `HOMELAB_BENCH_SMAPS=1`: the daemon's resident memory per mapped file (and
/// anonymous memory per kind), largest first, from `/proc/<pid>/smaps`.
fn print_smaps(pid: u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: Vec<(String, u64)> = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address perms offset dev inode [path].
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let file = path.rsplit('/').next().unwrap_or(path);
            name = match file {
                "" => format!("[anon {perms}]"),
                _ => format!("{file} {perms}"),
            };
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 += kib,
                None => by_name.push((name.clone(), kib)),
            }
        }
    }
    by_name.sort_by_key(|e| std::cmp::Reverse(e.1));
    println!("daemon resident memory per mapping (KiB, /proc/{pid}/smaps):");
    for (name, kib) in by_name.iter().filter(|e| e.1 > 0) {
        println!("  {kib:>6}  {name}");
    }
}

/// Waits until the daemon finished a cycle after `since`: last-poll.json rewritten, with
/// the next poll time (written last in a cycle). The file's mtime, or None on a timeout.
fn wait_cycle(file: &Path, since: Option<std::time::SystemTime>) -> Option<std::time::SystemTime> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(m) = std::fs::metadata(file).and_then(|m| m.modified()) {
            let done = std::fs::read_to_string(file).is_ok_and(|t| t.contains("\"next_poll\":\""));
            if Some(m) != since && done {
                return Some(m);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
