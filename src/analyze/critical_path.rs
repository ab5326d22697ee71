//! The critical path of one trace: at every instant of the root span, the span the
//! request was waiting on.
//!
//! Walk back from the end of the root: the request waits on the child that
//! finished last before the cursor; time not covered by such a child is the span's
//! own. Children are clipped to their parent's interval (the part of a child after
//! its parent ended was not waited for). This is the algorithm of Jaeger UI's
//! critical-path view, made iterative so a 10,000-deep chain does not overflow the
//! stack. The segments partition the root's interval, so their durations add up to
//! the root's duration exactly.

use crate::model::{Trace, Warning, WarningCode};

/// A piece of the critical path: span `span` was the one being waited on in
/// `[start_ns, end_ns)` (adjusted for clock skew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub span: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone)]
pub struct CriticalPath {
    /// In time order; consecutive, covering the root span's interval.
    pub segments: Vec<Segment>,
    /// Time each span spent on the critical path.
    pub critical_ns: Vec<u64>,
    /// Time each span was not covered by any of its children (clipped to the span).
    pub self_ns: Vec<u64>,
    /// Where timing alone could not say what blocked.
    pub notes: Vec<Warning>,
}

#[derive(Clone, Copy)]
struct Candidate {
    span: u32,
    start: u64,
    end: u64,
}

struct Frame {
    span: u32,
    start: u64,
    cursor: u64,
    /// This frame's children in `scratch[lo..hi]`, sorted by clipped end; `hi` shrinks.
    lo: usize,
    hi: usize,
    noted_overlap: bool,
}

/// Computes the critical path of `trace` from its root.
pub fn critical_path(trace: &Trace) -> CriticalPath {
    let n = trace.len();
    let mut segments = Vec::new();
    let mut notes = Vec::new();
    let mut scratch: Vec<Candidate> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();

    let push = |stack: &mut Vec<Frame>, scratch: &mut Vec<Candidate>, c: Candidate| {
        let lo = scratch.len();
        scratch.extend(trace.children(c.span).iter().filter_map(|&k| {
            let start = trace.start(k).max(c.start);
            let end = trace.end(k).min(c.end);
            (end > start).then_some(Candidate {
                span: k,
                start,
                end,
            })
        }));
        scratch[lo..].sort_by_key(|k| (k.end, k.start));
        stack.push(Frame {
            span: c.span,
            start: c.start,
            cursor: c.end,
            lo,
            hi: scratch.len(),
            noted_overlap: false,
        });
    };

    let root = Candidate {
        span: trace.root,
        start: trace.start(trace.root),
        end: trace.end(trace.root),
    };
    push(&mut stack, &mut scratch, root);

    while let Some(frame) = stack.last_mut() {
        let mut chosen = None;
        while frame.hi > frame.lo {
            frame.hi -= 1;
            let c = scratch[frame.hi];
            if c.end <= frame.cursor {
                chosen = Some(c);
                break;
            }
            if c.start < frame.cursor && !frame.noted_overlap {
                frame.noted_overlap = true;
                let parent = trace.span(frame.span);
                notes.push(Warning {
                    code: WarningCode::OverlappingChildren,
                    span_id: Some(parent.span_id),
                    message: format!(
                        "children of span {} ({} {}) overlap; the critical path follows the one that finished last, but span {} was running at the same time and may have blocked too",
                        parent.span_id,
                        parent.service,
                        parent.operation,
                        trace.span(c.span).span_id
                    ),
                });
            }
        }
        match chosen {
            Some(c) => {
                if c.end < frame.cursor {
                    segments.push(Segment {
                        span: frame.span,
                        start_ns: c.end,
                        end_ns: frame.cursor,
                    });
                }
                frame.cursor = c.start;
                push(&mut stack, &mut scratch, c);
            }
            None => {
                if frame.cursor > frame.start {
                    segments.push(Segment {
                        span: frame.span,
                        start_ns: frame.start,
                        end_ns: frame.cursor,
                    });
                }
                scratch.truncate(frame.lo);
                stack.pop();
            }
        }
    }
    segments.reverse();

    let mut critical_ns = vec![0u64; n];
    for s in &segments {
        critical_ns[s.span as usize] += s.end_ns - s.start_ns;
    }

    CriticalPath {
        segments,
        critical_ns,
        self_ns: (0..n as u32).map(|i| self_time(trace, i)).collect(),
        notes,
    }
}

/// The span's duration minus the union of its children's intervals (clipped).
fn self_time(trace: &Trace, span: u32) -> u64 {
    let (start, end) = (trace.start(span), trace.end(span));
    let mut covered = 0;
    let mut reach = start;
    // Children are sorted by start time.
    for &c in trace.children(span) {
        let cs = trace.start(c).max(reach);
        let ce = trace.end(c).min(end);
        if ce > cs {
            covered += ce - cs;
            reach = ce;
        }
    }
    (end - start) - covered
}
