//! The daemon's git calls, each in a short-lived child process (issue 13: the daemon's
//! resident memory).
//!
//! The first libgit2 call of a process initialises libgit2, libssh2 and OpenSSL (error
//! strings, an SSL context): about 3.5 MiB of libcrypto and 1 MiB of libgit2 pages are
//! then mapped, plus their heap, for as long as the process lives. For `run --once` that
//! is a few milliseconds; the daemon (`run` without `--once`) would hold them between
//! polls for days, to use them once every `[run] interval`. So the daemon never calls
//! libgit2: the poll, the fetch and the trust check (which reads the cache) run in
//! `homelab-agent source-call` (hidden), which makes the one call in-process (the same code `run --once` uses, with its own deadline), prints
//! the answer as one JSON object and exits. What the call cost is given back to the
//! system when the child exits.
//!
//! The daemon's doors are composed with the child Source (`doors/git.rs`: `Child`,
//! built by `Doors::daemon`); `run --once` and the other commands with the in-process
//! one. Nothing global says which.
//!
//! A child that outlives its deadline is killed (not abandoned, as a thread must be).
//! Its failure keeps the kind and the words the child gave it
//! ([`SourceError::Relayed`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Fetched, Heads, SourceError, TestingHead, GRACE};
use crate::config::SourceSettings;
use crate::failure::{Failure, Kind};
use crate::process::{Cmd, CmdError};
use crate::trust::{Checked, Floor, Reason, Refusal, Verdict};

/// Time for the child to start and load the configuration, on top of its deadline.
const START: Duration = Duration::from_secs(5);

/// A copy of the daemon's configuration file, for its children, in the runtime directory
/// (a tmpfs): the daemon is not restarted when the file changes (the module sets
/// `restartIfChanged = false`), so children that read the file itself would work to other
/// settings than the daemon's, and an agent binary older than the file would refuse its
/// new keys on every poll. Written once, when the daemon starts.
pub fn snapshot(config_file: &Path, runtime_dir: &Path) -> std::io::Result<PathBuf> {
    let text = std::fs::read(config_file)?;
    std::fs::create_dir_all(runtime_dir)?;
    let copy = runtime_dir.join("daemon-config.toml");
    crate::state::write_atomic(&copy, &text)?;
    Ok(copy)
}

/// One call's answer, as the child prints it on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Head {
        commit: String,
        /// The testing branch from the same listing of refs; absent when the child
        /// looked for none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        testing: Option<TestingHead>,
        /// The prebuilt manifest branch's tip from the same listing; absent when not
        /// looked for or not on the remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prebuilt: Option<String>,
    },
    Fetched {
        commit: String,
        subject: String,
        time: i64,
        /// The commit's prebuilt manifest files; absent when `[prebuilt]` is off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prebuilt: Option<super::prebuilt::PrebuiltFiles>,
    },
    Failed {
        kind: Kind,
        message: String,
        /// What to do (absent from a child of a version that joined it to the message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// A file of a commit in the cache (`read`); `None`: the commit has no such file.
    File { text: Option<String> },
    /// The trust check passed ([`crate::trust::Checked`]).
    Trusted { signer: Option<String> },
    /// The trust check refused the head ([`crate::trust::Refusal`]).
    Refused {
        reason: Reason,
        message: String,
        expected: String,
    },
}

impl From<SourceError> for Answer {
    fn from(e: SourceError) -> Answer {
        Answer::Failed {
            kind: e.kind(),
            message: e.to_string(),
            hint: e.hint(),
        }
    }
}

/// The remote heads from one listing ([`super::remote_heads`]), asked by a child process
/// that reads `config` (the daemon's, copied by [`snapshot`]).
pub async fn remote_heads(
    config: &Path,
    settings: &SourceSettings,
    deadline: Duration,
) -> Result<Heads, SourceError> {
    match call(config, settings, &["head".into()], deadline).await? {
        Answer::Head {
            commit,
            testing,
            prebuilt,
        } => Ok(Heads {
            main: commit,
            testing,
            prebuilt,
        }),
        other => Err(unexpected(settings, other)),
    }
}

