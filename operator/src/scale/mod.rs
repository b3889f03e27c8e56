//! Scale to zero: the pure decision logic (docs/scale-to-zero.md), the activator-port
//! allocator and the objects the operator adds for a scale-to-zero app.
//!
//! Nothing here talks to the apiserver: the controller gathers [`Inputs`],
//! calls [`decide`] and performs the returned [`Action`]s **in order**,
//! stopping at the first failure (the next reconcile decides again). The
//! ordering is what makes both switches lossless:
//!
//! - going to zero: the activator EndpointSlice is applied *before* the
//!   Deployment is scaled to 0;
//! - waking: the slice is deleted only *after* a ready pod has been observed
//!   (plus [`SLICE_REMOVAL_HYSTERESIS`]).

mod decision;
pub mod observe;
mod ports;
pub mod render;
mod settings;

pub use decision::*;
pub use ports::*;
pub use settings::*;
