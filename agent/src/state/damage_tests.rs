//! Damaged state records: every truncation, a thousand bit flips, and each kind of thing
//! that is not a state file. None may panic, hang, or forget a bad commit.

use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::health::{CheckResult, Verdict};

const BAD: &str = "badbadbadbadbadbadbadbadbadbadbadbadbad0";
const GOOD: &str = "1111111111111111111111111111111111111111";

/// A state as the agent writes it after a deployment and a rolled-back bad commit.
fn realistic(store: &Store) -> State {
    let mut state = store.load().unwrap();
    let system = "/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-nixos-system-pi1";
    let mut deployed = Run::new(Outcome::Deployed);
    deployed.commit = Some(GOOD.into());
    deployed.subject = Some("base system".into());
    deployed.system = Some(system.into());
    deployed.generation = Some(1);
    deployed.checks = vec![CheckResult {
        name: "marker".into(),
        verdict: Verdict::Healthy("exit status 0".into()),
    }];
    deployed.duration_ms = 1234;
    state.push_run(deployed);
    let mut failed = Run::new(Outcome::Failed);
    failed.commit = Some(BAD.into());
    failed.subject = Some("next \"quoted\" ünïcode".into());
    failed.phase = Some(Phase::Health);
    failed.error = Some("health check failed: marker: exit status 1".into());
    failed.hint = Some("push a fix".into());
    failed.rolled_back = Some(true);
    failed.checks = vec![CheckResult {
        name: "marker".into(),
        verdict: Verdict::Unhealthy("exit status 1".into()),
    }];
    state.push_run(failed);
    state.deployed = Some(Deployed {
        commit: Some(GOOD.into()),
        subject: Some("base system".into()),
        system: system.into(),
        generation: Some(1),
        at: now(),
    });
    state.last_handled = Some(BAD.into());
    state.mark_bad(
        BAD,
        Phase::Health,
        "health check failed: marker: exit status 1",
    );
    state.count_interruption(GOOD);
    store.save(&state).unwrap();
    state
}

/// A scratch directory, in memory where there is a tmpfs: thousands of fsyncs otherwise.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn setup() -> (tempfile::TempDir, Store, Vec<u8>) {
    let dir = scratch();
    let store = Store::new(dir.path());
    realistic(&store);
    let bytes = std::fs::read(store.path()).unwrap();
    (dir, store, bytes)
}

/// Runs `f` on a thread; a hang fails the test instead of hanging it.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not finish within {secs} s: a hang"),
    }
}

/// Puts `bytes` at `file` in a fresh copy of the sound records, loads, and checks the
/// damage was detected, moved aside and reported, and the bad commit is still known.
fn check_damaged(
    dir: &Path,
    file: &str,
    sound: &[(String, Vec<u8>)],
    bytes: &[u8],
) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    }
    for (name, content) in sound {
        std::fs::write(dir.join(name), content).map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join(file), bytes).map_err(|e| e.to_string())?;
    let store = Store::new(dir);
    let peeked = store.peek().map_err(|e| format!("peek: {e:#}"))?;
    if peeked.bad(BAD).is_none() {
        return Err("peek forgot the bad commit".into());
    }
    if !peeked.damage.as_ref().is_some_and(|d| d.pending) {
        return Err("peek did not report the damage".into());
    }
    let state = store.load().map_err(|e| format!("load: {e:#}"))?;
    if state.bad(BAD).is_none() {
        return Err("load forgot the bad commit".into());
    }
    let Some(damage) = &state.damage else {
        return Err("load did not report the damage".into());
    };
    if !damage.reason.starts_with(&format!("{file}: ")) || damage.pending {
        return Err(format!("wrong damage record {damage:?}"));
    }
    if file == FILE {
        let kept = damage.kept_as.as_ref().ok_or("damaged file not kept")?;
        if std::fs::read(kept).map_err(|e| e.to_string())? != bytes {
            return Err("the kept copy differs from the damaged file".into());
        }
    }
    // The recovery was saved: the records are sound again and still say what happened.
    let again = store.peek().map_err(|e| format!("second peek: {e:#}"))?;
    if again.bad(BAD).is_none() || again.damage.as_ref() != Some(damage) {
        return Err(format!("recovery not saved: {:?}", again.damage));
    }
    Ok(())
}

