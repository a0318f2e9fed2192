//! This machine's stable hardware identity, read from the files the kernel exposes
//! (every path configurable, so tests use a temp dir): the serial number (the device
//! tree's `serial-number`, else `Serial` in `/proc/cpuinfo`), the MAC addresses of its
//! physical network interfaces, and a host file written on the boot partition when
//! flashing, which names the host directly.

use std::path::Path;

use super::map::{mac_address, serial_number, Identity};
use crate::config::validate_host;

pub use crate::config::IdentityPaths;

/// What the machine says about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The host named by the boot partition's host file, if it exists.
    pub named: Option<String>,
    /// Serial number first, then MAC addresses by interface name.
    pub ids: Vec<Identity>,
}

impl Machine {
    /// The identity to suggest for the map: the serial number when there is one.
    pub fn preferred(&self) -> Option<&Identity> {
        self.ids.first()
    }
}

/// The files are small and local: at most this much of each is read (cpuinfo: one
/// paragraph per core, so more).
const MAX_FILE: u64 = 64 * 1024;
const MAX_CPUINFO: u64 = 1 << 20;

/// Reads the identity. `Err` for a host file that exists and is wrong (the operator
/// wrote it), and for anything at an identity path that is not a regular file (a FIFO
/// there once hung the agent, holding the run lock): a message naming the path.
pub fn read(paths: &IdentityPaths) -> Result<Machine, String> {
    let mut machine = Machine {
        named: host_file(&paths.host_file)?,
        ids: Vec::new(),
    };
    if let Some(serial) = serial(paths)? {
        machine.ids.push(Identity::Serial(serial));
    }
    machine
        .ids
        .extend(macs(&paths.net_class)?.into_iter().map(Identity::Mac));
    Ok(machine)
}

/// `path`'s text when it is a regular file (sysfs and procfs files are), `None` when it
/// does not exist or cannot be read, `Err` for a FIFO, device, directory or a file over
/// `max` (the state's bounded reader: non-blocking open, fstat first, capped read).
fn read_small(path: &Path, max: u64) -> Result<Option<String>, String> {
    use crate::state::{read_regular, Found, Links};
    match read_regular(path, max, Links::Follow, "read from an identity file") {
        Ok(Found::File(bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Ok(Found::Missing) => Ok(None),
        Ok(Found::Wrong(why)) => Err(format!(
            "reading this machine's identity from {}: {why}\nhint: it must be the kernel's file (or, for the host file, a small text file): remove what is there, or point [paths] at the right file",
            path.display()
        )),
        // Unreadable (permissions, I/O): as if absent; the map says what is missing.
        Err(e) => {
            log::debug!("cannot read {}: {e}", path.display());
            Ok(None)
        }
    }
}

fn host_file(path: &Path) -> Result<Option<String>, String> {
    let Some(text) = read_small(path, MAX_FILE)? else {
        return Ok(None);
    };
    // The first line that is not empty or a comment.
    let name = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match name {
        None => Err(format!(
            "{}: empty\nhint: write the machine's nixosConfigurations name in it (e.g. pi1), or delete it to use the machine map",
            path.display()
        )),
        Some(name) => validate_host(name).map(|()| Some(name.to_string())).map_err(|m| {
            format!(
                "{}: {m}\nhint: write the machine's nixosConfigurations name in it (e.g. pi1)",
                path.display()
            )
        }),
    }
}

/// The serial number: the device tree's (NUL-terminated) first, then `/proc/cpuinfo`.
/// An all-zero serial (what some boards report) identifies nothing.
fn serial(paths: &IdentityPaths) -> Result<Option<String>, String> {
    let from_tree = read_small(&paths.serial_number, MAX_FILE)?
        .and_then(|t| serial_number(t.trim_end_matches('\0')));
    let from_cpuinfo = match from_tree {
        Some(_) => None,
        None => read_small(&paths.cpuinfo, MAX_CPUINFO)?.and_then(|text| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "Serial").then(|| serial_number(value))?
            })
        }),
    };
    Ok(from_tree
        .or(from_cpuinfo)
        .filter(|s| s.chars().any(|c| c != '0')))
}

