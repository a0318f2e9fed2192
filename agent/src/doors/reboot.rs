//! What the reboot side acts through, as one bundle ([`Effects`]), so every decision
//! is a unit test with fakes: the FleetLock slot ([`Slot`]), the reboot itself
//! ([`Rebooter`]), the bootloader's one-shot trial ([`TrialBoot`], built by
//! [`trial_door`]) and the system's links ([`Links`]).

use crate::config::{Bootloader, Settings, UBootSettings};

use super::fleetlock::{self, Client};
pub use super::links::{Links, SystemLinks};
pub use super::rebooter::{reboot_argv, Rebooter, Systemctl};
pub use super::slot::Slot;
use super::trial::TrialBoot;

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
    /// The booted and running systems and the profile.
    pub links: Box<dyn Links>,
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
            links: Box::new(SystemLinks::new(&settings.paths)),
        }
    }
}