/// Every case through [`check_damaged`], counting panics and failures, bounded in time.
fn run_cases(file: &'static str, cases: Vec<(String, Vec<u8>)>) {
    let (dir, store, _) = setup();
    let sound: Vec<(String, Vec<u8>)> = [FILE, MEMORY_FILE]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.path().join(f)).unwrap()))
        .collect();
    drop(store);
    let work = scratch();
    let path = work.path().to_path_buf();
    let total = cases.len();
    let (panics, failures) = within(120, move || {
        let mut panics = 0;
        let mut failures = Vec::new();
        for (name, bytes) in &cases {
            match std::panic::catch_unwind(AssertUnwindSafe(|| {
                check_damaged(&path, file, &sound, bytes)
            })) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                Err(_) => panics += 1,
            }
        }
        (panics, failures)
    });
    assert_eq!(panics, 0, "{panics} of {total} cases panicked");
    assert!(
        failures.is_empty(),
        "{} of {total} failed, first: {}",
        failures.len(),
        failures[0]
    );
}

fn truncations(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    (0..bytes.len())
        .map(|cut| (format!("cut at {cut}"), bytes[..cut].to_vec()))
        .collect()
}

/// xorshift64*: deterministic, no crate needed.
fn flips(bytes: &[u8], count: usize, mut seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let r = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let bit = (r % (bytes.len() as u64 * 8)) as usize;
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            (format!("bit {bit} flipped"), flipped)
        })
        .collect()
}

#[test]
fn every_truncation_of_the_state_keeps_the_bad_commit() {
    let (_dir, _store, bytes) = setup();
    assert!(bytes.len() > 1000, "too small a fixture: {}", bytes.len());
    run_cases(FILE, truncations(&bytes));
}

#[test]
fn a_thousand_bit_flips_of_the_state_keep_the_bad_commit() {
    let (_dir, _store, bytes) = setup();
    run_cases(FILE, flips(&bytes, 1000, 0x9E37_79B9_7F4A_7C15));
}

#[test]
fn damage_to_the_bad_commit_record_is_found_and_the_state_still_knows() {
    let (dir, _store, _) = setup();
    let bytes = std::fs::read(dir.path().join(MEMORY_FILE)).unwrap();
    let mut cases = truncations(&bytes);
    cases.extend(flips(&bytes, 300, 42));
    run_cases(MEMORY_FILE, cases);
}

/// Loads a state directory whose `state.json` was replaced by `plant`, and returns the
/// damage reason, after checking the bad commit survived, in bounded time.
fn damaged_by(plant: impl FnOnce(&Path) + Send + 'static) -> Damage {
    within(10, move || {
        let (dir, store, _) = setup();
        std::fs::remove_file(store.path()).unwrap();
        plant(&store.path());
        let peeked = store.peek().unwrap();
        assert!(peeked.bad(BAD).is_some(), "peek forgot the bad commit");
        let pending = peeked.damage.unwrap();
        assert!(pending.pending && pending.kept_as.is_none());
        let state = store.load().unwrap();
        assert!(state.bad(BAD).is_some(), "load forgot the bad commit");
        let damage = state.damage.unwrap();
        assert_eq!(damage.reason, pending.reason);
        assert!(!damage.pending);
        // The next load finds sound records and writes nothing.
        let sound = Store::new(dir.path()).load().unwrap();
        assert_eq!(sound.damage.as_ref(), Some(&damage));
        if let Some(kept) = &damage.kept_as {
            assert!(
                std::fs::symlink_metadata(kept).is_ok(),
                "{kept} does not exist"
            );
        }
        drop(dir);
        damage
    })
}

fn sealed(value: serde_json::Value) -> Vec<u8> {
    format::encode(&value).unwrap()
}

/// Puts something at the path of `state.json`.
type Plant = Box<dyn FnOnce(&Path) + Send>;

