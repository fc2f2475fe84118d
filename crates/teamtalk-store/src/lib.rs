//! Storage backends implementing the traits of [`teamtalk_core::store`].
//!
//! | backend | for | durability |
//! |---|---|---|
//! | [`memory::MemoryStore`] | tests, demos | none: everything is lost with the process |
//!
//! The SQLite backend (the embedded default) and the MySQL + Redis backend (the original
//! TeamTalk schema and key layout) follow; every backend passes the same conformance suite
//! (`tests/conformance.rs`).
//!
//! # Layout
//!
//! - [`memory`]: the in-memory backend.

pub mod memory;

pub use memory::MemoryStore;
