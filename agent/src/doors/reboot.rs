//! The reboot side's effects behind traits, so every decision is a unit test with fakes:
//! the FleetLock slot ([`Slot`]), the reboot itself ([`Rebooter`]) and the bootloader's
//! one-shot trial ([`TrialBoot`], built by [`trial_door`]). The real ones are
//! the HTTP client of `fleetlock.rs` and `systemctl reboot --message=<reason>` (systemd
//! logs the reason; systemd 252, Debian 12's, accepts the option).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Bootloader, Settings, UBootSettings};
use crate::doors::Fut;
use crate::process::Cmd;

use super::fleetlock::{self, Client, LockError};
use super::trial::TrialBoot;

/// A FleetLock reboot slot for this machine.
pub trait Slot {
    /// `url (group g, id i)`, for messages and status.
    fn describe(&self) -> String;
    /// The id it takes the slot with.
    fn id(&self) -> String;
    fn take(&self) -> Fut<'_, Result<(), LockError>>;
    /// Releases the slot taken with `id` (this id, or the one recorded when it was taken).
    fn release_as<'a>(&'a self, id: &'a str) -> Fut<'a, Result<(), LockError>>;
}

/// Reboots the machine (returns once the reboot is queued).
pub trait Rebooter {
    fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>>;
}

/// What the reboot side acts through.
pub struct Effects {
    /// `None` without `[reboot] fleetlock_url`; an error when the lock id is unknown.
    pub slot: Option<Result<Box<dyn Slot>, String>>,
    /// The id an agent that did not record its slot's id took it with (the raw machine id).
    pub legacy_slot_id: Option<String>,
    pub rebooter: Box<dyn Rebooter>,
    /// The bootloader's one-shot trial; `None` without one (`[reboot] bootloader =
    /// "none"`): then a deployment that needs a reboot is never booted into by the agent.
    pub trial: Option<Box<dyn TrialBoot>>,
}

/// The real trial door for `[reboot] bootloader`.
pub fn trial_door(bootloader: Bootloader, settings: UBootSettings) -> Option<Box<dyn TrialBoot>> {
    match bootloader {
        Bootloader::None => None,
        Bootloader::Uboot => Some(Box::new(super::uboot::UBoot::new(settings))),
        Bootloader::TestModel => Some(Box::new(super::trial_model::TestModelDoor::new(
            &settings.boot_dir,
        ))),
    }
}

impl Effects {
    pub fn real(settings: &Settings) -> Effects {
        let slot = settings.reboot.fleetlock.as_ref().map(|f| {
            let id = fleetlock::lock_id(f, std::path::Path::new(fleetlock::MACHINE_ID))?;
            let client = Client::new(&f.url, &f.group, &id)?;
            Ok(Box::new(client) as Box<dyn Slot>)
        });
        let legacy_slot_id = settings.reboot.fleetlock.as_ref().and_then(|f| {
            fleetlock::legacy_lock_id(f, std::path::Path::new(fleetlock::MACHINE_ID))
        });
        Effects {
            slot,
            legacy_slot_id,
            rebooter: Box::new(Systemctl {
                program: settings.paths.systemctl.clone(),
            }),
            trial: trial_door(settings.reboot.bootloader, settings.reboot.uboot.clone()),
        }
    }
}

impl Slot for Client {
    fn describe(&self) -> String {
        Client::describe(self)
    }
    fn id(&self) -> String {
        Client::id(self).to_string()
    }
    fn take(&self) -> Fut<'_, Result<(), LockError>> {
        Box::pin(self.pre_reboot())
    }
    fn release_as<'a>(&'a self, id: &'a str) -> Fut<'a, Result<(), LockError>> {
        Box::pin(self.steady_state_as(id))
    }
}

/// `systemctl reboot --message=<reason>`.
pub struct Systemctl {
    pub program: PathBuf,
}

/// The argument vector of the reboot (pure, tested).
pub fn reboot_argv(reason: &str) -> Vec<String> {
    // One line, bounded: it lands in the journal and in wall messages.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    vec!["reboot".into(), format!("--message={reason}")]
}

impl Rebooter for Systemctl {
    fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>> {
        Box::pin(async move {
            Cmd::new(&self.program)
                .args(reboot_argv(reason))
                .timeout(Duration::from_secs(60))
                .run_ok()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_one_bounded_line_in_one_argument() {
        assert_eq!(
            reboot_argv("kernel changed\nin gen 4; rm -rf /"),
            ["reboot", "--message=kernel changed in gen 4; rm -rf /"]
        );
        assert_eq!(
            reboot_argv(&"x".repeat(500))[1].len(),
            "--message=".len() + 200
        );
    }
}
