//! Issue 21, "`homelab-agent plan [COMMIT]`": what a commit would do on this machine,
//! with the real git and nix, and proof that nothing was switched or recorded.

use crate::support::{nix_available, Harness};

/// A machine running a system with openssl 3.0.13 and grafana, booted into it.
fn machine() -> Option<(Harness, String)> {
    if !nix_available() {
        return None;
    }
    let mut h = Harness::new();
    h.host("pi1").packages = vec!["openssl-3.0.13".into(), "grafana-10.1".into()];
    let (base, system) = h.bootstrap();
    std::os::unix::fs::symlink(&system, h.fake.join("run/booted-system")).unwrap();
    Some((h, base))
}

/// What must not move: the live system, the profile, switch-to-configuration never
/// called, the state file byte for byte, no GC root left by the plan.
struct Untouched {
    system: Option<std::path::PathBuf>,
    generation: Option<u32>,
    state: Vec<u8>,
}

impl Untouched {
    fn take(h: &Harness) -> Untouched {
        Untouched {
            system: h.current_system(),
            generation: h.profile_generation(),
            state: std::fs::read(h.path("state/state.json")).unwrap(),
        }
    }
    fn check(&self, h: &Harness) {
        assert_eq!(h.current_system(), self.system, "the live system moved");
        assert_eq!(h.profile_generation(), self.generation, "the profile moved");
        assert!(h.stc_log().is_empty(), "switched: {:?}", h.stc_log());
        assert!(
            std::fs::read(h.path("state/state.json")).unwrap() == self.state,
            "the state file was written"
        );
        assert!(
            std::fs::symlink_metadata(h.path("runtime/plan-result")).is_err(),
            "the plan left its GC root"
        );
    }
}

#[test]
fn plan_tells_packages_size_and_reboot_and_switches_nothing() {
    let Some((mut h, base)) = machine() else {
        return;
    };
    h.host("pi1").packages = vec!["openssl-3.0.14".into(), "prometheus-2.50".into()];
    h.host("pi1").kernel = "k2".into();
    let head = h.commit("openssl update, prometheus instead of grafana, new kernel");
    let before = Untouched::take(&h);

    // Evaluation only: what would be built here, nothing built.
    let run = h.agent(&["plan", "--eval-only", "--json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let p: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(p["commit"], head.as_str());
    assert_eq!(p["head"], true);
    assert_eq!(p["host"], "pi1");
    assert_eq!(p["build_plan"]["build"], 3, "{p}");
    assert!(p["system"].is_null() && p["closure"].is_null(), "{p}");
    before.check(&h);

    let run = h.agent(&["plan", "--json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let p: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(p["unchanged"], false, "{p}");
    assert_eq!(p["reboot_required"], true, "{p}");
    let system = p["system"].as_str().unwrap();
    assert!(std::path::Path::new(system)
        .join("bin/switch-to-configuration")
        .exists());
    let names = |key: &str| -> Vec<String> {
        p["closure"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("added"), ["prometheus"], "{p}");
    assert_eq!(names("removed"), ["grafana"], "{p}");
    assert_eq!(names("changed"), ["openssl"], "{p}");
    assert_eq!(p["closure"]["changed"][0]["before"][0], "3.0.13");
    assert_eq!(p["closure"]["changed"][0]["after"][0], "3.0.14");
    assert!(p["closure"]["size_after"].as_u64().unwrap() > 0, "{p}");
    before.check(&h);

    // The same for a person.
    let run = h.agent(&["plan"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let text = run.stdout();
    assert!(
        text.contains("changes:    1 added, 1 removed, 1 changed; size "),
        "{text}"
    );
    assert!(text.contains("  ~ openssl 3.0.13 → 3.0.14 ("), "{text}");
    assert!(text.contains("  + prometheus 2.50 ("), "{text}");
    assert!(text.contains("  - grafana 10.1 ("), "{text}");
    assert!(text.contains("reboot:     needed"), "{text}");
    assert!(text.contains("nothing was switched"), "{text}");
    before.check(&h);

    // An older commit of the branch: the live system itself.
    let run = h.agent(&["plan", &base[..12], "--json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let p: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(p["commit"], base.as_str());
    assert_eq!(
        (&p["head"], &p["unchanged"]),
        (&false.into(), &true.into()),
        "{p}"
    );
    assert_eq!(p["reboot_required"], false, "{p}");
    before.check(&h);

    // And the next run still deploys the head: the plan recorded nothing.
    assert_eq!(h.run_once().code(), 0);
    assert_eq!(h.status()["deployed"]["commit"], head.as_str());
}

/// Not a commit id, a commit that is not on the branch, a commit that fails to build
/// (not marked bad), and a held lock: each says what is wrong, and nothing moves.
#[test]
fn plan_refuses_bad_commits_and_a_held_lock() {
    let Some((mut h, _)) = machine() else {
        return;
    };
    let before = Untouched::take(&h);
    let run = h.agent(&["plan", "zz-top"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("\"zz-top\" is not a commit id\nhint: give 4 to 40 hex digits"),
        "{}",
        run.stderr()
    );
    let run = h.agent(&["plan", "0123456789abcdef"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("commit 0123456789abcdef is not on branch main of ")
            && run
                .stderr()
                .contains(": no such commit\nhint: `plan` looks only at the watched branch"),
        "{}",
        run.stderr()
    );
    before.check(&h);

    h.host("pi1").build = "build-exit:3".into();
    let broken = h.commit("broken");
    let run = h.agent(&["plan"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(run.stderr().contains("build failed:"), "{}", run.stderr());
    assert!(
        run.stderr().contains("nixos-system-pi1> boom"),
        "{}",
        run.stderr()
    );
    before.check(&h);
    let s = h.status();
    assert!(s["bad_commit"].is_null(), "plan marked it bad: {s}");
    assert_ne!(s["head"]["status"], "bad", "{s}");
    let _ = broken;

    let lock = homelab_agent::lock::acquire(&h.path("runtime")).unwrap();
    let run = h.agent(&["plan", "--eval-only"]);
    assert_eq!(run.code(), 4, "{}", run.stderr());
    assert!(
        run.stderr().contains("another homelab-agent run holds"),
        "{}",
        run.stderr()
    );
    drop(lock);
    before.check(&h);
}

/// The CLI help and the man page tell of `plan`.
#[test]
fn plan_is_in_the_help_and_the_man_page() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_homelab-agent"))
        .args(["plan", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "--eval-only",
        "--json",
        "[COMMIT]",
        "Exit codes",
        "never activates",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let man = std::process::Command::new(env!("CARGO_BIN_EXE_homelab-agent"))
        .arg("man")
        .output()
        .unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains("plan"), "{man}");
}
