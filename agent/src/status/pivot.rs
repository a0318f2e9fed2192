//! Map mode in `status` (the generic image): which host this machine resolved to, or
//! what it is missing: the exact line to add to the machine map.

use serde::Serialize;

use super::{Facts, Label, LastRunView};
use crate::config::Settings;
use crate::pivot::{self, identity::Machine};

/// `pivot` in `status --json` (null outside map mode).
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
    /// What to do about `problem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The machine's identity, read for `status` in map mode only.
pub fn read(settings: &Settings) -> Option<Result<Machine, crate::failure::Failure>> {
    settings
        .host_map
        .as_ref()
        .map(|_| pivot::identity::read(&settings.paths.identity))
}

pub fn view(settings: &Settings, f: &Facts) -> Option<PivotView> {
    let map = settings.host_map.clone()?;
    let resolved = f.state.pivot.as_ref();
    let (machine, problem, hint) = match &f.machine {
        Some(Ok(m)) => (m.clone(), None, None),
        Some(Err(e)) => (Machine::default(), Some(e.message.clone()), e.hint.clone()),
        None => (Machine::default(), None, None),
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
        hint,
        map,
    })
}

/// The `host` key: in map mode the resolved host, else the configured one.
pub fn host(settings: &Settings, f: &Facts) -> String {
    crate::pivot::host(settings, &f.state).to_string()
}

/// The one-line summary of an unmapped machine whose last run stopped at the map (no
/// line for it, or a map that does not parse): says so instead of "the last run failed in
/// verify"; the hint stays the last run's own (the line to add, or the line to fix).
pub fn summary(view: Option<&PivotView>, label: Label, last: &LastRunView) -> Option<String> {
    let view = view?;
    view.add.as_ref()?;
    if label != Label::Failed || last.phase.as_deref() != Some("verify") {
        return None;
    }
    Some(format!(
        "generic image, no host yet: the last run stopped at {} (see last run)",
        view.map
    ))
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
        if let Some(h) = &self.hint {
            writeln!(out, "            hint: {h}")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pivot::map::Identity;
    use crate::pivot::Resolved;

    fn settings() -> Settings {
        crate::config::parse(
            std::path::Path::new("/etc/test.toml"),
            "[source]\nurl = \"/r\"\n[host]\nmap = \"machines.toml\"\n",
        )
        .unwrap()
    }

    fn facts(resolved: Option<&str>) -> Facts {
        let mut f = Facts {
            machine: Some(Ok(Machine {
                named: None,
                ids: vec![
                    Identity::Serial("10000000abcdef01".into()),
                    Identity::Mac("dc-a6-32-01-02-03".into()),
                ],
            })),
            ..Facts::default()
        };
        f.state.pivot = resolved.map(|h| Resolved {
            host: h.into(),
            by: "serial-10000000abcdef01".into(),
            commit: "1a2b3c4d5e".into(),
            at: "2026-11-24T10:00:00Z".into(),
        });
        f
    }

    fn human(v: &PivotView) -> String {
        let mut out = Vec::new();
        v.write_human(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn unmapped_machine_says_the_line_to_add() {
        let s = settings();
        let v = view(&s, &facts(None)).unwrap();
        assert_eq!(
            v.add.as_deref(),
            Some("add to machines.toml: serial-10000000abcdef01 = \"<host>\"")
        );
        assert_eq!(
            human(&v),
            "pivot:      generic image, no host yet; this machine is serial-10000000abcdef01, mac-dc-a6-32-01-02-03\n            add to machines.toml: serial-10000000abcdef01 = \"<host>\", then commit and push: the next run deploys it\n"
        );
        let last = LastRunView {
            phase: Some("verify".into()),
            ..LastRunView::default()
        };
        assert_eq!(
            summary(Some(&v), Label::Failed, &last).as_deref(),
            Some(
                "generic image, no host yet: the last run stopped at machines.toml (see last run)"
            )
        );
        assert!(summary(Some(&v), Label::Idle, &last).is_none());
    }

    #[test]
    fn resolved_machine_names_its_host() {
        let s = settings();
        let f = facts(Some("pi2"));
        let v = view(&s, &f).unwrap();
        assert_eq!(v.add, None);
        assert_eq!(host(&s, &f), "pi2");
        assert_eq!(
            human(&v),
            "pivot:      generic image; this machine is pi2 (by serial-10000000abcdef01, per machines.toml)\n"
        );
    }

    #[test]
    fn outside_map_mode_there_is_no_pivot() {
        let s = crate::config::parse(
            std::path::Path::new("/etc/test.toml"),
            "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n",
        )
        .unwrap();
        assert!(view(&s, &facts(Some("pi2"))).is_none());
        assert_eq!(host(&s, &facts(Some("pi2"))), "pi1");
    }
}
