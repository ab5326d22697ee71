//! hopscope: an OpenTelemetry trace analyzer daemon.
//!
//! A span flows through the crate in this order:
//!
//! ```text
//!  OTLP/gRPC ──► ingest ──SpanBatch──► assemble::Buffer ──Completed──► assemble::assemble
//!  OTLP/HTTP ──► decode,               by trace id,                    one repaired tree
//!  (exporters)   convert               idle/max-age/limit                    │ Trace
//!                                                                            ▼
//!  HTTP API ◄──────────── store ◄──────────AnalyzedTrace─────────── analyze::analyze
//!  (people, Grafana)      recent traces,                             critical path,
//!                         hop aggregates                             latency share per hop
//! ```
//!
//! * [`ingest`]: the OTLP edge (gRPC and HTTP, protobuf and JSON); the only
//!   module that reads OTLP's wire formats.
//! * [`assemble`]: the in-flight buffer and the repairs that make a tree.
//! * [`analyze`]: pure functions over an assembled [`model::Trace`].
//! * [`store`]: bounded trace store and mergeable per-hop aggregates; with a
//!   data directory, the write-ahead log every accepted request goes to
//!   before its answer ([`store::wal`]) and the state file that keeps findings
//!   and aggregates across restarts ([`store::durable`]).
//! * [`api`]: the HTTP API and its JSON shapes, the Grafana JSON datasource,
//!   and Jaeger's query API ([`api::jaeger`]) on a listener of its own.
//! * [`clock`]: the daemon's clock, which every window and retention counts
//!   back from, and the bounds it puts on span times.
//! * [`daemon`]: wiring, tasks and ordered shutdown; [`config`]: every knob;
//!   [`listener`]: the HTTP listeners' connection limit, head timeout and
//!   bounded drain.
//! * [`forward`]: every analyzed trace's spans, with the analysis added as
//!   attributes, exported over OTLP to the user's backend (`--forward-otlp`).
//! * [`pipeline`]: what happens to a completed trace, shared by the daemon,
//!   `hopscope analyze` and the fuzz targets.
//! * [`offline`]: `hopscope analyze`, the same analysis of exported files.
//! * [`healthcheck`]: `hopscope healthcheck`, one probe of a running daemon's API.
//! * [`runtime`]: the log, the Tokio runtime and the shutdown signals every
//!   binary of the workspace sets up alike.
//!
//! The tools are crates of their own in `crates/`, so the daemon links none of
//! their dependencies: `hopscope-demo` (the daemon with instrumented services
//! in process) and `hopscope-loadgen` (OTLP load and the soak test).
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

pub mod analyze;
pub mod api;
pub mod assemble;
pub mod auth;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod forward;
pub mod healthcheck;
pub mod ingest;
pub mod listener;
pub mod memory;
pub mod model;
pub mod offline;
pub mod peers;
pub mod pipeline;
pub mod runtime;
pub mod stats;
pub mod store;
pub mod tls;
