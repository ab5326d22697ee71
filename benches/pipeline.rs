//! Pipeline benchmark: spans/s of each stage on one core, bytes per buffered
//! span counted by the allocator, and critical-path time per trace size. Every
//! timed stage runs `HOPSCOPE_BENCH_RUNS` times (default 5) and prints the
//! median with the spread (min–max).
//!
//! ```text
//! cargo bench --bench pipeline
//! HOPSCOPE_BENCH_SPANS=3000000 HOPSCOPE_BENCH_DEPTH=1 HOPSCOPE_BENCH_FAN_OUT=5 \
//!     HOPSCOPE_BENCH_EXTRA_ATTRS=10 cargo bench --bench pipeline
//! ```
//!
//! The workload is the load generator's (`crates/hopscope-loadgen`), so these figures and
//! `hopscope-loadgen` (end to end, against the daemon) measure the same spans.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hopscope::analyze::budget::{budget_map, call_records, detect, Timeouts};
use hopscope::analyze::saturation;
use hopscope::analyze::{analyze, coverage, Options, Thresholds};
use hopscope::assemble::{assemble, Buffer, BufferLimits, Completed, Completion};
use hopscope::config::Config;
use hopscope::daemon::new_store;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::{decode_export, decode_export_json};
use hopscope::model::{Span, SpanId, SpanKind, SpanSet, TraceId};
use hopscope::pipeline::finish;
use hopscope::stats::Stats;
use hopscope::store::WINDOW_MAX_RECORDS;
use hopscope_loadgen::{Generator, Shape};
use prost::Message;

/// Counts live heap bytes, to measure what the buffer really holds.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// arguments; the counter is an atomic and allocates nothing.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BATCH: usize = 512;

#[allow(
    clippy::disallowed_methods,
    reason = "the benchmark's knobs are its own environment variables"
)]
fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and spread of `runs` timings of `f`, as "items per second".
fn rate(runs: usize, items: usize, mut f: impl FnMut()) -> String {
    let secs: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    per_second(items, secs)
}

/// Median and spread of timings (seconds, at least one) of `items` each,
/// as "items per second".
fn per_second(items: usize, mut secs: Vec<f64>) -> String {
    secs.sort_by(f64::total_cmp);
    let per = |s: f64| items as f64 / s;
    format!(
        "{:>10.0} spans/s  (median of {}; {:.0}–{:.0})",
        per(secs[secs.len() / 2]),
        secs.len(),
        per(secs[secs.len() - 1]),
        per(secs[0])
    )
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> String {
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "{:>9.3} ms  (median of {runs}; {:.3}–{:.3})",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    )
}

/// Adds `n` application attributes with realistic values to every span.
fn add_attributes(req: &mut ExportTraceServiceRequest, n: usize, seed: &mut u64) {
    for span in req
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
    {
        for i in 0..n {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let value = if i % 2 == 0 {
                format!("tenant-{:04}", *seed >> 54)
            } else {
                format!("{:016x}", *seed)
            };
            span.attributes.push(KeyValue {
                key: format!("app.attribute_{i}"),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(value)),
                }),
                ..Default::default()
            });
        }
    }
}

