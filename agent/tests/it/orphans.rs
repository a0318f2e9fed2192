//! Activations that outlive their agent, with the real nix and git (direct mode).
//!
//! `switch-to-configuration` runs in its own process group, so a SIGKILL of the agent
//! alone leaves it running. The next run must wait for it (or stop it) before switching
//! anything, or the orphan finishes afterwards and puts the unchecked system back live.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::support::{base, nix_available, processes_matching, Harness};

/// Every process whose environment holds `entry`, with its command line.
fn tagged(entry: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// The process group of `pid`, from /proc/PID/stat ("pid (comm) state ppid pgrp ...").
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Samples /proc while a test runs and remembers whether two `switch-to-configuration`
/// of this harness (marked by `entry` in their environment) ever ran at once.
struct OverlapWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl OverlapWatch {
    fn start(entry: String) -> OverlapWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut overlaps = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                // By process group: each activation is one (direct mode), and a fork of
                // the script shows the same command line for a moment.
                let running: HashSet<i32> = tagged(&entry)
                    .into_iter()
                    .filter(|(_, cmd)| cmd.contains("bin/switch-to-configuration"))
                    .filter_map(|(pid, _)| process_group(pid))
                    .collect();
                if running.len() > 1 {
                    overlaps.push(format!("{running:?}"));
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            overlaps
        });
        OverlapWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn marker(h: &Harness) -> (String, String) {
    let value = base(&h.path(""));
    ("HOMELAB_TEST_MACHINE".to_string(), value)
}

fn spawn_run(h: &Harness) -> Child {
    let (k, v) = marker(h);
    let mut cmd = h.command(&["run", "--once"]);
    cmd.env(k, v)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    cmd.spawn().unwrap()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn activations_of(h: &Harness, system: &str) -> usize {
    h.stc_log()
        .iter()
        .filter(|(out, action)| out == system && action == "test")
        .count()
}

#[test]
fn two_kills_during_a_slow_activation_end_on_the_profiles_system() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.host("pi1").content = "slow".into();
    h.host("pi1").mode = "sleep:3".into();
    h.commit("slow activation");
    let (k, v) = marker(&h);
    let entry = format!("{k}={v}");
    let watch = OverlapWatch::start(entry.clone());

    let mut new = String::new();
    for round in 1..=2 {
        let mut agent = spawn_run(&h);
        wait_for(
            "the new system's activation",
            Duration::from_secs(90),
            || {
                let log = h.stc_log();
                if let Some((out, _)) = log
                    .iter()
                    .find(|(out, a)| *out != base(&old) && a == "test")
                {
                    new = out.clone();
                }
                !new.is_empty() && activations_of(&h, &new) == round
            },
        );
        // The agent alone, as `kill -9 <pid>` or the OOM killer does.
        kill(Pid::from_raw(agent.id() as i32), Signal::SIGKILL).unwrap();
        agent.wait().unwrap();
    }
    let run = h.run_once();
    assert!(
        run.stderr().contains("interrupted"),
        "no recovery: {}",
        run.stderr()
    );
    // Any orphan would have finished by now.
    std::thread::sleep(Duration::from_secs(4));
    let overlaps = watch.finish();
    assert!(overlaps.is_empty(), "two activations at once: {overlaps:?}");
    assert_eq!(
        h.current_system(),
        Some(old.clone()),
        "stc: {:?}",
        h.stc_log()
    );
    assert_eq!(h.profile_system(), Some(old));
    assert_eq!(activations_of(&h, &new), 2, "stc: {:?}", h.stc_log());
    let s = h.status();
    assert!(
        s.to_string().contains("interrupted 2 times"),
        "the commit is not remembered as bad: {s}"
    );
    assert!(
        tagged(&entry).is_empty(),
        "left running: {:?}",
        tagged(&entry)
    );
    // And it stays that way.
    h.run_once().expect(0);
    assert_eq!(activations_of(&h, &new), 2);
}

/// A tiny deterministic PRNG (xorshift64*): the seed is printed, so a failure repeats.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Kills at uniformly random times, three ways: the agent alone, its process group,
/// and its whole process tree (as `systemctl stop` with KillMode=control-group does).
/// After each kill one more run must leave the profile's system live, no intent, no
/// activation running, and no two activations may ever have overlapped.
#[test]
fn random_kills_never_leave_an_unverified_system_live() {
    if !nix_available() {
        return;
    }
    let rounds: u64 = std::env::var("HOMELAB_TEST_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("HOMELAB_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234);
    // Four machines side by side (each round mostly waits): a quarter of the rounds each.
    const MACHINES: u64 = 4;
    eprintln!("random kills: {rounds} rounds on {MACHINES} machines, HOMELAB_TEST_SEED={seed}");
    let threads: Vec<_> = (0..MACHINES)
        .map(|m| {
            let share = rounds / MACHINES + u64::from(m < rounds % MACHINES);
            std::thread::spawn(move || kill_rounds(seed.wrapping_add(m), share))
        })
        .collect();
    let mut orphaned = 0;
    for t in threads {
        orphaned += t.join().expect("a machine failed (its panic is above)");
    }
    eprintln!("{orphaned} of {rounds} kills left an activation running");
    // The case that matters must have happened, or the test proved nothing.
    assert!(
        orphaned * 20 >= rounds,
        "only {orphaned} of {rounds} kills left an activation running"
    );
}

/// `rounds` random kills on one machine; returns how many left an activation running.
fn kill_rounds(seed: u64, rounds: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut h = Harness::new();
    h.bootstrap();
    h.activation_timeout = "20s".into();
    // How long one whole deployment takes here and now: kills land uniformly within it.
    h.host("pi1").content = "calibration".into();
    h.host("pi1").mode = "sleep:0.5".into();
    h.commit("calibration");
    let span = h.run_once().expect(0).elapsed.as_millis().max(200) as u64;
    let (k, v) = marker(&h);
    let entry = format!("{k}={v}");
    let watch = OverlapWatch::start(entry.clone());
    let mut kinds = [0u32; 3];
    let mut orphaned = 0;
    for round in 0..rounds {
        // A new commit every round (a kill must be able to land mid-activation); every
        // third one fails its health checks.
        h.host("pi1").content = format!("round {round}");
        h.host("pi1").healthy = round % 3 != 2;
        h.host("pi1").mode = "sleep:0.5".into();
        h.commit(&format!("round {round}"));
        let agent = spawn_run(&h);
        let pid = Pid::from_raw(agent.id() as i32);
        std::thread::sleep(Duration::from_millis(rng.below(span)));
        let how = rng.below(3) as usize;
        kinds[how] += 1;
        match how {
            0 => {
                let _ = kill(pid, Signal::SIGKILL);
            }
            1 => {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            _ => {
                for (p, _) in tagged(&entry) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        let mut agent = agent;
        agent.wait().unwrap();
        if tagged(&entry)
            .iter()
            .any(|(_, c)| c.contains("switch-to-configuration"))
        {
            orphaned += 1;
        }
        let run = h.run_once();
        let context = || {
            format!(
                "round {round} (seed {seed}, kill {how}), exit {}:\n{}\nstc: {:?}",
                run.code(),
                run.stderr(),
                h.stc_log().iter().rev().take(6).collect::<Vec<_>>()
            )
        };
        assert!(
            [0, 1, 75].contains(&run.code()),
            "unexpected exit: {}",
            context()
        );
        assert_eq!(h.current_system(), h.profile_system(), "{}", context());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(h.path("state/state.json")).unwrap()).unwrap();
        assert!(state["intent"].is_null(), "intent left: {}", context());
        let left: Vec<_> = tagged(&entry)
            .into_iter()
            .filter(|(_, c)| c.contains("switch-to-configuration"))
            .collect();
        assert!(left.is_empty(), "{left:?} left running: {}", context());
    }
    let overlaps = watch.finish();
    assert!(overlaps.is_empty(), "two activations at once: {overlaps:?}");
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_matching(&base(&h.path("")));
    assert!(left.is_empty(), "left running: {left:?}");
    eprintln!(
        "seed {seed}: kills within {span} ms: agent alone {}, process group {}, whole tree {}; {orphaned} left an activation running",
        kinds[0], kinds[1], kinds[2]
    );
    orphaned
}
