//! Storage backends implementing the traits of [`teamtalk_core::store`].
//!
//! | backend | for | durability |
//! |---|---|---|
//! | [`memory::MemoryStore`] | tests, demos | none: everything is lost with the process |
//! | [`sqlite::SqliteStore`] (feature `sqlite`, default) | the embedded default: one file, no server | survives a process crash; optionally power loss |
//!
//! The SQLite backend (the embedded default) and the MySQL + Redis backend (the original
//! TeamTalk schema and key layout) follow; every backend passes the same conformance suite
//! (`tests/conformance.rs`).
//!
//! # Layout
//!
//! - [`memory`]: the in-memory backend.
//! - [`sqlite`]: the embedded SQLite backend.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStore};
