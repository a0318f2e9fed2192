//! The Slot door: a FleetLock reboot slot for this machine, so that only so many
//! machines of a group reboot at once. The real one is the HTTP client of
//! `fleetlock.rs`.

use crate::doors::Fut;

use super::fleetlock::{Client, LockError};

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
