//! Damaged or lost state against the real binary: a commit known bad is never built or
//! activated again whatever happens to `state.json`, `status` never hangs or reads
//! without bound, and both say what happened.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homelab_agent::state::{Phase, Store, MEMORY_FILE};
use serde_json::Value;

use crate::support::{nix_available, require, Harness, Run};

/// A machine on a good generation 1 whose next commit failed its health check, was
/// rolled back and is remembered as bad. Returns the harness and the bad commit.
fn with_a_bad_commit() -> (Harness, String) {
    let mut h = Harness::new();
    h.bootstrap();
    let host = h.host("pi1");
    host.content = "next".into();
    host.healthy = false;
    let bad = h.commit("next: unhealthy");
    h.run_once().expect(1);
    assert_eq!(h.status()["bad_commit"]["commit"], bad.as_str());
    assert_eq!(h.stc_log().len(), 2, "new test, old test");
    (h, bad)
}

/// Runs the agent and kills it after `limit`: a hang fails the test instead of hanging it.
fn bounded(mut cmd: Command, limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn homelab-agent");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("homelab-agent did not finish within {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run {
        output: child.wait_with_output().expect("output"),
        elapsed: started.elapsed(),
    }
}

/// `status --json` and what it warned about: on stderr, or as an attention item when the
/// state is damaged (then the state is `unknown` and status exits 71).
fn status_json(h: &Harness) -> (Value, String) {
    let run = bounded(h.command(&["status", "--json"]), Duration::from_secs(20));
    let json: Value =
        serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout()));
    let unknown = json["state"] == "unknown";
    run.expect(if unknown { 71 } else { 0 });
    let mut warning = run.stderr();
    if unknown {
        for a in json["attention"].as_array().into_iter().flatten() {
            warning.push_str(a["message"].as_str().unwrap_or_default());
        }
    }
    (json, warning)
}

type Damage = fn(&Path);

/// After case `name`: no build and no activation since `builds` and `activations`.
fn assert_not_built_or_activated(
    h: &Harness,
    name: &str,
    builds: usize,
    activations: &[(String, String)],
) {
    assert_eq!(
        h.nix_builds(),
        builds,
        "{name}: the bad commit was built again"
    );
    assert_eq!(
        h.stc_log(),
        activations,
        "{name}: the bad commit was activated again"
    );
}

fn flip_a_bit(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(p, bytes).unwrap();
}

fn truncate(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    std::fs::write(p, &bytes[..bytes.len() * 2 / 3]).unwrap();
}

fn delete(p: &Path) {
    std::fs::remove_file(p).unwrap();
}

fn empty_object(p: &Path) {
    std::fs::write(p, "{}").unwrap();
}

