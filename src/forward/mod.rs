//! The forwarding stage: analyzed traces leave the daemon over OTLP.

pub mod records;
