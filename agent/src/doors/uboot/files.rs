//! The trial's files on the boot partition: copied into a fresh directory, synced, and
//! renamed into place, so a power cut leaves either no trial directory or a whole one
//! (and the flag, set only after this, is what makes U-Boot look at it).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::layout::{clean_name, Entry, TRIAL_CONF, TRIAL_DIR};
use crate::failure::{io_kind, Failure, Kind};

/// Room kept free on the boot partition beyond what a trial needs (extlinux.conf, its
/// temporary copy, the filesystem's own bookkeeping).
pub const BOOT_MARGIN: u64 = 4 << 20;

/// kernel-params is one line; a few KiB at most.
const MAX_PARAMS: u64 = 64 << 10;
/// dtbs: `dtbs/<vendor>/<board>.dtb` and `overlays/`: a few levels.
const MAX_DEPTH: usize = 6;

pub fn io_failure(e: &io::Error, doing: &str, path: &Path) -> Failure {
    Failure::new(
        io_kind(e),
        format!(
            "{doing} {}: {e}\nhint: the boot partition must be mounted, writable, and have room for a kernel and initrd",
            path.display()
        ),
    )
}

fn system_failure(system: &Path, what: &str) -> Failure {
    Failure::new(
        Kind::Environment,
        format!(
            "the system to try, {}, {what}\nhint: give a NixOS toplevel (kernel, initrd, init, kernel-params)",
            system.display()
        ),
    )
}

/// Copies `system`'s kernel, initrd and dtbs into `boot_dir/homelab-trial` (replacing
/// an old trial's) and says what the entry must name.
pub fn lay_out(boot_dir: &Path, system: &Path) -> Result<Entry, Failure> {
    let sys = fs::canonicalize(system)
        .map_err(|e| system_failure(system, &format!("cannot be resolved: {e}")))?;
    let file = |name: &str| -> Result<std::path::PathBuf, Failure> {
        let p = fs::canonicalize(sys.join(name))
            .map_err(|e| system_failure(system, &format!("has no {name}: {e}")))?;
        if p.is_file() {
            Ok(p)
        } else {
            Err(system_failure(
                system,
                &format!("has a {name} that is not a file"),
            ))
        }
    };
    let kernel = file("kernel")?;
    let initrd = file("initrd")?;
    let dtbs = match fs::canonicalize(sys.join("dtbs")) {
        Ok(d) if d.is_dir() => Some(d),
        _ => None,
    };
    let params = read_params(&sys.join("kernel-params"))
        .map_err(|e| system_failure(system, &format!("has an unreadable kernel-params: {e}")))?;
    if params.chars().any(char::is_control) {
        return Err(system_failure(
            system,
            "has control characters in kernel-params",
        ));
    }

    // /boot never fills: the trial's copy now, and the boot entry's copy that
    // `switch-to-configuration boot` makes once the trial verified, must both fit, or
    // nothing is written (a half-written boot partition is the one thing a Pi cannot
    // boot past).
    let size = file_size(&kernel)? + file_size(&initrd)? + tree_size(dtbs.as_deref(), 0)?;
    let need = 2 * size + BOOT_MARGIN;
    let free = crate::free_space::available(boot_dir)
        .map_err(|e| io_failure(&io::Error::from(e), "checking the free space on", boot_dir))?;
    if free < need {
        return Err(Failure::new(
            Kind::Environment,
            format!(
                "not enough space on {} for this kernel: {} free, {} needed (its kernel, initrd and device trees, {}, once for the trial and once for its boot entry, and {} spare); nothing was written\nhint: free the boot partition: remove old generations (`sudo nix-env -p /nix/var/nix/profiles/system --delete-generations +3`, then `sudo /run/current-system/bin/switch-to-configuration boot`) or set [retention] keep; the deployment waits and the next run tries again",
                boot_dir.display(),
                mib(free),
                mib(need),
                mib(size),
                mib(BOOT_MARGIN)
            ),
        ));
    }

    let fresh = boot_dir.join(format!(".{TRIAL_DIR}.tmp"));
    let dest = boot_dir.join(TRIAL_DIR);
    remove_dir(&fresh).map_err(|e| io_failure(&e, "removing", &fresh))?;
    fs::create_dir(&fresh).map_err(|e| io_failure(&e, "creating", &fresh))?;
    let entry = Entry {
        system: sys.to_string_lossy().into_owned(),
        kernel: clean_name(&kernel),
        initrd: clean_name(&initrd),
        dtbs: dtbs.as_deref().map(clean_name),
        params,
    };
    copy_file(&kernel, &fresh.join(&entry.kernel))?;
    copy_file(&initrd, &fresh.join(&entry.initrd))?;
    if let (Some(src), Some(name)) = (&dtbs, &entry.dtbs) {
        copy_dir(src, &fresh.join(name), 0)?;
    }
    sync_dir(&fresh).map_err(|e| io_failure(&e, "syncing", &fresh))?;
    remove_dir(&dest).map_err(|e| io_failure(&e, "removing the old trial", &dest))?;
    fs::rename(&fresh, &dest).map_err(|e| io_failure(&e, "renaming into place", &dest))?;
    sync_dir(boot_dir).map_err(|e| io_failure(&e, "syncing", boot_dir))?;
    Ok(entry)
}