/// The fetch into `cache`, made by a child process.
pub async fn fetch(
    config: &Path,
    settings: &SourceSettings,
    cache: &Path,
    deadline: Duration,
) -> Result<Fetched, SourceError> {
    let args = [
        "fetch".into(),
        "--cache".into(),
        cache.as_os_str().to_owned(),
    ];
    match call(config, settings, &args, deadline).await? {
        Answer::Fetched {
            commit,
            subject,
            time,
            prebuilt,
        } => Ok(Fetched {
            commit,
            subject,
            time,
            prebuilt,
        }),
        other => Err(unexpected(settings, other)),
    }
}

/// The trust check of `commit` in `cache` ([`crate::trust::check`]), made by a child
/// process: it reads the cache with libgit2.
pub async fn verify(
    config: &Path,
    settings: &SourceSettings,
    cache: &Path,
    commit: &str,
    floors: &[Floor],
) -> Result<Checked, Verdict> {
    let floors: Vec<[&str; 2]> = floors
        .iter()
        .map(|f| [f.commit.as_str(), f.from.as_str()])
        .collect();
    let args = [
        "verify".into(),
        "--cache".into(),
        cache.as_os_str().to_owned(),
        "--commit".into(),
        commit.into(),
        "--floors".into(),
        serde_json::to_string(&floors).unwrap_or_default().into(),
    ];
    // The signature tools and the inputs' resolution have their own timeout each.
    let answer = call(config, settings, &args, crate::trust::CHECK_TIMEOUT).await;
    match answer {
        Ok(Answer::Trusted { signer }) => Ok(Checked { signer }),
        Ok(Answer::Refused {
            reason,
            message,
            expected,
        }) => Err(Verdict::Refused(Refusal {
            reason,
            message,
            expected,
        })),
        Ok(other) => {
            let e = unexpected(settings, other);
            Err(Verdict::Failed(e.into()))
        }
        Err(e) => Err(Verdict::Failed(e.into())),
    }
}

/// How long a child may take to read a file from the cache (local disk, no network).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `file` at `commit` in `cache` ([`super::blob::read`]), read by a child process.
pub async fn read_file(
    config: &Path,
    settings: &SourceSettings,
    cache: &Path,
    commit: &str,
    file: &str,
    max: usize,
) -> Result<Option<String>, Failure> {
    let args = [
        "read".into(),
        "--cache".into(),
        cache.as_os_str().to_owned(),
        "--commit".into(),
        commit.into(),
        "--file".into(),
        file.into(),
        "--max-bytes".into(),
        max.to_string().into(),
    ];
    let relayed = |e: SourceError| match e {
        // The reader's own failure, kind and words as the child gave them.
        SourceError::Relayed {
            kind,
            message,
            hint,
        } => Failure {
            hint,
            ..Failure::new(kind, message)
        },
        e => e.into(),
    };
    match call(config, settings, &args, READ_TIMEOUT).await {
        Ok(Answer::File { text }) => Ok(text),
        Ok(other) => Err(relayed(unexpected(settings, other))),
        Err(e) => Err(relayed(e)),
    }
}

fn unexpected(settings: &SourceSettings, answer: Answer) -> SourceError {
    match answer {
        Answer::Failed {
            kind,
            message,
            hint,
        } => SourceError::Relayed {
            kind,
            message,
            hint,
        },
        other => SourceError::Internal {
            url: settings.url.redacted().to_string(),
            message: format!("the git child process answered {other:?} (a bug: please report it)"),
        },
    }
}

/// The largest answer taken from a child: a commit, a subject, a message with a few
/// lines of a tool's stderr fit many times over. More is no answer (a bug), and is not
/// read further.
const MAX_ANSWER: u64 = 1 << 20;

async fn call(
    config: &Path,
    settings: &SourceSettings,
    args: &[OsString],
    deadline: Duration,
) -> Result<Answer, SourceError> {
    let url = settings.url.redacted().to_string();
    // This very executable, even if its file was replaced since the daemon started.
    let command = Cmd::new("/proc/self/exe")
        .arg("--config")
        .arg(config)
        .arg("source-call")
        .args(args)
        .arg("--branch")
        .arg(&settings.branch);
    ask(command, &url, deadline).await
}

