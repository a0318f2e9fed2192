//! A deploy of a prebuilt commit against a native build of the same commit, paired: the
//! same machine state, the same commit, the same system; only how the system is obtained
//! differs. The commit's host evaluates at a known cost (`eval-cost:N`, N strings made and
//! forced: HOMELAB_BENCH_EVAL_COST, default 3,000,000). `publish` builds and signs it once
//! into a `file://` cache (not measured); before each measured `run --once`, the machine
//! (state, profiles, fake root) is restored from a snapshot taken before the deploy and
//! the system is deleted from the store, so the native run evaluates and builds it and
//! the prebuilt run fetches it from the cache.
//!
//! Measured per run, by a fresh measuring process (this benchmark run again with
//! `--measure`: it starts the agent, waits, and reports its own getrusage(RUSAGE_CHILDREN),
//! which covers the agent and every process the agent started and waited for, and no
//! earlier run): wall time, CPU time (user + sys), and peak memory (the largest resident
//! set of any one of those processes, ru_maxrss). Also: the nix calls
//! each run made (a shim logs their arguments): the prebuilt run must make no `nix
//! build`/`nix eval` of the flake. A measurement, not a test: it asserts nothing about
//! time. Medians of HOMELAB_BENCH_PAIRS pairs (default 5), order alternating.
//!
//! Run: `nice -n 10 cargo bench --features demo --bench prebuilt` (needs nix, git,
//! ssh-keygen). `HOMELAB_BENCH_AGENT=/path/to/homelab-agent` measures another build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homelab_agent::fake_system::{self, Host};

const NIX_CONFIG_BASE: &str =
    "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\n";

