//! The wall clock: re-exported from `teamtalk_core::time`, where embedders find it without
//! depending on this crate.

pub use teamtalk_core::time::SystemClock;
