//! The steps a fetched commit goes through, the same on both tracks of the cycle: main's
//! branch (a deployment) and the per-host testing branch (a test activation, testing.rs):
//!
//! ```text
//! build → (main: a pause asked for meanwhile? paused) → same system? unchanged
//!       → orphan guard (main) → activation protocol, the track's plan → record
//! ```
//!
//! What differs is asked of the [`Track`]: its words, its plan's kind, and how each end is
//! recorded (record.rs for main, testing.rs for the testing branch).

use crate::failure::Failure;
use crate::ledger::Took;
use crate::notify;
use crate::pivot::Target;
use crate::source::Fetched;
use crate::state::{IntentKind, State};

use super::{short, Agent, Exit};

/// Which track of the cycle a commit is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track<'a> {
    /// Main's branch: deployed, and (once healthy) the boot default.
    Main,
    /// The per-host testing branch: test-activated only, never the boot default.
    Testing { branch: &'a str },
}

impl Track<'_> {
    /// The kind of plan the activation protocol runs.
    fn kind(self) -> IntentKind {
        match self {
            Track::Main => IntentKind::Deploy,
            Track::Testing { .. } => IntentKind::Test,
        }
    }

    /// "abc12345 for pi1" or "abc12345 (testing/pi1)", for the status line.
    fn building(self, commit: &str, host: &str) -> String {
        match self {
            Track::Main => format!("building {commit} for {host}"),
            Track::Testing { branch } => format!("building {commit} ({branch})"),
        }
    }
}

impl Agent {
    /// Builds `fetched` for `target` and activates it as `track` says; records the end.
    pub(super) async fn deliver(
        &self,
        state: &mut State,
        track: Track<'_>,
        fetched: &Fetched,
        target: &Target,
    ) -> Exit {
        let started = std::time::Instant::now();
        let (commit, host) = (short(&fetched.commit), &target.host);
        notify::status(&track.building(commit, host));
        match track {
            Track::Main => {
                log::info!(commit = fetched.commit.as_str(); "building {commit} ({}) for {host}", fetched.subject)
            }
            Track::Testing { branch } => {
                log::info!(commit = fetched.commit.as_str(); "building {commit} ({}) from {branch} for a test activation", fetched.subject)
            }
        }
        let built = self
            .doors
            .builder
            .build(&fetched.commit, &target.attribute)
            .await;
        // A build no door said more of was built here: status, history and metrics say how
        // every deployment was obtained, `[prebuilt]` on or off (not for a pause, below).
        let took = Took {
            obtained: Some(
                self.doors
                    .builder
                    .obtained()
                    .unwrap_or_else(crate::state::obtained::built_here),
            ),
            ..Took::new(Some(started.elapsed()), None)
        };
        let system = match built {
            Ok(system) => system,
            // A `pause` asked for during main's build stopped it: the pause, not a failure.
            // (On the testing track the request waits for the next run, as before.)
            Err(_)
                if track == Track::Main
                    && crate::pause::requested(&self.settings.paths.runtime_dir) =>
            {
                self.doors.builder.release();
                let exit = self.pause_requested(state, &fetched.commit);
                return exit.unwrap_or(Exit::Ok);
            }
            Err(f) => {
                return self.build_failed_on(state, track, fetched, host, f, started, took);
            }
        };
        if self.doors.machine.current_system().as_deref() == Some(system.as_path()) {
            return match track {
                Track::Main => self.record_unchanged(state, fetched, &system, started, took),
                Track::Testing { branch } => {
                    self.record_test_unchanged(state, branch, fetched, &system, started, took)
                }
            };
        }
        if track == Track::Main {
            if let Some(exit) =
                self.refuse_orphan(state, fetched, &system, host, started, took.clone())
            {
                return exit;
            }
        }

        // A failed activation goes back to the boot default, on either track.
        let plan = self.plan(track.kind(), fetched, &system);
        let activated = match self.activate(state, plan).await {
            Ok(activated) => activated,
            Err(f) => return self.stop_run(f),
        };
        let took = Took {
            health_ms: activated.health_ms,
            ..took
        };
        let ending = activated.ending;
        match track {
            Track::Main => self.record_deploy(state, fetched, &system, ending, started, took),
            Track::Testing { branch } => {
                self.record_test(state, branch, fetched, &system, ending, started, took)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_failed_on(
        &self,
        state: &mut State,
        track: Track<'_>,
        fetched: &Fetched,
        host: &str,
        f: Failure,
        started: std::time::Instant,
        took: Took,
    ) -> Exit {
        match track {
            Track::Main => self.build_failed(state, fetched, host, f, started, took),
            Track::Testing { branch } => {
                self.test_build_failed(state, branch, fetched, f, started, took)
            }
        }
    }
}