fn main() {
    let total = env("HOPSCOPE_BENCH_SPANS", 1_000_000);
    let runs = env("HOPSCOPE_BENCH_RUNS", 5).max(1);
    let extra = env("HOPSCOPE_BENCH_EXTRA_ATTRS", 0);
    let defaults = Shape::default();
    let shape = Shape {
        depth: env("HOPSCOPE_BENCH_DEPTH", defaults.depth),
        fan_out: env("HOPSCOPE_BENCH_FAN_OUT", defaults.fan_out),
        entry_query: env("HOPSCOPE_BENCH_ENTRY_QUERY", 0) != 0,
        ..defaults
    };
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut gen = Generator::new(42, shape).expect("a valid shape");
    let mut seed = 7;
    let encoded: Vec<Bytes> = (0..total.div_ceil(BATCH))
        .map(|i| {
            let mut req = gen.request(BATCH, base + i as u64 * 1_000_000);
            add_attributes(&mut req, extra, &mut seed);
            req.encode_to_vec().into()
        })
        .collect();
    let spans: usize = encoded
        .iter()
        .map(|e| decode_export(e).unwrap().accepted as usize)
        .sum();
    let attributes: usize = encoded
        .iter()
        .take(20)
        .map(|e| {
            let req = ExportTraceServiceRequest::decode(e.clone()).unwrap();
            req.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| s.attributes.len())
                .sum::<usize>()
        })
        .sum();
    let sample: usize = encoded
        .iter()
        .take(20)
        .map(|e| decode_export(e).unwrap().accepted as usize)
        .sum();
    let wire: usize = encoded.iter().map(Bytes::len).sum();
    println!(
        "workload: {spans} spans in {} requests, {} spans/trace, {:.1} attributes/span, {:.0} bytes/span on the wire",
        encoded.len(),
        gen.spans_per_trace(),
        attributes as f64 / sample as f64,
        wire as f64 / spans as f64
    );

    println!(
        "decode (prost, raw)             {}",
        rate(runs, spans, || {
            for e in &encoded {
                std::hint::black_box(ExportTraceServiceRequest::decode(e.clone()).unwrap());
            }
        })
    );
    println!(
        "decode into the model           {}",
        rate(runs, spans, || {
            for e in &encoded {
                std::hint::black_box(decode_export(e).unwrap());
            }
        })
    );
    // The same requests as OTLP/JSON (what an `http/json` exporter sends).
    let json: Vec<Vec<u8>> = encoded
        .iter()
        .map(|e| {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as Otlp;
            serde_json::to_vec(&Otlp::decode(e.clone()).unwrap()).unwrap()
        })
        .collect();
    let json_accepted: usize = json
        .iter()
        .map(|j| decode_export_json(j).unwrap().accepted as usize)
        .sum();
    assert_eq!(json_accepted, spans, "the JSON form holds the same spans");
    println!(
        "decode OTLP/JSON into the model {} ({:.0} bytes/span)",
        rate(runs, spans, || {
            for j in &json {
                std::hint::black_box(decode_export_json(j).unwrap());
            }
        }),
        json.iter().map(Vec::len).sum::<usize>() as f64 / spans as f64
    );

    let limits = BufferLimits {
        idle: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        late_grace: Duration::from_secs(60),
        max_spans: usize::MAX,
        max_bytes: usize::MAX,
    };
    let batches: Vec<_> = encoded.iter().map(|e| decode_export(e).unwrap()).collect();
    let mut held = Vec::new();
    let mut secs = Vec::new();
    let mut sets: Vec<(TraceId, SpanSet)> = Vec::new();
    for _ in 0..runs {
        drop(std::mem::take(&mut sets));
        let before = LIVE.load(Ordering::Relaxed);
        let fresh: Vec<_> = batches.iter().map(|b| b.traces.clone()).collect();
        let buffer = Buffer::new(limits, Arc::new(Stats::default()));
        let now = Instant::now();
        let t = Instant::now();
        for traces in fresh {
            for (id, set) in traces {
                buffer.insert(id, set, now, None);
            }
        }
        secs.push(t.elapsed().as_secs_f64());
        // Everything the buffer holds: spans, arenas, its map, interned strings.
        held.push((LIVE.load(Ordering::Relaxed) - before) as f64);
        sets = buffer
            .drain()
            .into_iter()
            .map(|c| (c.trace_id, c.spans))
            .collect();
    }
    println!(
        "buffer insert                   {}",
        per_second(spans, secs)
    );
    held.sort_by(f64::total_cmp);
    let arena: usize = sets.iter().map(|(_, s)| s.arena.mark() as usize).sum();
    println!(
        "buffer memory                   {:>10.0} bytes/span held (allocator count, {} in flight); span struct {} bytes, attributes {:.0} bytes/span",
        held[held.len() / 2] / spans as f64,
        spans,
        size_of::<Span>(),
        arena as f64 / spans as f64
    );

    let traces = sets.len();
    println!(
        "assemble + analyze              {}  ({traces} traces)",
        rate(runs, spans, || {
            for (id, set) in sets.iter().cloned() {
                std::hint::black_box(analyze(assemble(id, set).unwrap()));
            }
        })
    );
    // The daemon's whole path for a completed trace (`pipeline::finish`):
    // assembly, analysis, its call records and `Store::put` (aggregates,
    // findings, the call window), into a store with the daemon's defaults.
    let completed = |sets: &[(TraceId, SpanSet)]| -> Vec<Completed> {
        sets.iter()
            .cloned()
            .map(|(trace_id, spans)| Completed {
                trace_id,
                spans,
                completion: Completion::Idle,
                late: false,
                log: None,
            })
            .collect()
    };
    let options = Options::default();
    let mut secs = Vec::new();
    for _ in 0..runs {
        let store = new_store(&Config::default(), Arc::new(Stats::default()));
        let batch = completed(&sets);
        let t = Instant::now();
        finish(&store, &options, None, batch);
        secs.push(t.elapsed().as_secs_f64());
    }
    println!(
        "finish: analyze + store         {}",
        per_second(spans, secs)
    );
    // What each service's spans carry (`Store::put` counts it per trace).
    let assembled: Vec<_> = sets
        .iter()
        .cloned()
        .map(|(id, set)| analyze(assemble(id, set).unwrap()))
        .collect();
    println!(
        "coverage count                  {}",
        rate(runs, spans, || {
            for t in &assembled {
                std::hint::black_box(coverage::count(t));
            }
        })
    );
    drop(assembled);
    // The cross-trace detectors on a full window (as many traces as the store's
    // window keeps: WINDOW_MAX_RECORDS records).
    let mut window = Vec::new();
    let (mut records, mut calls) = (0, 0);
    for (id, set) in sets.iter().cloned() {
        let record = call_records(&analyze(assemble(id, set).unwrap()));
        records += record.records();
        calls += record.calls.len();
        window.push(Arc::new(record));
        if records >= WINDOW_MAX_RECORDS {
            break;
        }
    }
    let thresholds = Thresholds::default();
    println!(
        "timeout detectors, full window  {}  ({} traces, {records} records, {calls} calls)",
        median_ms(runs, || {
            std::hint::black_box(detect(&window, &thresholds, &Timeouts::default()));
        }),
        window.len()
    );
    println!(
        "saturation detectors, same window {}",
        median_ms(runs, || {
            std::hint::black_box(saturation::detect(&window, &thresholds));
        })
    );
    println!(
        "timeout budget map, same window {}",
        median_ms(runs, || {
            std::hint::black_box(budget_map(&window, &thresholds, &Timeouts::default()));
        })
    );
    for (label, n, chain) in [
        ("10 spans, fan-out", 10, false),
        ("1,000 spans, fan-out", 1_000, false),
        ("100,000 spans, fan-out", 100_000, false),
        ("10,000-deep chain", 10_000, true),
    ] {
        let set: SpanSet = tree(n, chain).into_iter().collect();
        println!(
            "critical path {label:<24}{}",
            median_ms(runs, || {
                let a =
                    analyze(assemble(TraceId::from_bytes(&[3; 16]).unwrap(), set.clone()).unwrap());
                std::hint::black_box(a);
            })
        );
    }
}

/// `n` spans: a chain, or a tree where span `i` hangs under `i / 8`.
fn tree(n: usize, chain: bool) -> Vec<Span> {
    (1..=n as u64)
        .map(|i| {
            let parent = if chain { i - 1 } else { i / 8 };
            let depth = if chain {
                i
            } else {
                64 - i.leading_zeros() as u64
            };
            Span::new(
                SpanId::from_u64(i).unwrap(),
                SpanId::from_u64(parent),
                "svc",
                "op",
                SpanKind::Internal,
                (depth * 10 + i % 7, 10_000_000 - depth * 10 - i % 5),
            )
        })
        .collect()
}
