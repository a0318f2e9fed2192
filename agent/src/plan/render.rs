//! The plan for a person: what would be built here, what changes, whether it reboots.

use std::io::Write;

use super::closure::Change;
use super::Plan;

/// The most packages listed per kind (added, removed, changed).
const MAX_LISTED: usize = 30;

pub fn human(p: &Plan, out: &mut impl Write) -> std::io::Result<()> {
    let short = &p.commit[..p.commit.len().min(8)];
    let which = if p.head {
        format!("the head of {}", p.branch)
    } else {
        format!("on {}, not its head", p.branch)
    };
    writeln!(out, "plan for {short} ({which}): {}", p.subject)?;
    writeln!(out, "host:       {}", p.host)?;
    writeln!(out, "build plan: {}", p.build_plan.summary)?;
    match &p.system {
        Some(system) => writeln!(out, "system:     {system}")?,
        None => writeln!(out, "system:     not built (--eval-only)")?,
    }
    writeln!(
        out,
        "live:       {}",
        p.current_system.as_deref().unwrap_or("unknown")
    )?;
    if p.unchanged == Some(true) {
        writeln!(
            out,
            "changes:    none: it builds the live system (a run would record it unchanged)"
        )?;
    } else if let Some(d) = &p.closure {
        writeln!(
            out,
            "changes:    {} added, {} removed, {} changed; size {} ({} → {})",
            d.added.len(),
            d.removed.len(),
            d.changed.len(),
            signed(d.size_delta),
            bytes(d.size_before),
            bytes(d.size_after)
        )?;
        list(out, '+', &d.added)?;
        list(out, '-', &d.removed)?;
        list(out, '~', &d.changed)?;
    } else if p.eval_only {
        writeln!(out, "changes:    unknown until built (drop --eval-only)")?;
    } else {
        writeln!(
            out,
            "changes:    unknown: there is no live system to compare with"
        )?;
    }
    let reboot = match p.reboot_required {
        Some(true) => "needed: kernel, initrd or modules differ from the booted system",
        Some(false) => "not needed",
        None if p.eval_only => "unknown until built (drop --eval-only)",
        None => "unknown (no booted system to compare with)",
    };
    writeln!(out, "reboot:     {reboot}")?;
    writeln!(
        out,
        "nothing was switched: plan never activates, records nothing and marks nothing bad"
    )
}

fn list(out: &mut impl Write, sign: char, changes: &[Change]) -> std::io::Result<()> {
    for c in changes.iter().take(MAX_LISTED) {
        let versions = match (c.before.is_empty(), c.after.is_empty()) {
            (true, _) => versions(&c.after),
            (_, true) => versions(&c.before),
            _ => format!("{} → {}", versions(&c.before), versions(&c.after)),
        };
        let versions = if versions.is_empty() {
            String::new()
        } else {
            format!(" {versions}")
        };
        writeln!(
            out,
            "  {sign} {}{versions} ({})",
            c.name,
            signed(c.size_delta)
        )?;
    }
    if changes.len() > MAX_LISTED {
        writeln!(out, "  {sign} … and {} more", changes.len() - MAX_LISTED)?;
    }
    Ok(())
}

fn versions(v: &[String]) -> String {
    let shown: Vec<&str> = v
        .iter()
        .map(|s| if s.is_empty() { "ε" } else { s.as_str() })
        .collect();
    if shown == ["ε"] {
        return String::new();
    }
    shown.join(", ")
}

/// Bytes in the largest unit that keeps a number of at least 1.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(n.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::super::closure::ClosureDiff;
    use super::super::BuildPlanView;
    use super::*;

    fn plan() -> Plan {
        Plan {
            commit: "1111111111111111111111111111111111111111".into(),
            subject: "add prometheus".into(),
            branch: "main".into(),
            head: true,
            host: "pi1".into(),
            eval_only: false,
            build_plan: BuildPlanView {
                build: 1,
                fetch: 2,
                local_builds: 1,
                build_names: vec!["nixos-system-pi1.drv".into()],
                summary: "1 to build here, 2 to fetch (build: nixos-system-pi1.drv)".into(),
            },
            system: Some("/nix/store/bbb-nixos-system-pi1".into()),
            current_system: Some("/nix/store/aaa-nixos-system-pi1".into()),
            unchanged: Some(false),
            closure: Some(ClosureDiff {
                added: vec![Change {
                    name: "prometheus".into(),
                    before: vec![],
                    after: vec!["2.50".into()],
                    size_delta: 70 << 20,
                }],
                removed: vec![Change {
                    name: "etc".into(),
                    before: vec!["".into()],
                    after: vec![],
                    size_delta: -2048,
                }],
                changed: vec![Change {
                    name: "openssl".into(),
                    before: vec!["3.0.13".into()],
                    after: vec!["3.0.14".into()],
                    size_delta: 300,
                }],
                paths_before: 10,
                paths_after: 11,
                size_before: 100 << 20,
                size_after: (170 << 20) - 1748,
                size_delta: (70 << 20) - 1748,
            }),
            reboot_required: Some(true),
        }
    }

    fn text(p: &Plan) -> String {
        let mut out = Vec::new();
        human(p, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plan_says_what_changes_and_whether_it_reboots() {
        assert_eq!(
            text(&plan()),
            "plan for 11111111 (the head of main): add prometheus
host:       pi1
build plan: 1 to build here, 2 to fetch (build: nixos-system-pi1.drv)
system:     /nix/store/bbb-nixos-system-pi1
live:       /nix/store/aaa-nixos-system-pi1
changes:    1 added, 1 removed, 1 changed; size +70.0 MiB (100.0 MiB → 170.0 MiB)
  + prometheus 2.50 (+70.0 MiB)
  - etc (-2.0 KiB)
  ~ openssl 3.0.13 → 3.0.14 (+300 B)
reboot:     needed: kernel, initrd or modules differ from the booted system
nothing was switched: plan never activates, records nothing and marks nothing bad
"
        );
    }

    #[test]
    fn eval_only_and_unchanged() {
        let mut p = plan();
        p.eval_only = true;
        p.system = None;
        p.closure = None;
        p.unchanged = None;
        p.reboot_required = None;
        let t = text(&p);
        assert!(t.contains("system:     not built (--eval-only)\n"), "{t}");
        assert!(
            t.contains("changes:    unknown until built (drop --eval-only)\n"),
            "{t}"
        );
        assert!(
            t.contains("reboot:     unknown until built (drop --eval-only)\n"),
            "{t}"
        );
        let mut p = plan();
        p.unchanged = Some(true);
        p.reboot_required = Some(false);
        let t = text(&p);
        assert!(
            t.contains("changes:    none: it builds the live system"),
            "{t}"
        );
        assert!(t.contains("reboot:     not needed\n"), "{t}");
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(signed(-1024), "-1.0 KiB");
    }
}
