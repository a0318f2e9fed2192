//! What the reboot side remembers, in its own file beside the state
//! (`<state_dir>/reboot.json`, written atomically like the state): the reboot pending and
//! what it waits for, what the agent last rebooted for (never twice for one system), the
//! last boot and whether it was verified, the last fallback, and whether a FleetLock slot
//! is held.
//!
//! Sealed like the state (state/format.rs: a `version` and a last `checksum` line), so a
//! torn write or a flipped bit is found, not acted on. A record written before it was
//! sealed (no `version`) is still read.
//!
//! A damaged or unreadable record never leads to a reboot: [`load`] says so and the policy
//! refuses to reboot until it is readable again (`status` shows why).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::failure::{Failure, Kind};
use crate::model::time::Timestamp;
use crate::state::format::{self, Rules};
use crate::state::{read_bounded, write_atomic, Found};

pub const FILE: &str = "reboot.json";
const MAX_SIZE: u64 = 256 * 1024;
const VERSION: u32 = 1;
const RULES: Rules = Rules {
    what: "reboot record",
    version: VERSION,
    unsealed: None,
};

/// The record as written: its fields and the format's `version`.
#[derive(Serialize, Deserialize)]
struct Sealed<R> {
    version: u32,
    #[serde(flatten)]
    record: R,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// A reboot the policy wants and has not issued yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The last reboot the agent issued into a new generation: never issued twice for the
    /// same system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebooted: Option<Rebooted>,
    /// What the last `verify-boot` found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
    /// The last fallback to a previous generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// A FleetLock slot taken (pre-reboot) and not yet released (steady-state).
    pub slot_held: bool,
    /// The FleetLock id the held slot was taken with: released with the same id even if
    /// the id's derivation changed since (an upgrade never strands a slot). `None` with
    /// `slot_held`: taken by a version that did not record it, with the raw machine id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<String>,
    /// The one-shot trial armed for the agent's reboot (docs/reboots.md): written before
    /// the bootloader is touched; the trial boot finds it and is verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    /// The last generation that booted and verified on this machine: what a failed
    /// verification falls back to (never merely "the previous one").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    /// Which host this machine's FleetLock id was first used by: a clone of this SD card
    /// running as another host shares the machine id, and is told so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub system: String,
    pub generation: Option<u32>,
    /// When it was armed.
    pub at: Timestamp,
    /// The bootloader's door, as it describes itself.
    pub door: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    pub system: String,
    pub generation: Option<u32>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The FleetLock id derived from the machine id.
    pub id: String,
    /// The host name (`[host] name`) that used it first.
    pub host: String,
}