fn fifo(p: &Path) {
    std::fs::remove_file(p).unwrap();
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

fn dev_zero(p: &Path) {
    std::fs::remove_file(p).unwrap();
    std::os::unix::fs::symlink("/dev/zero", p).unwrap();
}

#[test]
fn damaged_or_lost_state_never_reactivates_the_bad_commit() {
    if !nix_available() {
        return;
    }
    let (h, bad) = with_a_bad_commit();
    let builds = h.nix_builds();
    let activations = h.stc_log();
    let state = h.path("state/state.json");
    let cases: [(&str, Damage, &str); 6] = [
        ("bit flip", flip_a_bit, "state.json: checksum mismatch"),
        ("truncation", truncate, "state.json: "),
        (
            "deletion",
            delete,
            "state.json: missing (deleted or lost) while bad-commits.json remains",
        ),
        ("{}", empty_object, "state.json: has no `version`"),
        ("FIFO", fifo, "state.json: a FIFO, not a regular file"),
        (
            "symlink to /dev/zero",
            dev_zero,
            "state.json: a symbolic link to /dev/zero, not a regular file",
        ),
    ];
    for (name, damage, reason) in cases {
        damage(&state);

        // Read-only status: bounded, says what is wrong, still knows the bad commit.
        let (s, warning) = status_json(&h);
        let d = &s["state_damage"];
        assert_eq!(d["pending"], true, "{name}: {s}");
        assert!(
            d["reason"].as_str().unwrap().starts_with(reason),
            "{name}: {d}"
        );
        assert!(
            warning.contains("is damaged: state.json: "),
            "{name}: {warning}"
        );
        assert_eq!(s["bad_commit"]["commit"], bad.as_str(), "{name}");

        let history = bounded(
            h.command(&["history", "--json", "--limit", "5"]),
            Duration::from_secs(20),
        );
        // History is lost with the file: said so, not "no runs recorded yet".
        history.expect(71);
        assert!(
            history.stderr().contains("is damaged"),
            "{name}: {}",
            history.stderr()
        );

        // A run: the bad head is skipped, not built, not activated.
        let run = bounded(h.command(&["run", "--once"]), Duration::from_secs(60));
        run.expect(0);
        assert!(
            run.stderr().contains("state damaged"),
            "{name}: {}",
            run.stderr()
        );
        assert_not_built_or_activated(&h, name, builds, &activations);

        // Status says the state was recovered, and where the damaged file went.
        let (s, warning) = status_json(&h);
        let d = &s["state_damage"];
        assert!(d["pending"].is_null(), "{name}: {d}");
        assert!(
            d["reason"].as_str().unwrap().starts_with(reason),
            "{name}: {d}"
        );
        assert!(warning.is_empty(), "{name}: {warning}");
        assert_eq!(s["bad_commit"]["commit"], bad.as_str(), "{name}");
        if name == "deletion" {
            assert!(d["kept_as"].is_null(), "{name}: {d}");
        } else {
            let kept = PathBuf::from(d["kept_as"].as_str().unwrap());
            assert!(
                std::fs::symlink_metadata(&kept).is_ok(),
                "{name}: {} missing",
                kept.display()
            );
            assert_eq!(s["state_recovered_from"], d["kept_as"], "{name}");
        }
        let human = bounded(h.command(&["status"]), Duration::from_secs(20)).stdout();
        assert!(
            human.starts_with("ATTENTION:  state was damaged (")
                && human.contains("bad commits were kept"),
            "{name}: {human}"
        );
        assert!(
            std::fs::symlink_metadata(&state).unwrap().is_file(),
            "{name}: state.json not rewritten"
        );
    }
    // Damaged copies stay bounded.
    let copies = std::fs::read_dir(h.path("state"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("state.json.damaged-")
        })
        .count();
    assert!(copies <= 5, "{copies} damaged copies kept");

    // A fix on the branch still deploys.
    let mut h = h;
    h.host("pi1").healthy = true;
    h.host("pi1").content = "fixed".into();
    h.commit("fix");
    h.run_once().expect(0);
    assert_eq!(h.status()["last_run"]["outcome"], "deployed");
}

/// xorshift64*: deterministic, no crate needed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn every_truncation_and_a_thousand_bit_flips_of_a_real_state_keep_the_bad_commit() {
    if !nix_available() {
        return;
    }
    let (h, bad) = with_a_bad_commit();
    let real = std::fs::read(h.path("state/state.json")).unwrap();
    let record = std::fs::read(h.path(&format!("state/{MEMORY_FILE}"))).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = (0..real.len())
        .map(|cut| (format!("cut at {cut}"), real[..cut].to_vec()))
        .collect();
    let mut seed = 0x5EED_0BAD_C0DE_0001_u64;
    for _ in 0..1000 {
        let bit = (next(&mut seed) % (real.len() as u64 * 8)) as usize;
        let mut flipped = real.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        cases.push((format!("bit {bit} flipped"), flipped));
    }

    // Every case through the agent's own loader, as `run` loads: on a thread, so a hang
    // fails the test; panics counted.
    // In memory where there is a tmpfs: thousands of fsyncs otherwise.
    let scratch = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let dir = scratch.path().to_path_buf();
    let bad_id = bad.clone();
    let cases_for_thread = cases.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut panics = 0;
        let mut failures = Vec::new();
        for (name, bytes) in &cases_for_thread {
            let result = std::panic::catch_unwind(|| {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(MEMORY_FILE), &record).unwrap();
                std::fs::write(dir.join("state.json"), bytes).unwrap();
                let state = Store::new(&dir).load();
                match state {
                    Ok(s) if s.bad(&bad_id).is_some() && s.damage.is_some() => Ok(()),
                    Ok(s) => Err(format!(
                        "bad known: {}, damage: {:?}",
                        s.bad(&bad_id).is_some(),
                        s.damage
                    )),
                    Err(e) => Err(format!("{e:#}")),
                }
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                Err(_) => panics += 1,
            }
        }
        let _ = tx.send((panics, failures));
    });
    let (panics, failures) = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("loading the damaged states hung");
    assert_eq!(panics, 0, "{panics} of {} cases panicked", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} failed; first: {}",
        failures.len(),
        cases.len(),
        failures[0]
    );

    // And a sample through the real binary: status and run, bounded; never a rebuild.
    let builds = h.nix_builds();
    let activations = h.stc_log();
    let state = h.path("state/state.json");
    let step = cases.len() / 12;
    for (name, bytes) in cases.iter().step_by(step.max(1)) {
        std::fs::write(&state, bytes).unwrap();
        let (s, _) = status_json(&h);
        assert_eq!(s["bad_commit"]["commit"], bad.as_str(), "{name}");
        assert_eq!(s["state_damage"]["pending"], true, "{name}");
        bounded(h.command(&["run", "--once"]), Duration::from_secs(60)).expect(0);
        assert_not_built_or_activated(&h, name, builds, &activations);
    }
}

