//! The pivot: a machine flashed with the one generic image has no host of its own. In
//! map mode (`[host] map = "machines.toml"`) each run finds which `nixosConfigurations`
//! entry this machine is, from the map in the *fetched* commit and the machine's
//! hardware identity ([`identity`]), then deploys that host through the normal protocol.
//! The deployed host's own configuration names it (`[host] name`), so from then on runs
//! are ordinary; while the generic configuration stays in charge, the resolved host is
//! remembered in the state and followed.
//!
//! | file          | owns                                                          |
//! |---------------|---------------------------------------------------------------|
//! | `map.rs`      | the map file: identities, strict line-by-line parsing         |
//! | `identity.rs` | the machine's serial number, MAC addresses and host file      |
//!
//! No match is the operator's to fix (a line to add to the map), never the commit's:
//! every failure here is [`Kind::Configuration`] (exit 78), nothing is marked bad, and
//! the machine stays on the provisioning system and keeps polling.

pub mod identity;
pub mod map;

use std::future::Future;
use std::pin::Pin;

use crate::config::{default_attribute, Settings};
use crate::failure::{Failure, Kind};

/// What a run builds: the host and its flake attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub attribute: String,
    /// How the host was found (map mode only): `serial-…`, `mac-…`, the host file.
    pub by: Option<String>,
}

pub use crate::model::pivot::Resolved;

/// Reads a file of a fetched commit: the map. The Source door is one (doors/git.rs: in
/// the daemon, through its git child), so map mode reads the repository the way
/// everything else does.
pub trait MapReader {
    /// `file` at `commit`, at most `max` bytes; `None` when the commit has no such file.
    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, Failure>> + 'a>>;
}

/// The host to build for `commit`. Outside map mode: the configured host. In map mode:
/// the boot partition's host file, else the map's entry for this machine (read through
/// `reader`), else the host resolved before (a machine keeps following the host it
/// pivoted to).
pub async fn resolve<R: MapReader + ?Sized>(
    settings: &Settings,
    remembered: Option<&Resolved>,
    commit: &str,
    reader: &R,
) -> Result<Target, Failure> {
    let Some(map_file) = &settings.host_map else {
        return Ok(Target {
            host: settings.host.clone(),
            attribute: settings.attribute.clone(),
            by: None,
        });
    };
    let machine = identity::read(&settings.paths.identity)
        .map_err(|m| Failure::new(Kind::Configuration, m))?;
    let target = |host: &str, by: String| Target {
        host: host.to_string(),
        attribute: default_attribute(host),
        by: Some(by),
    };
    if let Some(host) = &machine.named {
        let by = format!("host file {}", settings.paths.identity.host_file.display());
        return Ok(target(host, by));
    }
    let text = reader.read_file(commit, map_file, map::MAX_BYTES).await?;
    if let Some(text) = &text {
        let parsed = map::parse(text).map_err(|e| {
            Failure::new(
                Kind::Configuration,
                format!(
                    "reading {map_file} at {}: line {}: {}\nhint: fix that line of {map_file} in the repository, commit and push",
                    short(commit),
                    e.line,
                    e.message
                ),
            )
        })?;
        if let Some((id, host)) = parsed.find(&machine.ids) {
            return Ok(target(host, id.to_string()));
        }
    }
    if let Some(r) = remembered {
        log::warn!(
            "{map_file} at {} has no line for this machine: following {} (resolved by {} at {})",
            short(commit),
            r.host,
            r.by,
            short(&r.commit)
        );
        return Ok(target(&r.host, r.by.clone()));
    }
    Err(Failure::new(
        Kind::Configuration,
        unmapped(settings, map_file, &machine, text.is_some(), commit),
    ))
}

/// Why no host was found, and the one line that fixes it.
fn unmapped(
    settings: &Settings,
    map_file: &str,
    machine: &identity::Machine,
    map_exists: bool,
    commit: &str,
) -> String {
    let p = &settings.paths.identity;
    let Some(line) = suggestion(map_file, machine) else {
        return format!(
            "cannot identify this machine: no serial number ({} or {}), no physical network interface with a MAC address ({}), no host file ({})\nhint: write its nixosConfigurations name (e.g. pi1) to {} on the boot partition",
            p.serial_number.display(),
            p.cpuinfo.display(),
            p.net_class.display(),
            p.host_file.display(),
            p.host_file.display()
        );
    };
    let ids: Vec<String> = machine.ids.iter().map(|i| i.to_string()).collect();
    let found = match map_exists {
        true => format!(
            "{map_file} at {} has no line for this machine",
            short(commit)
        ),
        false => format!("{map_file} does not exist at {}", short(commit)),
    };
    format!(
        "{found} ({}); it stays on the provisioning system and keeps polling\nhint: {line} (the machine's nixosConfigurations name), commit and push",
        ids.join(", ")
    )
}

/// The host this machine is: in map mode the one the map resolved (once there is one),
/// else `[host] name`. What status, metrics and notifications call it.
pub fn host<'a>(settings: &'a Settings, state: &'a crate::state::State) -> &'a str {
    match (&settings.host_map, &state.pivot) {
        (Some(_), Some(r)) => &r.host,
        _ => &settings.host,
    }
}

/// `add to machines.toml: serial-10000000abcdef01 = "<host>"`: the line that maps this
/// machine, by its preferred identity.
pub fn suggestion(map_file: &str, machine: &identity::Machine) -> Option<String> {
    let id = machine.preferred()?;
    Some(format!("add to {map_file}: {id} = \"<host>\""))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

#[cfg(test)]
mod tests;