/// Removes the trial entry, then its files; what is already gone is fine.
pub fn remove_trial(boot_dir: &Path) -> Result<(), Failure> {
    let conf = boot_dir.join(TRIAL_CONF);
    match fs::remove_file(&conf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_failure(&e, "removing", &conf)),
    }
    for dir in [
        boot_dir.join(TRIAL_DIR),
        boot_dir.join(format!(".{TRIAL_DIR}.tmp")),
    ] {
        remove_dir(&dir).map_err(|e| io_failure(&e, "removing", &dir))?;
    }
    if let Some(parent) = conf.parent().filter(|p| p.is_dir()) {
        sync_dir(parent).map_err(|e| io_failure(&e, "syncing", parent))?;
    }
    if boot_dir.is_dir() {
        sync_dir(boot_dir).map_err(|e| io_failure(&e, "syncing", boot_dir))?;
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn file_size(path: &Path) -> Result<u64, Failure> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| io_failure(&e, "reading the size of", path))
}

/// The bytes of the files under `dir` (none: 0), as deep as [`copy_dir`] goes.
fn tree_size(dir: Option<&Path>, depth: usize) -> Result<u64, Failure> {
    let Some(dir) = dir else { return Ok(0) };
    if depth > MAX_DEPTH {
        return Ok(0);
    }
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(|e| io_failure(&e, "reading", dir))? {
        let entry = entry.map_err(|e| io_failure(&e, "reading", dir))?;
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(|e| io_failure(&e, "reading", &path))?;
        total += if meta.is_dir() {
            tree_size(Some(&path), depth + 1)?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn read_params(path: &Path) -> io::Result<String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_PARAMS + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PARAMS {
        return Err(io::Error::other(format!("more than {MAX_PARAMS} bytes")));
    }
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn copy_file(src: &Path, dst: &Path) -> Result<(), Failure> {
    (|| {
        let mut from = fs::File::open(src)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)?;
        io::copy(&mut from, &mut to)?;
        to.sync_all()
    })()
    .map_err(|e| io_failure(&e, &format!("copying {} to", src.display()), dst))
}

fn copy_dir(src: &Path, dst: &Path, depth: usize) -> Result<(), Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::new(
            Kind::Environment,
            format!(
                "{} is nested more than {MAX_DEPTH} levels deep: not a dtbs directory",
                src.display()
            ),
        ));
    }
    fs::create_dir(dst).map_err(|e| io_failure(&e, "creating", dst))?;
    let entries = fs::read_dir(src).map_err(|e| io_failure(&e, "listing", src))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_failure(&e, "listing", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        // Follow links: the store's dtbs may be a tree of symlinks.
        if from.is_dir() {
            copy_dir(&from, &to, depth + 1)?;
        } else if from.is_file() {
            copy_file(&from, &to)?;
        }
    }
    sync_dir(dst).map_err(|e| io_failure(&e, "syncing", dst))
}

fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
