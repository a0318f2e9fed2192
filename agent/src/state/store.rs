//! [`Store`]: the state directory's two records, `state.json` and the bad-commit record,
//! read with damage detection and written atomically, the bad-commit record first.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::file::{self, Found, MAX_SIZE};
use super::format::{self, Rules};
use super::memory::{self, Memory};
use super::{now, Damage, State, FILE, VERSION};

/// `state.json`: sealed since version 2; version 1 (before checksums) is still read.
const RULES: Rules = Rules {
    what: "state",
    version: VERSION,
    unsealed: Some((1, &["bad_commits", "history"])),
};

/// The records of one state directory.
pub struct Store {
    dir: PathBuf,
    /// The bad-commit record as it is on disk (last read or written; `None`: missing or
    /// unknown), so a save writes it only when it changes.
    on_disk: Mutex<Option<Memory>>,
}

/// One of the records, as found.
enum Read<T> {
    Missing,
    Good(T),
    Damaged(String),
}

/// Both records read and combined, before anything is done about damage.
struct Assessed {
    state: State,
    memory: Option<Memory>,
    /// Damaged files (path, why): moved aside by a load.
    damaged: Vec<(PathBuf, String)>,
    /// `state.json` is missing while the bad-commit record exists: it was lost.
    lost: bool,
}

impl Assessed {
    fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.lost {
            reasons.push(format!(
                "{FILE}: missing (deleted or lost) while {} remains",
                memory::FILE
            ));
        }
        for (path, why) in &self.damaged {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            reasons.push(format!("{name}: {why}"));
        }
        reasons
    }
}

fn fresh() -> State {
    State {
        version: VERSION,
        ..State::default()
    }
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            on_disk: Mutex::new(None),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The bad-commit record beside `state.json`.
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join(memory::FILE)
    }

    /// Reads the state without changing anything on disk (for `status`, `history`). A
    /// damaged or lost `state.json` gives what is still known (the bad commits) with
    /// [`State::damage`] saying what is wrong (`pending`: the next `run` deals with it).
    /// An error only when the files cannot be read at all (permissions, I/O).
    pub fn peek(&self) -> anyhow::Result<State> {
        let found = self.assess()?;
        let reasons = found.reasons();
        let mut state = found.state;
        if !reasons.is_empty() {
            state.damage = Some(Damage {
                at: now(),
                reason: reasons.join("; "),
                kept_as: None,
                pending: true,
            });
        }
        Ok(state)
    }

    /// Reads the state for a run. A damaged file is moved aside (not deleted), the run
    /// goes on from what is known (the bad-commit record keeps the bad commits), and the
    /// state says so in [`State::damage`]; that recovery is saved at once, so it is
    /// reported until the next damage. Writes nothing when both records are sound.
    pub fn load(&self) -> anyhow::Result<State> {
        self.ensure_dir()?;
        for name in [FILE, memory::FILE] {
            file::remove_stale_temps(&self.dir, name);
        }
        let found = self.assess()?;
        let reasons = found.reasons();
        let mut state = found.state;
        let mut kept_as = None;
        for (path, _) in &found.damaged {
            let aside = file::move_aside(path).map_err(|e| {
                anyhow::Error::new(e).context(format!("moving damaged {} aside", path.display()))
            })?;
            if path == &self.path() {
                kept_as = Some(aside.display().to_string());
            }
        }
        *self.on_disk() = found.memory;
        if reasons.is_empty() {
            // The first load after an upgrade from a version without the record.
            let memory = Memory::of(&state);
            let mut on_disk = self.on_disk();
            if on_disk.is_none() && !memory.is_empty() {
                self.write_memory(&memory)?;
                *on_disk = Some(memory);
            }
            return Ok(state);
        }
        let damage = Damage {
            at: now(),
            reason: reasons.join("; "),
            kept_as: kept_as.clone(),
            pending: false,
        };
        log::warn!(
            "state damaged in {}: {}; continuing from what is known ({} bad commit(s) remembered)",
            self.dir.display(),
            damage.reason,
            state.bad_commits.len()
        );
        if kept_as.is_some() {
            state.recovered_from = kept_as;
        }
        state.damage = Some(damage);
        self.save(&state)?;
        Ok(state)
    }

    /// Replaces the state atomically and durably; the bad-commit record first, and only
    /// when it changed.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        self.ensure_dir()?;
        // Every hint in its own field, whichever writer recorded it.
        let state = &{
            let mut apart = state.clone();
            apart.hints_apart();
            apart
        };
        let memory = Memory::of(state);
        {
            let mut on_disk = self.on_disk();
            if on_disk.as_ref() != Some(&memory) {
                self.write_memory(&memory)?;
                *on_disk = Some(memory);
            }
        }
        let bytes = encode_state(state)?;
        let path = self.path();
        file::write_atomic(&path, &bytes)
            .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))
    }

    fn write_memory(&self, memory: &Memory) -> anyhow::Result<()> {
        let path = self.memory_path();
        let bytes = format::encode(memory)?;
        file::write_atomic(&path, &bytes)
            .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))
    }

    fn assess(&self) -> anyhow::Result<Assessed> {
        let mut damaged = Vec::new();
        let (mut state, missing) = match self.read::<State>(&self.path(), &RULES)? {
            Read::Good(state) => (state, false),
            Read::Missing => (fresh(), true),
            Read::Damaged(why) => {
                damaged.push((self.path(), why));
                (fresh(), false)
            }
        };
        let memory = match self.read::<Memory>(&self.memory_path(), &memory::RULES)? {
            Read::Good(memory) => Some(memory),
            Read::Missing => None,
            Read::Damaged(why) => {
                damaged.push((self.memory_path(), why));
                None
            }
        };
        if let Some(m) = &memory {
            m.merge_into(&mut state);
        }
        state.hints_apart();
        Ok(Assessed {
            lost: missing && memory.is_some(),
            state,
            memory,
            damaged,
        })
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        rules: &Rules,
    ) -> anyhow::Result<Read<T>> {
        match file::read_bounded(path, MAX_SIZE) {
            Ok(Found::Missing) => Ok(Read::Missing),
            Ok(Found::Wrong(why)) => Ok(Read::Damaged(why)),
            Ok(Found::File(bytes)) => Ok(match format::decode(&bytes, rules) {
                Ok(value) => Read::Good(value),
                Err(why) => Read::Damaged(why.into()),
            }),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn on_disk(&self) -> MutexGuard<'_, Option<Memory>> {
        self.on_disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            anyhow::Error::new(e)
                .context(format!("creating state directory {}", self.dir.display()))
        })
    }
}

/// The sealed bytes of `state`, oldest history dropped if it would exceed what a read
/// accepts (a file the agent would refuse to read must never be written).
fn encode_state(state: &State) -> anyhow::Result<Vec<u8>> {
    let mut state = state.clone();
    state.version = VERSION;
    loop {
        let bytes = format::encode(&state)?;
        if bytes.len() as u64 <= MAX_SIZE {
            return Ok(bytes);
        }
        if state.history.is_empty() {
            anyhow::bail!(
                "encoding the state: {} bytes, more than {MAX_SIZE} even without history",
                bytes.len()
            );
        }
        let keep = state.history.len() / 2;
        state.history.truncate(keep);
    }
}
