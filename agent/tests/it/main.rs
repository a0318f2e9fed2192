//! One integration-test binary: the real `homelab-agent` against real git and real nix.
//! See support/mod.rs for the harness.

mod bootloader;
mod cache_trust;
mod cli;
mod config_bounds;
mod daemon_git;
mod deploy;
mod http_checks;
mod killpoints;
mod layers;
mod locked_inputs;
mod memory;
mod metrics;
mod notifications;
mod orphans;
mod pause;
mod pivot;
mod plan;
mod prebuilt;
mod progress;
mod publish;
mod push_trigger;
mod reboots;
mod redirects;
mod safety;
mod shown_text;
mod state_damage;
mod status;
mod substitute;
mod support;
mod tag_heads;
mod testing_branch;
mod tls;
mod token_users;
mod transports;
mod trust;
