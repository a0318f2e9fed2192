//! The bad-commit record: what must never be forgotten (commits known bad for this host,
//! and how often each was interrupted) in its own small file beside `state.json`, written
//! before it whenever it changes. Losing or damaging one file leaves the other; a load
//! uses the union of both, so a damaged `state.json` never re-activates a known-bad
//! commit.

use serde::{Deserialize, Serialize};

use super::format::Rules;
use super::{BadCommit, Interruption, State, BAD_LIMIT};

pub const FILE: &str = "bad-commits.json";

/// Version 1 for as long as possible: an older agent (after a downgrade) reads only the
/// version it knows, and a record it cannot read forgets the bad commits.
pub const RULES: Rules = Rules {
    what: "bad-commit record",
    version: 1,
    unsealed: None,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub version: u32,
    pub bad_commits: Vec<BadCommit>,
    pub interruptions: Vec<Interruption>,
}

impl Memory {
    /// What `state` must not forget.
    pub fn of(state: &State) -> Memory {
        Memory {
            version: RULES.version,
            bad_commits: state.bad_commits.clone(),
            interruptions: state.interruptions.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bad_commits.is_empty() && self.interruptions.is_empty()
    }

    /// Adds to `state` what only this record remembers: bad commits it lacks (newest
    /// first, bounded as [`State::mark_bad`] bounds them) and the higher interruption
    /// count of each commit. Returns whether `state` changed.
    pub fn merge_into(&self, state: &mut State) -> bool {
        let mut changed = false;
        for bad in &self.bad_commits {
            if state.bad(&bad.commit).is_none() {
                state.bad_commits.push(bad.clone());
                changed = true;
            }
        }
        if changed {
            // Newest first; stable, so ties keep their order.
            state.bad_commits.sort_by_key(|b| std::cmp::Reverse(b.at));
            state.bad_commits.truncate(BAD_LIMIT);
        }
        for i in &self.interruptions {
            match state
                .interruptions
                .iter_mut()
                .find(|s| s.commit == i.commit)
            {
                Some(s) if s.count >= i.count => {}
                Some(s) => {
                    s.count = i.count;
                    changed = true;
                }
                None => {
                    state.interruptions.push(i.clone());
                    state.interruptions.truncate(BAD_LIMIT);
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Phase;

    #[test]
    fn union_keeps_every_bad_commit_and_the_higher_count() {
        let mut remembered = State::default();
        remembered.mark_bad("old", Phase::Build, "x");
        remembered.count_interruption("c");
        remembered.count_interruption("c");
        let memory = Memory::of(&remembered);

        let mut state = State::default();
        state.count_interruption("c");
        assert!(memory.merge_into(&mut state));
        assert!(state.bad("old").is_some());
        assert_eq!(state.interruptions[0].count, 2);
        // Merging again changes nothing.
        assert!(!memory.merge_into(&mut state));
    }

    #[test]
    fn the_state_own_entry_wins_for_the_same_commit() {
        let mut state = State::default();
        state.mark_bad("a", Phase::Health, "newer");
        let mut other = State::default();
        other.mark_bad("a", Phase::Build, "older");
        assert!(!Memory::of(&other).merge_into(&mut state));
        assert_eq!(state.bad("a").unwrap().error, "newer");
    }
}
