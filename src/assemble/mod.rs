//! Assembly: spans of one trace arrive in many requests, from many services, in
//! any order. [`Buffer`] holds them by trace id until the trace is complete;
//! [`assemble`] turns a complete set into one repaired tree.

mod buffer;
mod repair;

pub use buffer::{Admitted, Buffer, BufferLimits, Completed, Completion, MemoryFull};
pub use repair::assemble;
