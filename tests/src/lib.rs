//! End-to-end test harness: starts real components and waits for them.

pub mod secrets;
pub mod support;
