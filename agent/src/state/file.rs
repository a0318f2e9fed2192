//! The agent's own small files on disk: read only what the agent could have written (a
//! regular file, bounded in size, never through a symlink), write atomically and durably,
//! and move a damaged file aside instead of deleting it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;

/// No file the agent writes comes near this; anything larger is damage, not something to
/// read into memory (a symlink to `/dev/zero` must not grow a read-only `status`).
pub const MAX_SIZE: u64 = 4 << 20;

/// Damaged copies kept per file; older ones are deleted, so a damage loop cannot fill the
/// disk.
pub const KEEP_DAMAGED: usize = 5;

/// What is at a path the agent reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Missing,
    /// A regular file of at most [`MAX_SIZE`] bytes, read whole.
    File(Vec<u8>),
    /// Something the agent never writes there: why it was not read.
    Wrong(String),
}

/// Reads `path` if it is a regular file of at most `max` bytes. Never follows a symlink,
/// never blocks on a FIFO, never reads a device.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Found> {
    read_regular(path, max, Links::Refuse, "the agent ever writes")
}

/// Whether a symlink at the path itself is followed ([`read_regular`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// The agent's own files: a link there is damage (O_NOFOLLOW).
    Refuse,
    /// Files the kernel or the operator provide (`/proc/cpuinfo`, a host file): the
    /// link's target is checked instead.
    Follow,
}

/// The one bounded reader: `path` read whole if it is a regular file (after `links`) of
/// at most `max` bytes; anything else (a FIFO, a device, a directory, a larger file) is
/// [`Found::Wrong`] saying what it is. Opened with O_NONBLOCK, so a FIFO with no writer
/// never blocks the open; checked with fstat before any read. `/proc` and `/sys` files
/// are regular (their stat size is 0 or 4096: the read itself is capped). `limit` says
/// what `max` is, in the too-large message ("the agent ever writes").
pub fn read_regular(path: &Path, max: u64, links: Links, limit: &str) -> io::Result<Found> {
    let nofollow = match links {
        Links::Refuse => nix::libc::O_NOFOLLOW,
        Links::Follow => 0,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        // O_NOFOLLOW: the last component is a symlink, dangling or not.
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            let to = std::fs::read_link(path)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default();
            return Ok(Found::Wrong(format!(
                "a symbolic link{to}, not a regular file"
            )));
        }
        // A socket (or a device without a driver) cannot be opened for reading.
        Err(e)
            if matches!(
                e.raw_os_error().map(Errno::from_raw),
                Some(Errno::ENXIO | Errno::ENODEV)
            ) =>
        {
            return Ok(Found::Wrong(format!(
                "not a regular file (opening it: {e})"
            )))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Ok(Found::Wrong(format!("{what}, not a regular file")));
    }
    if meta.len() > max {
        return Ok(Found::Wrong(too_large(meta.len(), max, limit)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Found::Wrong(too_large(bytes.len() as u64, max, limit)));
    }
    Ok(Found::File(bytes))
}

fn too_large(len: u64, max: u64, limit: &str) -> String {
    format!("{len} bytes, more than the {max} {limit}")
}

/// Temp file in the same directory → write → fsync → rename over `path` → fsync the
/// directory: a power cut leaves the old file or the new one, never half of one. The temp
/// file is created with O_NOFOLLOW and rename(2) replaces a symlink at `path` instead of
/// following it, so a planted link never redirects the write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = create_temp(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Only if it is ours: a planted symlink is left for the operator to see.
        if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_file()) {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    result
}