impl Record {
    /// The last generation that booted and verified here: recorded, or (a record from
    /// before it was kept) the last boot verified after the agent's reboot.
    pub fn last_verified(&self) -> Option<&str> {
        self.verified
            .as_ref()
            .map(|v| v.system.as_str())
            .or_else(|| {
                self.boot
                    .as_ref()
                    .filter(|b| b.verified == Some(true))
                    .map(|b| b.system.as_str())
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The boot default that needs the reboot.
    pub system: String,
    pub generation: Option<u32>,
    /// When it was first seen pending: `delay` and `max_wait` count from here.
    pub since: Timestamp,
    /// What it waits for, as the last decision found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// `delay`, `window`, `lock`, `policy` (never), `record` (unreadable), `attention`.
    #[serde(rename = "for")]
    pub what: String,
    /// Until when, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// One line for people: which lock, what the server said.
    pub detail: String,
    /// What to do about it, when there is something (issue 22: apart from `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Waiting {
    pub fn new(what: &str, detail: impl Into<String>, hint: Option<&str>) -> Waiting {
        Waiting {
            what: what.into(),
            until: None,
            detail: detail.into(),
            hint: hint.map(str::to_string),
        }
    }

    /// Waiting because `failure` happened while `doing`: its message after `doing`, its
    /// hint kept apart.
    pub fn failed(what: &str, doing: impl std::fmt::Display, failure: &Failure) -> Waiting {
        Waiting::new(
            what,
            format!("{doing}: {}", failure.message),
            failure.hint.as_deref(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rebooted {
    pub system: String,
    pub generation: Option<u32>,
    pub at: Timestamp,
    pub reason: String,
    /// The boot that followed was verified (health checks passed after the reboot).
    #[serde(default)]
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    /// `/run/booted-system` at that boot.
    pub system: String,
    pub generation: Option<u32>,
    /// When `verify-boot` looked.
    pub at: Timestamp,
    /// `Some(true)`: the checks passed after the agent's reboot into it; `Some(false)`:
    /// they failed; `None`: not a boot the agent rebooted into (nothing to verify).
    pub verified: Option<bool>,
    pub detail: String,
    /// What to do about it, when there is something (issue 22: apart from `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    pub at: Timestamp,
    /// The generation given up.
    pub from_system: String,
    pub from_generation: Option<u32>,
    /// The generation made the boot default again.
    pub to_system: Option<String>,
    pub reason: String,
    /// `boot-verification-failed` or `bootloader-fallback`.
    pub kind: String,
    /// The loop breaker: a fallback reboot was issued for `from_system`; never a second.
    pub rebooted: bool,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The record, or why it cannot be read (then nothing reboots): this machine's problem.
pub fn load(state_dir: &Path) -> Result<Record, Failure> {
    let file = path(state_dir);
    let problem = |message: String| Failure::new(Kind::Environment, message);
    match read_bounded(&file, MAX_SIZE) {
        Ok(Found::Missing) => Ok(Record::default()),
        Ok(Found::File(bytes)) => {
            decode(&bytes).map_err(|why| problem(format!("{} is damaged: {why}", file.display())))
        }
        Ok(Found::Wrong(why)) => Err(problem(format!("{}: {why}", file.display()))),
        Err(e) => Err(Failure::new(
            crate::failure::io_kind(&e),
            format!("reading {}: {e}", file.display()),
        )
        .with_source(e)),
    }
}

/// A record written before hints were kept apart (issue 22) has them joined to a detail:
/// read with the two apart.
fn split_old_hints(mut record: Record) -> Record {
    let details = [
        record
            .pending
            .as_mut()
            .and_then(|p| p.waiting.as_mut())
            .map(|w| (&mut w.detail, &mut w.hint)),
        record.boot.as_mut().map(|b| (&mut b.detail, &mut b.hint)),
    ];
    for (detail, hint) in details.into_iter().flatten() {
        if hint.is_none() {
            (*detail, *hint) = crate::failure::split_stored_hint(detail);
        }
    }
    record
}

fn decode(bytes: &[u8]) -> Result<Record, String> {
    decode_as_written(bytes).map(split_old_hints)
}

fn decode_as_written(bytes: &[u8]) -> Result<Record, String> {
    // Written before the record was sealed: a plain object without `version`.
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(bytes) {
        if !object.contains_key("version") && !object.contains_key("checksum") {
            return serde_json::from_value(serde_json::Value::Object(object))
                .map_err(|e| format!("does not match the reboot record format ({e})"));
        }
    }
    format::decode::<Sealed<Record>>(bytes, &RULES)
        .map(|sealed| sealed.record)
        .map_err(String::from)
}

pub fn save(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let bytes = format::encode(&Sealed {
        version: VERSION,
        record,
    })
    .map_err(std::io::Error::other)?;
    write_atomic(&path(state_dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_damage_is_an_error_not_a_blank_record() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Record::default());
        let r = Record {
            slot_held: true,
            rebooted: Some(Rebooted {
                system: "/nix/store/x".into(),
                generation: Some(3),
                at: "2026-11-25T02:00:00Z".into(),
                reason: "kernel".into(),
                verified: None,
            }),
            ..Default::default()
        };
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()).unwrap(), r);
        std::fs::write(path(dir.path()), b"{ not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.message.contains("damaged"), "{e}");
    }

    /// A record the string-timed agent wrote (before issue 22's [`Timestamp`]; the fixture
    /// is what commit 8fd420f's `save` wrote for a record with every field): it loads, its
    /// times read as times, and saving it again gives the same bytes.
    #[test]
    fn an_old_record_loads_and_is_written_back_in_the_same_text() {
        let old = include_str!("fixtures/old-reboot.json");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), old).unwrap();
        let r = load(dir.path()).unwrap();
        let pending = r.pending.as_ref().unwrap();
        assert_eq!(pending.since, "2026-11-25T12:00:00Z".into());
        let until = pending.waiting.as_ref().unwrap().until;
        assert_eq!(until, Some("2026-11-26T02:00:00Z".into()));
        assert!(r.boot.as_ref().unwrap().at > r.rebooted.as_ref().unwrap().at);
        save(dir.path(), &r).unwrap();
        assert_eq!(std::fs::read_to_string(path(dir.path())).unwrap(), old);
    }

    /// A record from before hints were kept apart (issue 22): a detail with a joined hint
    /// loads with the hint in its own field.
    #[test]
    fn an_old_detail_with_a_joined_hint_loads_with_the_hint_apart() {
        let dir = tempfile::tempdir().unwrap();
        let joined = [
            "health checks failed: not falling back",
            "\n",
            "hint: look at the machine",
        ]
        .concat();
        let old = serde_json::json!({
            "boot": {"system": "/nix/store/x", "generation": 4, "at": "2026-11-24T02:03:00Z",
                     "verified": false, "detail": joined},
            "pending": {"system": "/nix/store/y", "generation": 5, "since": "2026-11-24T02:00:00Z",
                        "waiting": {"for": "trial", "detail": joined}},
        });
        std::fs::write(path(dir.path()), old.to_string()).unwrap();
        let r = load(dir.path()).unwrap();
        let boot = r.boot.unwrap();
        assert_eq!(boot.detail, "health checks failed: not falling back");
        assert_eq!(boot.hint.as_deref(), Some("look at the machine"));
        let waiting = r.pending.unwrap().waiting.unwrap();
        assert_eq!(
            (waiting.detail.as_str(), waiting.hint.as_deref()),
            (boot.detail.as_str(), Some("look at the machine"))
        );
    }

    /// A time that is not one is damage (the record is sealed, only the agent writes it),
    /// said as such, never a blank record.
    #[test]
    fn a_time_that_is_not_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"rebooted": {"system": "/nix/store/x", "generation": 4, "at": "soon", "reason": "k"}}"#;
        std::fs::write(path(dir.path()), text).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(
            e.message.contains("damaged") && e.message.contains("\"soon\" is not a time"),
            "{e}"
        );
    }

    #[test]
    fn a_flipped_bit_or_a_torn_write_is_damage_not_a_different_record() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            slot_held: true,
            ..Default::default()
        };
        save(dir.path(), &r).unwrap();
        let good = std::fs::read(path(dir.path())).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        assert!(text.contains("\"version\": 1") && text.contains("\"checksum\": \"crc32:"));
        // A hand edit or a flipped bit that still parses: slot_held true -> false.
        let flipped = text.replace("\"slot_held\": true", "\"slot_held\": false");
        std::fs::write(path(dir.path()), flipped).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.message.contains("checksum mismatch"), "{e}");
        std::fs::write(path(dir.path()), &good[..good.len() - 20]).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.message.contains("damaged"), "{e}");
        // A record from before sealing (no version, no checksum) still reads.
        std::fs::write(path(dir.path()), b"{\n  \"slot_held\": true\n}\n").unwrap();
        assert_eq!(load(dir.path()).unwrap(), r);
    }
}