#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--measure") {
        return measure(&args[2..]);
    }
    let cost: u64 = env_or("HOMELAB_BENCH_EVAL_COST", 3_000_000);
    let pairs: usize = env_or("HOMELAB_BENCH_PAIRS", 5);
    let agent = std::env::var("HOMELAB_BENCH_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_homelab-agent")));
    let dir = tempfile::Builder::new()
        .prefix("hla-bench-prebuilt-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let repo = root.join("homelab");
    let live = root.join("machine");
    for d in [&repo, &live] {
        std::fs::create_dir_all(d).unwrap();
    }
    run("git", &["init", "-q", "-b", "main", repo.to_str().unwrap()]);

    // The machine's first commit, deployed natively: the state a Pi is in before a push.
    let fake = live.join("fake");
    std::fs::create_dir_all(fake.join("run")).unwrap();
    std::fs::create_dir_all(live.join("profiles")).unwrap();
    let mut host = Host::new("pi1");
    host.content = "first".into();
    commit(&repo, &fake, &host, "first");

    // Keys: the cache's (nix) and the manifest's (ssh).
    let cache = root.join("cache");
    let cache_secret = root.join("cache.sec");
    let secret = nix_out(
        &["key", "generate-secret", "--key-name", "bench-cache-1"],
        None,
    );
    std::fs::write(&cache_secret, &secret).unwrap();
    let cache_public = nix_out(&["key", "convert-secret-to-public"], Some(&cache_secret));
    let key = root.join("publisher");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = root.join("allowed_signers");
    std::fs::write(&allowed, format!("publisher {}", pubkey.trim())).unwrap();

    // nix and nix-store through a shim that logs each call's arguments.
    let shim = root.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let calls = root.join("nix-calls.log");
    for tool in ["nix", "nix-store"] {
        let real = which(tool);
        let path = shim.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexec {} \"$@\"\n",
                calls.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Each run gets an empty nix cache directory (XDG_CACHE_HOME): a Pi never evaluated
    // this commit, so nix's evaluation cache (filled by `publish` on this same machine)
    // must not answer for the native run; within a run it works as on a Pi.
    let nix_config = format!(
        "{NIX_CONFIG_BASE}substituters = file://{}\ntrusted-public-keys = {}\n",
        cache.display(),
        cache_public.trim()
    );
    let config = |prebuilt: bool| {
        let path = root.join(if prebuilt {
            "prebuilt.toml"
        } else {
            "native.toml"
        });
        let m = live.display();
        let text = format!(
            "[source]\nurl = \"{repo}\"\nbranch = \"main\"\n\n[host]\nname = \"pi1\"\n\n\
             [paths]\nstate_dir = \"{m}/state\"\nruntime_dir = \"{m}/runtime\"\n\
             profile = \"{m}/profiles/system\"\ncurrent_system = \"{m}/fake/run/current-system\"\n\
             booted_system = \"{m}/fake/run/booted-system\"\n\n[build]\ntimeout = \"10m\"\n\n\
             [activation]\nmode = \"direct\"\ntimeout = \"60s\"\n\n[health]\nsettle = \"0s\"\n\
             timeout = \"10s\"\ninterval = \"200ms\"\n\n[prebuilt]\nenable = {prebuilt}\n\
             allowed_signers_file = \"{allowed}\"\nwait = \"0s\"\n",
            repo = repo.display(),
            allowed = allowed.display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let (native_toml, prebuilt_toml) = (config(false), config(true));
    let agent_run = |config: &Path| -> (Sample, i32) {
        let path = format!(
            "{}:{}",
            shim.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let xdg = tempfile::Builder::new()
            .prefix("xdg-cache-")
            .tempdir_in(root)
            .expect("a cache directory");
        let out = Command::new(std::env::current_exe().expect("the benchmark's own path"))
            .arg("--measure")
            .arg(&agent)
            .arg("--config")
            .arg(config)
            .args(["run", "--once"])
            .env("PATH", path)
            .env("NIX_CONFIG", &nix_config)
            .env("HOMELAB_AGENT_LOG", "warn")
            .env("XDG_CACHE_HOME", xdg.path())
            .stdin(Stdio::null())
            .output()
            .expect("the measuring process");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |i: usize| -> i64 {
            text.split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("measure said {text:?}"))
        };
        let sample = Sample {
            wall: Duration::from_micros(field(1) as u64),
            cpu: Duration::from_micros(field(2) as u64),
            max_rss_kib: field(3),
        };
        (sample, field(0) as i32)
    };
    let (_, code) = agent_run(&native_toml);
    assert_eq!(code, 0, "the first deploy failed");

    // The commit measured: its evaluation costs `cost` strings.
    host.content = "second".into();
    host.build = format!("eval-cost:{cost}");
    let head = commit(&repo, &fake, &host, "second, with a costly evaluation");
    let published = Command::new(&agent)
        .args(["publish", "--no-push", "--json", "--to"])
        .arg(format!(
            "file://{}?secret-key={}",
            cache.display(),
            cache_secret.display()
        ))
        .arg("--ssh-key")
        .arg(&key)
        .arg("--repo")
        .arg(&repo)
        .env("NIX_CONFIG", format!("{NIX_CONFIG_BASE}substituters =\n"))
        .stdin(Stdio::null())
        .output()
        .expect("publish");
    assert!(published.status.success(), "publish: {published:?}");
    let out: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let system = out["hosts"]["pi1"].as_str().unwrap().to_string();

    let snapshot = root.join("snapshot");
    copy_tree(&live, &snapshot);
    let fresh = || {
        std::fs::remove_dir_all(&live).unwrap();
        copy_tree(&snapshot, &live);
        // Not in the store: the native run builds it, the prebuilt one fetches it.
        let _ = Command::new("nix-store")
            .args(["--delete", &system])
            .env("NIX_CONFIG", NIX_CONFIG_BASE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&calls);
    };
    let nix_calls = || std::fs::read_to_string(&calls).unwrap_or_default();

    println!(
        "prebuilt vs native deploy of {} (evaluation: {cost} strings), {pairs} pairs",
        &head[..12]
    );
    let (mut native, mut prebuilt) = (Vec::new(), Vec::new());
    let (mut native_calls, mut prebuilt_calls) = (String::new(), String::new());
    for i in 0..pairs {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_prebuilt in order {
            fresh();
            let (sample, code) = agent_run(if is_prebuilt {
                &prebuilt_toml
            } else {
                &native_toml
            });
            assert_eq!(code, 0, "deploy failed (prebuilt: {is_prebuilt})");
            assert_eq!(
                std::fs::read_link(live.join("fake/run/current-system"))
                    .unwrap()
                    .display()
                    .to_string(),
                system,
                "the run did not deploy the published system"
            );
            if is_prebuilt {
                prebuilt.push(sample);
                prebuilt_calls = nix_calls();
            } else {
                native.push(sample);
                native_calls = nix_calls();
            }
        }
    }
    let evaluations = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("nix ") && (l.contains(" build ") || l.contains(" eval ")))
            .count()
    };
    report("native build", &native, evaluations(&native_calls));
    report("prebuilt", &prebuilt, evaluations(&prebuilt_calls));
    println!("\nnix calls of the last native run:\n{native_calls}");
    println!("nix calls of the last prebuilt run:\n{prebuilt_calls}");
}

fn report(name: &str, samples: &[Sample], evaluations: usize) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let (lo, hi) = (v[0], v[v.len() - 1]);
        (v[v.len() / 2], lo, hi)
    };
    let (wall, wl, wh) = median(samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect());
    let (cpu, cl, ch) = median(samples.iter().map(|s| s.cpu.as_secs_f64() * 1e3).collect());
    let (rss, rl, rh) = median(
        samples
            .iter()
            .map(|s| s.max_rss_kib as f64 / 1024.0)
            .collect(),
    );
    println!(
        "{name:>13}: wall {wall:.0} ms ({wl:.0}–{wh:.0}), CPU {cpu:.0} ms ({cl:.0}–{ch:.0}), \
         peak RSS {rss:.1} MiB ({rl:.1}–{rh:.1}); nix build/eval calls in a run: {evaluations}"
    );
}

/// The measuring process: runs `args` (the agent and its arguments), waits, and prints
/// "exit-code wall-µs cpu-µs maxrss-KiB" for it and everything it waited for.
fn measure(args: &[String]) {
    let started = Instant::now();
    let status = Command::new(&args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .status()
        .expect("homelab-agent");
    let wall = started.elapsed();
    let r = libc_rusage::children();
    println!(
        "{} {} {} {}",
        status.code().unwrap_or(-1),
        wall.as_micros(),
        (r.user + r.system).as_micros(),
        r.ru_maxrss
    );
}

/// getrusage(RUSAGE_CHILDREN) through the nix crate.
mod libc_rusage {
    use std::time::Duration;

    pub struct Rusage {
        pub user: Duration,
        pub system: Duration,
        pub ru_maxrss: i64,
    }

    pub fn children() -> Rusage {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .expect("getrusage");
        let d = |t: nix::sys::time::TimeVal| {
            Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
        };
        Rusage {
            user: d(u.user_time()),
            system: d(u.system_time()),
            ru_maxrss: u.max_rss(),
        }
    }
}

fn commit(repo: &Path, fake: &Path, host: &Host, message: &str) -> String {
    fake_system::write(repo, fake, std::slice::from_ref(host)).unwrap();
    run_in(repo, &["add", "-A"]);
    run_in(
        repo,
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.org",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    run("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
}

fn nix_out(args: &[&str], stdin: Option<&Path>) -> String {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG_BASE);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = cmd.output().expect("nix");
    assert!(out.status.success(), "nix {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}");
}

fn run_in(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}
