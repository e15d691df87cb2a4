//! The domain core: ids, models, retry policy, the delivery state machine,
//! signatures and filters.
//!
//! Everything here is pure: no I/O, no clocks read, no async. Callers pass the
//! current time in. That is what lets whole retry schedules be unit-tested in
//! microseconds and lets both store implementations share one set of rules.

pub mod attempt_stats;
pub mod delivery;
pub mod duration;
pub mod filter;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod flow;
pub mod health;
pub mod id;
pub mod model;
pub mod number;
pub mod openapi_import;
pub mod ordering;
#[cfg(test)]
mod properties;
pub mod retry;
pub mod signing;
pub mod steering;
pub mod time;
pub mod validate;
