//! `ai:inference/model`: a small but real language model — bigram/trigram counts over a
//! word vocabulary, trained from `corpus.txt` at build time (build.rs) — as a Wasm component.
//!
//! Everything except `component` is plain Rust, unit-tested natively with the host toolchain.

pub mod config;
pub mod detmath;
pub mod engine;
pub mod model;
pub mod train;

#[cfg(target_arch = "wasm32")]
mod component;
