//! Spindle: a Kubernetes operator for Spin WebAssembly apps.
//!
//! Data flows one way: [`api`] (wire types) → `model` (validated app) →
//! `render` (pure functions to Kubernetes objects) → `apply` (server-side
//! apply) → `status`.

pub mod activator;
pub mod api;
pub mod apply;
pub mod controller;
pub mod fence;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod oci;
pub mod render;
pub mod scale;
pub mod status;
pub mod telemetry;
