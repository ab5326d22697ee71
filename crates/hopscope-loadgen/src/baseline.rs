//! The raw-decode baseline: how fast prost alone decodes the very requests a run
//! sends, on one thread, timed before sending starts so that nothing competes
//! with it. A daemon's spans per CPU-second divided by this rate says how much
//! of a core's decoding capacity survives the whole pipeline.

use std::time::{Duration, Instant};

use prost::Message;

use super::probe::{utime_stime, CLOCK_TICKS_PER_SEC};
use super::template::Template;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;

/// What timing raw prost decoding of the run's requests measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeBaseline {
    /// Distinct requests decoded (each at least once).
    pub requests: usize,
    /// Decodes in all.
    pub decodes: u64,
    /// Spans in those decodes.
    pub spans: u64,
    /// Wall time of the decoding loop.
    pub elapsed: Duration,
    /// The loop thread's CPU time over its wall time (from
    /// `/proc/thread-self/stat`, 10 ms resolution); well under 1 means the
    /// thread was kept off the CPU and the rate is too low. `None` where
    /// unavailable.
    pub on_cpu: Option<f64>,
}

impl DecodeBaseline {
    /// Decoded spans per second of the loop's wall time, on one thread.
    pub fn spans_per_sec(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Decodes the templates round-robin with `ExportTraceServiceRequest::decode`
/// (from `Bytes`, as a server does) until `at_least` has passed and every
/// template was decoded once. Blocks the calling thread.
pub(super) fn measure(templates: &[Template], at_least: Duration) -> DecodeBaseline {
    let encoded: Vec<_> = templates.iter().map(|t| (t.encoded(), t.spans())).collect();
    let cpu_before = thread_cpu_ticks();
    let start = Instant::now();
    let (mut decodes, mut spans) = (0u64, 0u64);
    for (bytes, n) in encoded.iter().cycle() {
        let request =
            ExportTraceServiceRequest::decode(bytes.clone()).expect("a generated request decodes");
        // Dropping the message is part of what a server pays for it.
        drop(std::hint::black_box(request));
        decodes += 1;
        spans += n;
        if decodes >= encoded.len() as u64 && start.elapsed() >= at_least {
            break;
        }
    }
    let elapsed = start.elapsed();
    let on_cpu = match (cpu_before, thread_cpu_ticks()) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_SEC / elapsed.as_secs_f64())
        }
        _ => None,
    };
    DecodeBaseline {
        requests: encoded.len(),
        decodes,
        spans,
        elapsed,
        on_cpu,
    }
}

/// `utime + stime` of the calling thread, in clock ticks (Linux).
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    utime_stime(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, Shape};

    #[test]
    fn decodes_every_template_for_at_least_the_time_asked() {
        let mut gen = Generator::new(3, Shape::default()).unwrap();
        let templates: Vec<_> = (0..3).map(|_| Template::generate(&mut gen, 100)).collect();
        let per_round: u64 = templates.iter().map(Template::spans).sum();
        let b = measure(&templates, Duration::from_millis(50));
        assert_eq!(b.requests, 3);
        assert!(b.decodes >= 3 && b.elapsed >= Duration::from_millis(50));
        assert!(b.spans >= per_round);
        assert!(b.spans_per_sec().is_finite() && b.spans_per_sec() > 0.0);
        if let Some(on_cpu) = b.on_cpu {
            assert!(on_cpu >= 0.0);
        }
        // A round is never cut short of the templates: zero time still decodes each once.
        let once = measure(&templates, Duration::ZERO);
        assert_eq!((once.decodes, once.spans), (3, per_round));
    }
}
