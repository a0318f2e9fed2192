//! The Health door: the health checks against the live system (the real one:
//! [`super::Real`] over agent/src/health).

use crate::health;

use super::Fut;

/// The health checks, against whatever system is live now.
pub trait Health {
    fn wait_until_healthy(&self) -> Fut<'_, health::Report>;
}
