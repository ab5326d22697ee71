//! Arbitrary span graphs (cycles, self-parents, duplicate ids, end < start,
//! zero and far-future times, huge and deep traces) through assembly, analysis,
//! every detector and the trace API's JSON (see `hopscope_fuzz::span_graph`).
#![no_main]

libfuzzer_sys::fuzz_target!(|graph: hopscope_fuzz::Graph| hopscope_fuzz::span_graph(graph));
