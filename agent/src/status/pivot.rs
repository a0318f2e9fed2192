//! Map mode in `status` (the generic image): which host this machine resolved to, or
//! what it is missing: the exact line to add to the machine map.

use serde::Serialize;

use super::Facts;
use crate::config::Settings;
use crate::pivot::{self, identity::Machine};

/// `pivot` in `status --json` (present in map mode only).
#[derive(Debug, Serialize)]
pub struct PivotView {
    /// The machine map's path in the repository (`[host] map`).
    pub map: String,
    /// The host this machine resolved to; null until one is found.
    pub host: Option<String>,
    /// How it was found: `serial-…`, `mac-…` or `host file PATH`.
    pub by: Option<String>,
    /// This machine's identities, the preferred (serial number) first.
    pub identities: Vec<String>,
    /// While unresolved: the line that maps this machine (`add to machines.toml: …`).
    pub add: Option<String>,
    /// The identity could not be read (a bad host file): what is wrong.
    pub problem: Option<String>,
}

/// The machine's identity, read for `status` in map mode only.
pub fn read(settings: &Settings) -> Option<Result<Machine, String>> {
    settings
        .host_map
        .as_ref()
        .map(|_| pivot::identity::read(&settings.paths.identity))
}

pub fn view(settings: &Settings, f: &Facts) -> Option<PivotView> {
    let map = settings.host_map.clone()?;
    let resolved = f.state.pivot.as_ref();
    let (machine, problem) = match &f.machine {
        Some(Ok(m)) => (m.clone(), None),
        Some(Err(e)) => (Machine::default(), Some(e.clone())),
        None => (Machine::default(), None),
    };
    let add = match resolved {
        Some(_) => None,
        None => pivot::suggestion(&map, &machine),
    };
    Some(PivotView {
        host: resolved.map(|r| r.host.clone()),
        by: resolved.map(|r| r.by.clone()),
        identities: machine.ids.iter().map(|i| i.to_string()).collect(),
        add,
        problem,
        map,
    })
}

/// The `host` key: in map mode the resolved host, else the configured one.
pub fn host(settings: &Settings, f: &Facts) -> String {
    match (&settings.host_map, &f.state.pivot) {
        (Some(_), Some(r)) => r.host.clone(),
        _ => settings.host.clone(),
    }
}

impl PivotView {
    pub fn write_human(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let ids = match self.identities.is_empty() {
            true => "no serial number or MAC address found".to_string(),
            false => self.identities.join(", "),
        };
        match (&self.host, &self.by) {
            (Some(host), Some(by)) => writeln!(
                out,
                "pivot:      generic image; this machine is {host} (by {by}, per {})",
                self.map
            )?,
            _ => writeln!(
                out,
                "pivot:      generic image, no host yet; this machine is {ids}"
            )?,
        }
        if let Some(p) = &self.problem {
            writeln!(out, "            {}", p.replace('\n', "\n            "))?;
        }
        if let Some(add) = &self.add {
            writeln!(
                out,
                "            {add}, then commit and push: the next run deploys it"
            )?;
        }
        Ok(())
    }
}
