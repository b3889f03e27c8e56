//! Spindle: a Kubernetes operator for Spin WebAssembly apps.
//!
//! Data flows one way: [`api`] (wire types) → `model` (validated app) →
//! `render` (pure functions to Kubernetes objects) → `apply` (server-side
//! apply) → `status`.

pub mod api;