#[test]
fn each_kind_of_damage_is_named() {
    let cases: Vec<(&str, Plant, &str)> = vec![
        ("{}", Box::new(|p: &Path| std::fs::write(p, "{}").unwrap()), "state.json: has no `version`"),
        ("[]", Box::new(|p: &Path| std::fs::write(p, "[]").unwrap()), "state.json: not a JSON object but an array"),
        (
            "newer version",
            Box::new(|p: &Path| std::fs::write(p, sealed(serde_json::json!({"version": 99, "history": []}))).unwrap()),
            "state.json: written by a newer agent (state version 99; this agent reads up to 2)",
        ),
        (
            "wrong types",
            Box::new(|p: &Path| std::fs::write(p, sealed(serde_json::json!({"version": 2, "history": "none"}))).unwrap()),
            "state.json: does not match the state format (invalid type: string \"none\", expected a sequence)",
        ),
        (
            "v2 without checksum",
            Box::new(|p: &Path| std::fs::write(p, "{\"version\": 2, \"history\": [], \"bad_commits\": []}").unwrap()),
            "state.json: no checksum line at the end (state version 2): torn, truncated or edited",
        ),
        (
            "symlink to /dev/zero",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
            "state.json: a symbolic link to /dev/zero, not a regular file",
        ),
        (
            "dangling symlink",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/nonexistent/state.json", p).unwrap()),
            "state.json: a symbolic link to /nonexistent/state.json, not a regular file",
        ),
        (
            "FIFO",
            Box::new(|p: &Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()),
            "state.json: a FIFO, not a regular file",
        ),
        (
            "directory",
            Box::new(|p: &Path| std::fs::create_dir(p).unwrap()),
            "state.json: a directory, not a regular file",
        ),
        (
            "too large",
            Box::new(|p: &Path| std::fs::write(p, vec![b' '; MAX_SIZE as usize + 1]).unwrap()),
            "state.json: 4194305 bytes, more than the 4194304 the agent ever writes",
        ),
        (
            "deleted",
            Box::new(|_: &Path| {}),
            "state.json: missing (deleted or lost) while bad-commits.json remains",
        ),
    ];
    for (name, plant, want) in cases {
        let damage = damaged_by(plant);
        assert_eq!(damage.reason, want, "{name}");
        assert_eq!(damage.kept_as.is_none(), name == "deleted", "{name}");
    }
}

#[test]
fn a_version_1_file_from_before_checksums_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let mut old = State {
        version: 1,
        ..State::default()
    };
    old.mark_bad(BAD, Phase::Build, "x");
    std::fs::write(store.path(), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let state = store.load().unwrap();
    assert!(state.damage.is_none());
    assert!(state.bad(BAD).is_some());
    // The first load writes the bad-commit record: from now on it survives damage.
    assert!(store.memory_path().exists());
    std::fs::write(store.path(), b"{}").unwrap();
    assert!(Store::new(dir.path()).load().unwrap().bad(BAD).is_some());
}

/// A text as a version before issue 22 stored it: the hint joined to the error.
fn joined(error: &str, hint: &str) -> String {
    [error, "\n", "hint: ", hint].concat()
}

/// A state file from before hints were kept apart: no `hint` keys, each hint at the end
/// of its error text. It loads, and every hint is its own field.
#[test]
fn an_old_state_without_hint_fields_loads_with_its_hints_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let run = serde_json::json!({
        "at": "2026-11-24T11:00:00Z", "outcome": "failed", "commit": BAD, "phase": "health",
        "error": joined("health check failed: marker: exit status 1", "push a fix"),
        "duration_ms": 5,
    });
    let plain = serde_json::json!({
        "at": "2026-11-24T10:00:00Z", "outcome": "failed", "phase": "fetch",
        "error": "fetching: connection refused", "duration_ms": 1,
    });
    let file = serde_json::json!({
        "version": 2,
        "history": [run, plain],
        "bad_commits": [{"commit": BAD, "at": "2026-11-24T11:00:00Z", "phase": "health",
                         "error": joined("health check failed", "push a fix")}],
        "rollback_pending": {"system": "/nix/store/x", "since": "2026-11-24T11:00:00Z",
                             "reason": joined("switch failed", "a reboot returns to it")},
        "refused": {"commit": BAD, "at": "2026-11-24T11:00:00Z", "reason": "unsigned",
                    "error": joined("commit is not signed", "sign it"), "expected": "k",
                    "policy": "p"},
    });
    std::fs::write(store.path(), sealed(file)).unwrap();
    let state = store.load().unwrap();
    assert!(state.damage.is_none(), "{:?}", state.damage);
    let r = &state.history[0];
    assert_eq!(
        r.error.as_deref(),
        Some("health check failed: marker: exit status 1")
    );
    assert_eq!(r.hint.as_deref(), Some("push a fix"));
    assert_eq!(
        state.history[1].error.as_deref(),
        Some("fetching: connection refused")
    );
    assert_eq!(state.history[1].hint, None);
    let b = state.bad(BAD).unwrap();
    assert_eq!(
        (b.error.as_str(), b.hint.as_deref()),
        ("health check failed", Some("push a fix"))
    );
    let p = state.rollback_pending.as_ref().unwrap();
    assert_eq!(
        (p.reason.as_str(), p.hint.as_deref()),
        ("switch failed", Some("a reboot returns to it"))
    );
    let refused = state.refused.as_ref().unwrap();
    assert_eq!(
        (refused.error.as_str(), refused.hint.as_deref()),
        ("commit is not signed", Some("sign it"))
    );
    // Saved again, the hint is a key of its own.
    store.save(&state).unwrap();
    let text = String::from_utf8(std::fs::read(store.path()).unwrap()).unwrap();
    assert!(text.contains("\"hint\": \"push a fix\""), "{text}");
    assert!(!text.contains(&joined("", "")), "{text}");
}

