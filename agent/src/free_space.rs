//! Whether a filesystem can take a write, by `statvfs`: read-only, or less free space
//! than the caller needs. Used before the git cache is written (`source::cache`)
//! and to tell a build that failed for lack of disk (`nix::failure`). The answer
//! is an OS error code, so `failure::io_kind` classifies it like any other.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::statvfs::{statvfs, FsFlags};

/// The filesystem holding `dir`: `Ok(None)` when writable with at least `min_free` bytes
/// available to us, `Ok(Some(EROFS))` read-only, `Ok(Some(ENOSPC))` (nearly) full; `Err`
/// when `statvfs` itself failed (the check could not run: not a verdict).
pub fn check(dir: &Path, min_free: u64) -> nix::Result<Option<Errno>> {
    let stat = statvfs(dir)?;
    if stat.flags().contains(FsFlags::ST_RDONLY) {
        return Ok(Some(Errno::EROFS));
    }
    // The casts are for 32-bit targets (armv7 Pis), where these are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    Ok((free < min_free).then_some(Errno::ENOSPC))
}

/// Bytes available to us on the filesystem holding `dir`.
pub fn available(dir: &Path) -> nix::Result<u64> {
    let stat = statvfs(dir)?;
    // The casts are for 32-bit targets (armv7 Pis), where these are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_full_and_unreadable_are_told_apart() {
        assert_eq!(check(Path::new("/tmp"), 1), Ok(None));
        assert_eq!(check(Path::new("/tmp"), u64::MAX), Ok(Some(Errno::ENOSPC)));
        assert_eq!(check(Path::new("/no/such/dir"), 1), Err(Errno::ENOENT));
        if Path::new("/proc").exists() {
            // procfs reports no free blocks: what a store on it would be, full.
            assert_eq!(check(Path::new("/proc"), 1), Ok(Some(Errno::ENOSPC)));
        }
    }
}
