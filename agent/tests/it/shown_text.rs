//! Text from outside shown escaped (issue 23, item 16), through the real binary, git and
//! nix: a commit subject with terminal escapes in the run's messages and `history`, and
//! what a failing health check printed in `check`; the JSON forms keep the text.

use crate::support::{nix_available, Harness};

const ESCAPES: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
const SHOWN: &str = "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J";

#[test]
fn a_commit_subject_with_terminal_escapes_is_shown_escaped() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit(&format!("fix {ESCAPES}dns"));
    let run = h.run_once();
    run.expect(0);
    assert!(!run.stderr().contains('\u{1b}'), "{:?}", run.stderr());
    assert!(
        run.stderr().contains(&format!("fix {SHOWN}dns")),
        "{}",
        run.stderr()
    );
    for args in [&["history"][..], &["status"][..]] {
        let out = h.agent(args).stdout();
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains(&format!("fix {SHOWN}dns")), "{args:?}: {out}");
    }
    assert_eq!(h.history()[0]["subject"], format!("fix {ESCAPES}dns"));
}

#[test]
fn what_a_health_check_printed_is_shown_escaped() {
    let mut h = Harness::new();
    h.checks = Some(
        "[[health.checks]]\nname = \"noisy\"\ntype = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"printf 'bad \\\\033]0;pwned\\\\007\\\\033[2J' >&2; exit 1\"]\n"
            .into(),
    );
    let run = h.agent(&["check"]);
    run.expect(1);
    let out = run.stdout();
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains(&format!("bad {SHOWN}")), "{out}");
    let json = h.agent(&["check", "--json"]).stdout();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["checks"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("bad {ESCAPES}"))),
        "{v}"
    );
}
