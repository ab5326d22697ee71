//! Helpers shared by the integration tests (test-only code).
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod checks;
pub mod jaeger;
