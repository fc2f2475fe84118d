#![doc = include_str!("../README.md")]
//!
//! Every backend passes the same conformance kit (module `conformance`, feature `conformance`),
//! which a third-party backend can run from its own tests (docs/storage.md, "Writing your own
//! backend").
//!
//! # Modules
//!
//! - [`memory`]: the in-memory backend.
//! - [`sqlite`]: the embedded SQLite backend.
//! - [`mysql`]: the MySQL + Redis backend on the original schema and keys.
//! - `conformance` (feature `conformance`): the checks every backend must pass.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "mysql")]
pub use mysql::{MysqlRedisConfig, MysqlRedisStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStore};