/// Readable by everyone (no secret is ever stored); never through a symlink.
fn create_temp(tmp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(tmp)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames whatever is at `path` (file, symlink, FIFO, directory) to
/// `<name>.damaged-<UTC time>` beside it, never overwriting an earlier copy, and deletes
/// the oldest copies beyond [`KEEP_DAMAGED`]. Returns the new name.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let prefix = format!("{name}.damaged-");
    let mut aside;
    loop {
        // UTC to the nanosecond, fixed width: names sort by the time of the damage.
        let now = jiff::Timestamp::now();
        let stamp = format!(
            "{}{:09}Z",
            now.strftime("%Y%m%dT%H%M%S"),
            now.subsec_nanosecond()
        );
        aside = dir.join(format!("{prefix}{stamp}"));
        if std::fs::symlink_metadata(&aside).is_err() {
            break;
        }
    }
    std::fs::rename(path, &aside)?;
    sync_dir(dir)?;
    prune(dir, &prefix, &aside);
    Ok(aside)
}

/// Deletes temp files of `name` left by a writer killed mid-write (the caller holds the
/// run lock, so no write of `name` is in flight). Reads the directory, writes nothing
/// when there is nothing to delete.
pub fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let ours = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            log::debug!(
                "removing {} left by an interrupted write",
                e.path().display()
            );
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Deletes all but the newest [`KEEP_DAMAGED`] damaged copies (regular files and symlinks
/// only: a directory someone put there is theirs to remove).
fn prune(dir: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    // Newest first (the names sort by time).
    copies.sort_by(|a, b| b.cmp(a));
    for old in copies.into_iter().skip(KEEP_DAMAGED) {
        if old != keep {
            let _ = std::fs::remove_file(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wrong(found: Found) -> String {
        match found {
            Found::Wrong(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_regular_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read_bounded(&path, 10).unwrap(), Found::Missing);
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(
            read_bounded(&path, 10).unwrap(),
            Found::File(b"hello".to_vec())
        );
    }

    #[test]
    fn refuses_symlinks_dangling_or_to_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let started = Instant::now();
        let why = wrong(read_bounded(&zero, MAX_SIZE).unwrap());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(why, "a symbolic link to /dev/zero, not a regular file");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let why = wrong(read_bounded(&dangling, MAX_SIZE).unwrap());
        assert!(why.starts_with("a symbolic link to "), "{why}");
    }

    #[test]
    fn refuses_a_fifo_without_blocking_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let started = Instant::now();
        assert_eq!(
            wrong(read_bounded(&fifo, MAX_SIZE).unwrap()),
            "a FIFO, not a regular file"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            wrong(read_bounded(dir.path(), MAX_SIZE).unwrap()),
            "a directory, not a regular file"
        );
    }

    #[test]
    fn refuses_a_device_node_at_the_path() {
        // /dev/null itself (no symlink involved): a character device is never read.
        assert_eq!(
            wrong(read_bounded(Path::new("/dev/null"), MAX_SIZE).unwrap()),
            "a character device, not a regular file"
        );
    }

    #[test]
    fn refuses_a_file_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 11]).unwrap();
        assert_eq!(
            wrong(read_bounded(&path, 10).unwrap()),
            "11 bytes, more than the 10 the agent ever writes"
        );
    }

    #[test]
    fn a_symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let tmp = dir.path().join(".state.json.tmp-1-0");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = create_temp(&tmp).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::ELOOP as i32));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let target = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".state.json.tmp-1-0",
            ".state.json.tmp-2-7",
            "state.json",
            ".other.tmp-1-0",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", dir.path().join(".state.json.tmp-3-0")).unwrap();
        remove_stale_temps(dir.path(), "state.json");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".other.tmp-1-0", ".state.json.tmp-3-0", "state.json"]
        );
    }

    #[test]
    fn damaged_copies_are_kept_but_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut kept = Vec::new();
        for i in 0..(KEEP_DAMAGED + 3) {
            std::fs::write(&path, format!("{i}")).unwrap();
            let aside = move_aside(&path).unwrap();
            assert!(!path.exists());
            assert_eq!(std::fs::read_to_string(&aside).unwrap(), format!("{i}"));
            kept.push(aside);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left.len(), KEEP_DAMAGED, "{left:?}");
        // The newest ones survive.
        for newest in &kept[kept.len() - KEEP_DAMAGED..] {
            assert!(newest.exists(), "{} was pruned", newest.display());
        }
    }
}
