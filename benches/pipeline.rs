//! Pipeline benchmark: prints spans/s for each stage, bytes per buffered span
//! from the allocator's own count, and an end-to-end run of the daemon binary.
//!
//! `cargo bench --bench pipeline` (set `HOPSCOPE_BENCH_SPANS` to change the
//! volume, default 1,000,000 spans).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hopscope::analyze::analyze;
use hopscope::assemble::{assemble, Buffer, BufferLimits};
use hopscope::ingest::decode_export;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::loadgen::{Generator, Shape};
use hopscope::model::{Span, SpanId, SpanKind, TraceId};
use hopscope::stats::Stats;
use prost::Message;

/// Counts live heap bytes, to measure what the buffer really holds.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

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

fn rate(spans: usize, elapsed: Duration) -> String {
    format!("{:>10.0} spans/s", spans as f64 / elapsed.as_secs_f64())
}

fn main() {
    let total: usize = std::env::var("HOPSCOPE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // 16 spans per trace: an entry calling 5 services, each answering from a database.
    let shape = Shape {
        depth: 1,
        fan_out: 5,
        ..Shape::default()
    };
    let mut gen = Generator::new(42, shape).expect("a valid shape");
    let requests: Vec<ExportTraceServiceRequest> = (0..total / BATCH)
        .map(|i| gen.request(BATCH, base + i as u64 * 1_000_000))
        .collect();
    let spans: usize = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let encoded: Vec<Bytes> = requests.iter().map(|r| r.encode_to_vec().into()).collect();
    let wire: usize = encoded.iter().map(Bytes::len).sum();
    println!(
        "workload: {spans} spans in {} requests of ~{BATCH}, {} spans/trace, {:.0} bytes/span on the wire",
        encoded.len(),
        gen.spans_per_trace(),
        wire as f64 / spans as f64
    );

    // 1. Raw prost decode: the limit the pipeline is measured against.
    let t = Instant::now();
    for e in &encoded {
        std::hint::black_box(ExportTraceServiceRequest::decode(e.clone()).unwrap());
    }
    let decode = t.elapsed();
    println!(
        "decode (prost)                  {}  (one core)",
        rate(spans, decode)
    );

    // 2. Decode straight into the internal model (what the daemon does).
    let t = Instant::now();
    for e in &encoded {
        std::hint::black_box(decode_export(e).unwrap());
    }
    println!(
        "decode into the model            {}  (one core)",
        rate(spans, t.elapsed())
    );

    // 3. Decode, convert, insert into the buffer; live heap growth per span.
    let buffer = Buffer::new(
        BufferLimits {
            idle: Duration::from_secs(3600),
            max_age: Duration::from_secs(3600),
            late_grace: Duration::from_secs(60),
            max_spans: usize::MAX,
        },
        Arc::new(Stats::default()),
    );
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let now = tokio::time::Instant::now();
    for e in &encoded {
        for (id, spans) in decode_export(e).unwrap().traces {
            buffer.insert(id, spans, now);
        }
    }
    let elapsed = t.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "decode + buffer insert          {}  (one core)",
        rate(spans, elapsed)
    );
    println!(
        "buffer memory                   {:>10.0} bytes/span (allocator), {:.0} bytes/span (estimate), span struct {} bytes",
        held as f64 / spans as f64,
        buffer.bytes() as f64 / spans as f64,
        std::mem::size_of::<Span>()
    );

    // 4. Assembly + critical path on one trace of each size.
    let done = buffer.drain();
    let arena: usize = done.iter().map(|c| c.spans.arena.mark() as usize).sum();
    println!(
        "  of which attributes           {:>10.0} bytes/span packed in the arenas",
        arena as f64 / spans as f64
    );
    let t = Instant::now();
    let traces = done.len();
    for c in done {
        std::hint::black_box(analyze(assemble(c.trace_id, c.spans).unwrap()));
    }
    println!(
        "assemble + analyze              {}  ({:.1} µs per {}-span trace)",
        rate(spans, t.elapsed()),
        t.elapsed().as_secs_f64() * 1e6 / traces as f64,
        gen.spans_per_trace()
    );
    for (label, spans) in [
        ("10 spans, fan-out", tree(10, false)),
        ("1,000 spans, fan-out", tree(1_000, false)),
        ("100,000 spans, fan-out", tree(100_000, false)),
        ("10,000-deep chain", tree(10_000, true)),
    ] {
        let n = spans.len();
        let t = Instant::now();
        let a = analyze(
            assemble(
                TraceId::from_bytes(&[3; 16]).unwrap(),
                spans.into_iter().collect(),
            )
            .unwrap(),
        );
        std::hint::black_box(&a);
        println!(
            "critical path {label:<24} {:>10.3} ms  ({})",
            t.elapsed().as_secs_f64() * 1e3,
            rate(n, t.elapsed())
        );
    }

    end_to_end(&encoded, spans, decode);
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

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (clock ticks of 100 Hz).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// The daemon binary on loopback, 4 concurrent OTLP/gRPC connections.
fn end_to_end(encoded: &[Bytes], spans: usize, decode: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--trace-idle",
            "2s",
        ])
        .env("HOPSCOPE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("hopscope listening"))
        .expect("daemon logs its addresses");
    std::thread::spawn(move || lines.for_each(drop));
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .to_owned()
    };
    let (grpc, api) = (addr("otlp_grpc_addr="), addr("api_addr="));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let requests: Vec<ExportTraceServiceRequest> = encoded
        .iter()
        .map(|e| ExportTraceServiceRequest::decode(e.clone()).unwrap())
        .collect();
    let requests = Arc::new(requests);
    let cpu_before = cpu_seconds(pid);
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..4 {
            let requests = requests.clone();
            let grpc = format!("http://{grpc}");
            tasks.push(tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(grpc).await.unwrap();
                for r in requests.iter().skip(c).step_by(4) {
                    client.export(r.clone()).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let sent = t.elapsed();
    let cpu_ingest = cpu_seconds(pid) - cpu_before;
    let rss_peak_ingest = proc_field(pid, "status", "VmHWM:");
    // Wait until every trace went idle and was analyzed.
    let stats = rt.block_on(async {
        loop {
            let s: serde_json::Value = reqwest::get(format!("http://{api}/api/v1/stats"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["buffered_spans"] == 0 && s["analysis_pending"] == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let cpu_total = cpu_seconds(pid) - cpu_before;
    println!(
        "end to end (gRPC, 4 conns)      {}  wall; {:.0} spans per daemon CPU-second ingesting, {:.0} including analysis",
        rate(spans, sent),
        spans as f64 / cpu_ingest.max(0.01),
        spans as f64 / cpu_total.max(0.01),
    );
    println!(
        "  ratio to raw prost decode      {:.2} (daemon spans per CPU-second incl. analysis / decoded spans per CPU-second)",
        (spans as f64 / cpu_total.max(0.01)) / (spans as f64 / decode.as_secs_f64())
    );
    println!(
        "  daemon peak RSS                {} MiB while ingesting; accepted {} spans, analyzed {} traces",
        rss_peak_ingest / 1024,
        stats["counters"]["spans_accepted"],
        stats["stored_traces"]
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .ok();
    child.wait().ok();
}
