//! `[[notify.commands]]`: a program and its arguments (never a shell line), with the
//! event in its environment.

use crate::config::announce::Hook;
use crate::process::Cmd;

use super::Event;

/// The variables a hook command gets (README "Notifications").
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    vec![
        ("HOMELAB_AGENT_OUTCOME", event.outcome.to_string()),
        ("HOMELAB_AGENT_HOST", event.host.clone()),
        ("HOMELAB_AGENT_COMMIT", opt(event.commit.clone())),
        ("HOMELAB_AGENT_SUBJECT", opt(event.subject.clone())),
        (
            "HOMELAB_AGENT_GENERATION",
            opt(event.generation.map(|g| g.to_string())),
        ),
        ("HOMELAB_AGENT_PHASE", opt(event.phase.map(str::to_string))),
        (
            "HOMELAB_AGENT_NEEDS_ATTENTION",
            if event.needs_attention { "1" } else { "0" }.into(),
        ),
        // `rolled_back`: 1 the previous system was restored, 0 it could not be, empty
        // when nothing was rolled back (not a failed activation).
        (
            "HOMELAB_AGENT_ROLLED_BACK",
            match event.rolled_back {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            }
            .into(),
        ),
        ("HOMELAB_AGENT_FROM_COMMIT", opt(event.from_commit.clone())),
        (
            "HOMELAB_AGENT_FROM_GENERATION",
            opt(event.from_generation.map(|g| g.to_string())),
        ),
        ("HOMELAB_AGENT_MESSAGE", event.message.clone()),
        // What to do about a failure (its own hint), empty when it has none.
        ("HOMELAB_AGENT_HINT", opt(event.hint.clone())),
    ]
}

pub async fn run(index: usize, hook: &Hook, event: &Event) {
    let mut cmd = Cmd::new(&hook.command[0])
        .args(&hook.command[1..])
        .timeout(hook.timeout);
    for (k, v) in environment(event) {
        cmd = cmd.env(k, v);
    }
    match cmd.run_ok().await {
        Ok(_) => log::info!(
            "notify.commands[{index}] ({}) told: {}",
            cmd.program_name(),
            event.outcome
        ),
        Err(e) => {
            let hint = "the run is recorded all the same; fix or remove the hook in [notify]";
            log::warn!(hint = hint; "{}", crate::failure::with_hint_line(format!("notify.commands[{index}] failed: {e}"), hint))
        }
    }
}
