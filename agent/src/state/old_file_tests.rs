//! A state file an older agent wrote (times as strings, before the typed [`Timestamp`]):
//! it loads unchanged, its times read as times, and writing it back gives the same text.
//! The fixtures are what the agent of commit 31fee70 wrote in its demo sandbox, after a
//! `rollback` and a `pause --for 2h`.

use super::*;

const OLD_STATE: &str = include_str!("fixtures/old-state.json");
const OLD_MEMORY: &str = include_str!("fixtures/old-bad-commits.json");

#[test]
fn an_old_state_file_loads_and_is_written_back_in_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), OLD_STATE).unwrap();
    std::fs::write(dir.path().join(MEMORY_FILE), OLD_MEMORY).unwrap();
    let store = Store::new(dir.path());
    let state = store.load().unwrap();
    assert_eq!(state.damage, None);

    let t = |s: &str| Timestamp::parse(s).unwrap();
    assert_eq!(
        state.deployed.as_ref().unwrap().at,
        t("2026-12-07T15:31:58Z")
    );
    assert_eq!(state.history[0].at, t("2026-12-07T15:31:58Z"));
    assert_eq!(state.history[1].at, t("2026-12-07T15:31:55Z"));
    assert_eq!(state.bad_commits[0].at, t("2026-12-07T15:31:55Z"));
    assert_eq!(
        state.pinned.as_ref().unwrap().since,
        t("2026-12-07T15:31:58Z")
    );
    let paused = state.paused.as_ref().unwrap();
    assert_eq!(
        paused.until.unwrap().since(paused.since),
        std::time::Duration::from_secs(2 * 3600)
    );
    // Times compare as times.
    assert!(state.history[0].at > state.history[1].at);

    store.save(&state).unwrap();
    let written = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
    assert_eq!(written, OLD_STATE);
    let memory = std::fs::read_to_string(dir.path().join(MEMORY_FILE)).unwrap();
    assert_eq!(memory, OLD_MEMORY);
}