#[test]
fn an_unreadable_state_is_named_not_moved() {
    if !require("git") {
        return;
    }
    let h = Harness::new();
    let store = Store::new(&h.path("state"));
    let mut remembered = store.load().unwrap();
    remembered.mark_bad(&"b".repeat(40), Phase::Build, "failed");
    store.save(&remembered).unwrap();
    let state = store.path();
    let before = std::fs::read(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = h.command(&["status", "--json"]);
    if nix::unistd::geteuid().is_root() {
        // Root reads any file: ask as nobody, who may walk to the file but not read it,
        // with a copy of the binary nobody can run wherever the checkout is.
        for dir in [h.dir.path().to_path_buf(), h.path("state")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let copy = h.path("homelab-agent");
        std::fs::copy(crate::support::BIN, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut as_nobody = Command::new(&copy);
        as_nobody.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => as_nobody.env(key, value),
                None => as_nobody.env_remove(key),
            };
        }
        use std::os::unix::process::CommandExt;
        as_nobody.uid(65534).gid(65534);
        cmd = as_nobody;
    } else {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let run = bounded(cmd, Duration::from_secs(20));
    let said = run.stdout() + &run.stderr();
    assert!(
        said.contains(&format!(
            "cannot read {}: permission denied",
            state.display()
        )) && said.contains("sudo"),
        "{said}"
    );
    // Not damage: nothing is moved aside, the file is as it was.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(std::fs::read_dir(h.path("state")).unwrap().count(), 2);
    let (s, _) = status_json(&h);
    assert!(s["state_damage"].is_null(), "{s}");
    // (status names a bad commit only while it is the branch head; there is none here)
    assert!(store.peek().unwrap().bad(&"b".repeat(40)).is_some());
}

#[test]
fn retry_forgets_the_bad_commit_in_both_records() {
    if !nix_available() {
        return;
    }
    let (h, bad) = with_a_bad_commit();
    let run = h.agent(&["retry"]);
    run.expect(0);
    assert!(run.stdout().contains(&bad[..8]), "{}", run.stdout());
    let record = std::fs::read_to_string(h.path(&format!("state/{MEMORY_FILE}"))).unwrap();
    assert!(
        !record.contains(&bad),
        "retry left the commit in {MEMORY_FILE}: {record}"
    );
    // Damage after a retry must not bring the forgotten commit back: it is tried again.
    std::fs::write(h.path("state/state.json"), "[]").unwrap();
    let builds = h.nix_builds();
    h.run_once().expect(1);
    assert!(h.nix_builds() > builds, "the retried commit was not built");
    let s = h.status();
    assert_eq!(s["last_run"]["commit"], bad.as_str());
    assert_eq!(s["last_run"]["outcome"], "failed");
}

/// A fetch killed while it held a ref lock leaves `candidate.lock` in the git cache;
/// the next run removes it (it holds the run lock: the lock file is stale) and deploys.
#[test]
fn a_lock_file_a_killed_fetch_left_in_the_cache_does_not_block_the_next_run() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let refs = h.path("state/cache.git/refs/heads/homelab-agent");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("candidate.lock"), "").unwrap();
    h.host("pi1").content = "second".into();
    let second = h.commit("second");
    let run = h.run_once();
    run.expect(0);
    assert!(
        run.stderr().contains("removed 1 lock file"),
        "{}",
        run.stderr()
    );
    assert_eq!(h.status()["deployed"]["commit"], second.as_str());
}