/// Runs the child (`command`, given `--timeout-ms` here) through the common door
/// ([`Cmd`]: its own process group, its stdout capped, the child and everything it
/// started (gpgv, ssh-keygen) killed at the deadline) and reads its one answer.
async fn ask(command: Cmd, url: &str, deadline: Duration) -> Result<Answer, SourceError> {
    let internal = |message: String| SourceError::Internal {
        url: url.to_string(),
        message,
    };
    let command = command
        .arg("--timeout-ms")
        .arg(deadline.as_millis().to_string())
        .timeout(deadline + GRACE + START)
        .capture_stdout()
        .max_stdout(MAX_ANSWER)
        // Its log lines are the daemon's (the journal), as they come.
        .inherit_stderr()
        // Ignored from the start (a disposition of SIG_IGN survives exec): a stop of the
        // whole unit right after the spawn, before serve() runs, must not end the call.
        .ignore_stop_signals();
    let done = match command.run().await {
        Ok(done) => done,
        Err(CmdError::TimedOut { .. }) => {
            return Err(SourceError::TimedOut {
                url: url.to_string(),
                after: deadline,
            })
        }
        Err(e) => return Err(internal(format!("cannot run the git child process: {e}"))),
    };
    if done.stdout_truncated {
        return Err(internal(format!(
            "the git child process ({}) answered more than {} (no answer is that long; \
             the rest was not read)",
            done.status,
            humansize(MAX_ANSWER)
        )));
    }
    let line = done.stdout.trim_end_matches('\n');
    if line.contains('\n') {
        return Err(internal(format!(
            "the git child process ({}) answered more than one line: {}",
            done.status,
            excerpt(line)
        )));
    }
    serde_json::from_str(line).map_err(|e| {
        internal(if line.trim().is_empty() {
            format!(
                "the git child process ended ({}) without an answer",
                done.status
            )
        } else {
            format!(
                "the git child process ended ({}) with an answer that is not one: {e}: {}",
                done.status,
                excerpt(line)
            )
        })
    })
}