/// MAC addresses of physical interfaces (those with a `device` link: `lo`, bridges,
/// veths and other virtual ones have none), by interface name. Locally administered
/// addresses (randomised, set by software) are skipped: they are not the hardware's.
fn macs(net_class: &Path) -> Result<Vec<String>, String> {
    let Ok(entries) = std::fs::read_dir(net_class) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for e in entries.flatten() {
        if e.file_name() == "lo" || !e.path().join("device").exists() {
            continue;
        }
        let Some(mac) = read_small(&e.path().join("address"), MAX_FILE)?
            .as_deref()
            .and_then(mac_address)
        else {
            continue;
        };
        let Ok(first) = u8::from_str_radix(&mac[..2], 16) else {
            continue;
        };
        if first & 0x02 == 0 && mac != "00-00-00-00-00-00" {
            found.push((e.file_name().to_string_lossy().into_owned(), mac));
        }
    }
    found.sort();
    let mut macs: Vec<String> = found.into_iter().map(|(_, m)| m).collect();
    macs.dedup();
    Ok(macs)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fake `/sys` and `/boot/firmware` in a temp dir.
    pub struct FakeMachine {
        pub dir: tempfile::TempDir,
    }

    impl FakeMachine {
        #[allow(clippy::new_without_default)]
        pub fn new() -> FakeMachine {
            FakeMachine {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        pub fn paths(&self) -> IdentityPaths {
            let d = self.dir.path();
            IdentityPaths {
                serial_number: d.join("serial-number"),
                cpuinfo: d.join("cpuinfo"),
                net_class: d.join("net"),
                host_file: d.join("homelab-host"),
            }
        }
        pub fn write(&self, name: &str, text: &str) -> &Self {
            let p = self.dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }
        pub fn nic(&self, name: &str, mac: &str, physical: bool) -> &Self {
            self.write(&format!("net/{name}/address"), &format!("{mac}\n"));
            if physical {
                std::fs::create_dir_all(self.dir.path().join(format!("net/{name}/device")))
                    .unwrap();
            }
            self
        }
    }

    #[test]
    fn device_tree_serial_then_macs() {
        let m = FakeMachine::new();
        m.write("serial-number", "10000000ABCDEF01\0")
            .write("cpuinfo", "Serial\t\t: 00000000deadbeef\n")
            .nic("lo", "00:00:00:00:00:00", false)
            .nic("wlan0", "b8:27:eb:00:00:02", true)
            .nic("eth0", "b8:27:eb:00:00:01", true)
            .nic("br0", "b8:27:eb:00:00:09", false)
            .nic("usb0", "02:11:22:33:44:55", true);
        let got = read(&m.paths()).unwrap();
        let shown: Vec<String> = got.ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            shown,
            [
                "serial-10000000abcdef01",
                "mac-b8-27-eb-00-00-01",
                "mac-b8-27-eb-00-00-02"
            ]
        );
        assert_eq!(got.named, None);
    }

    #[test]
    fn cpuinfo_serial_when_no_device_tree() {
        let m = FakeMachine::new();
        m.write("cpuinfo", "processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 00000000deadbeef\nModel\t: Raspberry Pi\n");
        let got = read(&m.paths()).unwrap();
        assert_eq!(got.ids, [Identity::Serial("00000000deadbeef".into())]);
    }

    #[test]
    fn zero_serial_and_nothing_else_is_no_identity() {
        let m = FakeMachine::new();
        m.write("serial-number", "0000000000000000\0");
        assert_eq!(read(&m.paths()).unwrap(), Machine::default());
    }

    #[test]
    fn host_file_names_the_host() {
        let m = FakeMachine::new();
        m.write("homelab-host", "# written when flashing\npi2\n");
        assert_eq!(read(&m.paths()).unwrap().named.as_deref(), Some("pi2"));
        m.write("homelab-host", "pi 2\n");
        let e = read(&m.paths()).unwrap_err();
        assert!(
            e.contains("homelab-host: invalid host name \"pi 2\""),
            "{e}"
        );
        assert!(e.contains("\nhint: "), "{e}");
        m.write("homelab-host", "\n");
        let e = read(&m.paths()).unwrap_err();
        assert!(e.contains("homelab-host: empty"), "{e}");
    }

    /// A FIFO (no writer), a directory or an oversized file at any identity path: an
    /// error naming the path, at once (the open never blocks).
    #[test]
    fn a_fifo_or_other_non_file_is_refused_by_name() {
        for file in [
            "homelab-host",
            "serial-number",
            "cpuinfo",
            "net/eth0/address",
        ] {
            let m = FakeMachine::new();
            m.nic("eth0", "b8:27:eb:00:00:01", true);
            let path = m.dir.path().join(file);
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            let e = read(&m.paths()).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "reading this machine's identity from {}: a FIFO, not a regular file\nhint: ",
                    path.display()
                )),
                "{file}: {e}"
            );
        }
        let m = FakeMachine::new();
        std::fs::create_dir(m.dir.path().join("homelab-host")).unwrap();
        assert!(read(&m.paths())
            .unwrap_err()
            .contains("a directory, not a regular file"));
        let m = FakeMachine::new();
        m.write("serial-number", &"1".repeat(MAX_FILE as usize + 1));
        let e = read(&m.paths()).unwrap_err();
        assert!(
            e.contains("65537 bytes, more than the 65536 read from an identity file"),
            "{e}"
        );
    }
}