/// A writer that still joins a hint to its text is recorded with the hint apart.
#[test]
fn a_joined_hint_is_recorded_apart() {
    let mut state = State::default();
    let mut run = Run::new(Outcome::Failed);
    run.error = Some(joined("building x: failed", "fix it"));
    state.push_run(run);
    assert_eq!(
        state.history[0].error.as_deref(),
        Some("building x: failed")
    );
    assert_eq!(state.history[0].hint.as_deref(), Some("fix it"));
    state.mark_bad(BAD, Phase::Build, &joined("building x: failed", "fix it"));
    assert_eq!(state.bad(BAD).unwrap().hint.as_deref(), Some("fix it"));
}

#[test]
fn retry_forgets_in_both_records() {
    let (dir, store, _) = setup();
    let mut state = store.load().unwrap();
    state.bad_commits.clear();
    state.interruptions.clear();
    store.save(&state).unwrap();
    let fresh = Store::new(dir.path());
    assert!(fresh.load().unwrap().bad(BAD).is_none());
    // And damage afterwards does not bring the forgotten commit back.
    std::fs::write(fresh.path(), b"[]").unwrap();
    let state = fresh.load().unwrap();
    assert!(state.damage.is_some());
    assert!(state.bad(BAD).is_none());
}

#[test]
fn sound_records_are_read_without_a_write() {
    let (dir, store, _) = setup();
    let before: Vec<_> = snapshot(dir.path());
    for _ in 0..3 {
        let state = Store::new(dir.path()).load().unwrap();
        assert!(state.damage.is_none());
        store.peek().unwrap();
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn the_bad_commit_record_is_written_only_when_it_changes() {
    let (dir, store, _) = setup();
    let record = dir.path().join(MEMORY_FILE);
    let mut state = store.load().unwrap();
    let inode = std::fs::metadata(&record).unwrap().ino();
    state.push_run(Run::new(Outcome::UpToDate));
    store.save(&state).unwrap();
    assert_eq!(
        std::fs::metadata(&record).unwrap().ino(),
        inode,
        "rewritten without change"
    );
    state.mark_bad(GOOD, Phase::Build, "y");
    store.save(&state).unwrap();
    assert_ne!(
        std::fs::metadata(&record).unwrap().ino(),
        inode,
        "not rewritten"
    );
}

#[test]
fn a_state_too_large_to_read_back_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let mut state = State::default();
    for _ in 0..HISTORY_LIMIT {
        let mut run = Run::new(Outcome::Failed);
        run.error = Some("x".repeat(100_000));
        state.push_run(run);
    }
    store.save(&state).unwrap();
    let len = std::fs::metadata(store.path()).unwrap().len();
    assert!(len <= MAX_SIZE, "{len}");
    let back = store.load().unwrap();
    assert!(back.damage.is_none());
    assert!(!back.history.is_empty() && back.history.len() < HISTORY_LIMIT);
}

fn snapshot(dir: &Path) -> Vec<(String, u64, u64, i64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                m.ino(),
                m.len(),
                m.mtime_nsec(),
            )
        })
        .collect();
    out.sort();
    out
}