fn humansize(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The start of a bad answer, for the message: bounded, printable.
fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// The child's side (`source-call`): one call in this process, its answer as JSON on
/// stdout. Any failure is an answer too; the exit code is 0 unless stdout is gone.
///
/// SIGTERM and SIGINT are ignored: a stop of the whole unit (or a Ctrl-C in a terminal)
/// reaches the child too, and the daemon stops between cycles, so the child finishes its
/// call (bounded by its deadline) instead of leaving the cache mid-fetch.
// Unsafe: signal(2) to ignore SIGTERM/SIGINT (the parent ends the child, not the terminal).
#[allow(unsafe_code)]
pub async fn serve(
    settings: Result<crate::config::Settings, String>,
    what: &str,
    cache: Option<PathBuf>,
    verify: Option<(String, String)>,
    read: Option<(String, String, usize)>,
    deadline: Duration,
) -> u8 {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: SIG_IGN installs no handler code; nothing else handles these here.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let answer = match settings {
        Err(message) => Answer::Failed {
            kind: Kind::Configuration,
            message,
            hint: None,
        },
        Ok(settings) => {
            let source = &settings.source;
            match (what, cache) {
                ("head", _) => match super::remote_heads(source, deadline).await {
                    Ok(h) => Answer::Head {
                        commit: h.main,
                        testing: h.testing,
                        prebuilt: h.prebuilt,
                    },
                    Err(e) => e.into(),
                },
                ("fetch", Some(cache)) => match super::fetch(source, cache, deadline).await {
                    Ok(f) => Answer::Fetched {
                        commit: f.commit,
                        subject: f.subject,
                        time: f.time,
                        prebuilt: f.prebuilt,
                    },
                    Err(e) => e.into(),
                },
                ("verify", Some(cache)) => match verify {
                    Some((commit, floors)) => trust(&settings, &cache, &commit, &floors).await,
                    None => Answer::Failed {
                        kind: Kind::Environment,
                        message: "source-call verify: no --commit (a bug)".into(),
                        hint: None,
                    },
                },
                ("read", Some(cache)) => match read {
                    Some((commit, file, max)) => {
                        match super::blob::read(&cache, &commit, &file, max) {
                            Ok(text) => Answer::File { text },
                            Err(f) => Answer::Failed {
                                kind: f.kind,
                                message: f.message,
                                hint: f.hint,
                            },
                        }
                    }
                    None => Answer::Failed {
                        kind: Kind::Environment,
                        message: "source-call read: no --commit, --file or --max-bytes (a bug)"
                            .into(),
                        hint: None,
                    },
                },
                _ => Answer::Failed {
                    kind: Kind::Environment,
                    message: format!("source-call: unknown call {what:?} (a bug)"),
                    hint: None,
                },
            }
        }
    };
    let mut line = serde_json::to_string(&answer).unwrap_or_default();
    line.push('\n');
    use std::io::Write;
    match std::io::stdout().write_all(line.as_bytes()) {
        Ok(()) => crate::exit::OK,
        Err(_) => crate::exit::FAILED,
    }
}

async fn trust(
    settings: &crate::config::Settings,
    cache: &Path,
    commit: &str,
    floors: &str,
) -> Answer {
    let floors: Vec<Floor> = match serde_json::from_str::<Vec<[String; 2]>>(floors) {
        Ok(list) => list
            .into_iter()
            .map(|[commit, from]| Floor { commit, from })
            .collect(),
        Err(e) => {
            return Answer::Failed {
                kind: Kind::Environment,
                message: format!("source-call verify: bad --floors: {e} (a bug)"),
                hint: None,
            }
        }
    };
    match crate::trust::check(&settings.source.trust, cache, commit, &floors).await {
        Ok(checked) => Answer::Trusted {
            signer: checked.signer,
        },
        Err(Verdict::Refused(r)) => Answer::Refused {
            reason: r.reason,
            message: r.message,
            expected: r.expected,
        },
        Err(Verdict::Failed(f)) => Answer::Failed {
            kind: f.kind,
            message: f.message,
            hint: f.hint,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_as_json() {
        for answer in [
            Answer::Head {
                commit: "a".repeat(40),
                testing: None,
                prebuilt: None,
            },
            Answer::Head {
                commit: "a".repeat(40),
                testing: Some(TestingHead {
                    branch: "testing/pi1".into(),
                    commit: Some("c".repeat(40)),
                }),
                prebuilt: Some("d".repeat(40)),
            },
            Answer::Fetched {
                commit: "b".repeat(40),
                subject: "pi: \"quoted\"\nsecond line".into(),
                time: 1_700_000_000,
                prebuilt: None,
            },
            Answer::Fetched {
                commit: "b".repeat(40),
                subject: "s".into(),
                time: 1,
                prebuilt: Some(crate::source::prebuilt::PrebuiltFiles {
                    commit: "b".repeat(40),
                    branch_tip: Some("d".repeat(40)),
                    manifest: Some("{\"format\": 1}\n".into()),
                    ssh_signature: Some("-----BEGIN SSH SIGNATURE-----\n".into()),
                    gpg_signature: None,
                    problem: Some("prebuilt/x.json.asc: not a file".into()),
                }),
            },
            Answer::Failed {
                kind: Kind::Configuration,
                message: "authentication failed".into(),
                hint: Some("check".into()),
            },
            Answer::Trusted {
                signer: Some("alice@example.org".into()),
            },
            Answer::Refused {
                reason: Reason::Downgrade,
                message: "is older than".into(),
                expected: "a descendant of x".into(),
            },
        ] {
            let text = serde_json::to_string(&answer).unwrap();
            assert!(!text.contains('\n'), "one line: {text}");
            assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), answer);
        }
    }

    /// A stand-in for the child: `script` under sh (the `--timeout-ms` that [`ask`]
    /// adds lands in `$1`).
    async fn ask_sh(script: &str, deadline: Duration) -> Result<Answer, SourceError> {
        ask(
            Cmd::new("/bin/sh").args(["-c", script, "child"]),
            "git://h/r",
            deadline,
        )
        .await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_json_line_is_the_answer() {
        let commit = "c".repeat(40);
        let got = ask_sh(
            &format!("echo '{{\"answer\":\"head\",\"commit\":\"{commit}\"}}'"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            Answer::Head {
                commit,
                testing: None,
                prebuilt: None
            }
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_garbled_answer_is_refused_with_its_start() {
        let e = ask_sh("echo 'Segmentation fault, or so'", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, SourceError::Internal { .. }), "{e:?}");
        assert_eq!(e.kind(), Kind::Environment);
        let text = e.to_string();
        assert!(text.contains("an answer that is not one"), "{text}");
        assert!(text.contains("Segmentation fault, or so"), "{text}");
        assert!(e.hint().is_some_and(|h| h.contains("report it")), "{e:?}");

        let e = ask_sh("echo '{}'; echo '{}'", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("more than one line"), "{e}");

        let e = ask_sh("exit 3", Duration::from_secs(5)).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("without an answer"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
    }

    /// A child that never stops writing: refused at [`MAX_ANSWER`], its pipe closed (it
    /// gets EPIPE and ends), this process holding no more than the cap.
    #[tokio::test(flavor = "current_thread")]
    async fn an_endless_answer_is_cut_and_refused() {
        let started = std::time::Instant::now();
        let e = ask_sh("exec yes '{\"answer\":\"head\"}'", Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "{e}");
        assert!(matches!(e, SourceError::Internal { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("answered more than 1 MiB"), "{text}");
        assert!(
            text.len() < 2000,
            "the message holds the answer: {} bytes",
            text.len()
        );
    }

    /// A child stuck past its deadline (it ignores SIGTERM, as the real one does) is
    /// killed with what it started, also a helper that left the process group as a
    /// daemon would (gpgv, ssh-keygen run under the trust check); the call times out.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_child_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let script = format!(
            "sleep 600 & echo $! > {a}; setsid sh -c 'echo $$ > {b}; exec sleep 600' & \
             while :; do sleep 1; done",
            a = a.display(),
            b = b.display()
        );
        let started = std::time::Instant::now();
        let e = ask_sh(&script, Duration::from_millis(100))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, SourceError::TimedOut { .. }), "{e:?}");
        assert!(e.to_string().contains("timed out after 100ms"), "{e}");
        // Its deadline, GRACE and START, then SIGTERM (ignored) and the kill's grace.
        assert!(took >= GRACE + START, "killed before its time: {took:?}");
        assert!(took < GRACE + START + Duration::from_secs(8), "{took:?}");
        std::thread::sleep(Duration::from_millis(200));
        for file in [a, b] {
            let pid: i32 = std::fs::read_to_string(&file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            assert!(
                stat.is_empty() || state == Some(Some('Z')),
                "{} {pid} survived the deadline: {stat}",
                file.display()
            );
        }
    }

    #[test]
    fn a_head_answer_without_the_testing_field_still_reads() {
        let old = format!(r#"{{"answer":"head","commit":"{}"}}"#, "a".repeat(40));
        let Answer::Head {
            commit, testing, ..
        } = serde_json::from_str(&old).unwrap()
        else {
            panic!("not a head answer")
        };
        assert_eq!(commit, "a".repeat(40));
        assert_eq!(testing, None);
    }

    #[test]
    fn a_relayed_failure_keeps_its_kind_and_words() {
        let e = SourceError::BranchNotFound {
            url: "git://h/r".into(),
            branch: "main".into(),
        };
        let (kind, text, hint) = (e.kind(), e.to_string(), e.hint());
        let Answer::Failed {
            kind: k,
            message,
            hint: h,
        } = Answer::from(e)
        else {
            panic!("not a failure")
        };
        let relayed = SourceError::Relayed {
            kind: k,
            message,
            hint: h,
        };
        assert_eq!(relayed.kind(), kind);
        assert_eq!(relayed.to_string(), text);
        assert_eq!(relayed.hint(), hint);
        assert!(hint.is_some_and(|h| h.contains("[source] branch")));
    }
}
