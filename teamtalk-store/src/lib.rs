#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`memory`]: the in-memory backend.
//! - [`sqlite`]: the embedded SQLite backend.
//! - [`mysql`]: the MySQL + Redis backend on the original schema and keys.

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
