//! OTLP/JSON request bodies → the span model, then the whole pipeline over
//! what decoded (see `hopscope_fuzz::otlp_json`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hopscope_fuzz::otlp_json(data));
