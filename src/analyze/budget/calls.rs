//! Compact call records: what the cross-trace detectors keep of one analyzed
//! trace (a few dozen bytes per call instead of the spans).

use super::super::saturation::{saturation_records, SaturationRecords};
use super::super::{AnalyzedTrace, EntryPoint};
use crate::model::{named_peer, SpanKind, Sym, TraceId};

/// Who called whom: timeouts are inferred per edge, whatever entry point the
/// call served (a client timeout is the caller's setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EdgeKey {
    /// The calling service.
    pub caller: Sym,
    /// The SERVER child's service, else `peer.service`, `server.address` or the
    /// database system of the calling span; `None` when nothing names it.
    pub callee: Option<Sym>,
    /// The SERVER child's operation, else the calling span's, named as the
    /// aggregates name it (ids as placeholders: [`crate::analyze::names`]).
    pub operation: Sym,
}

impl EdgeKey {
    /// `caller → callee operation`, for sentences.
    pub fn describe(&self) -> String {
        format!(
            "{} → {} {}",
            self.caller,
            self.callee.map_or("?", |c| c.as_str()),
            self.operation
        )
    }

    /// An order that does not depend on interning order.
    pub fn sort_key(&self) -> (&'static str, &'static str, &'static str) {
        (
            self.caller.as_str(),
            self.callee.map_or("", |c| c.as_str()),
            self.operation.as_str(),
        )
    }
}

/// One call of one trace: a CLIENT span, or a span of another kind waiting on a
/// SERVER child of another service (an uninstrumented client, such as a gateway
/// whose root span is its own wait on the backend).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallRecord {
    pub edge: EdgeKey,
    /// Start of the calling span, after the root's start (adjusted for clock skew).
    pub start_offset_ns: u64,
    pub duration_ns: u64,
    /// The calling span ended in a timeout ([`crate::analyze::timeout()`]).
    pub timed_out: bool,
    /// That timeout was the callee's, reported back: its SERVER span timed out
    /// and ended first. Such calls say nothing about the caller's own timeout.
    pub relayed: bool,
    /// How long work kept running after the side waiting for it gave up with a
    /// timeout: the callee after the call ended, or the call after the span
    /// that made it ended. 0 when nothing overran (children of a span that did
    /// not time out may outlive it on purpose: fire and forget).
    pub overrun_ns: u64,
    /// Calls above this one on its chain (0: made by the root's service before
    /// any call).
    pub depth: u16,
    /// The nearest call above, as an index into [`TraceCalls::calls`] (always
    /// smaller than this record's own index).
    pub parent: Option<u32>,
    /// The calling span is the trace's root (its wait on a SERVER child).
    pub root_span: bool,
    /// Kept only for the deadlines above the calls below it: a call of a
    /// service another detect replica owns (`--role detect`), which this
    /// window neither counts nor infers a timeout from. Always `false` in a
    /// window that holds whole traces.
    pub shadow: bool,
}

impl CallRecord {
    /// The caller gave up on its own (not a timeout relayed from below).
    pub fn gave_up(&self) -> bool {
        self.timed_out && !self.relayed
    }
}

/// The root span of one trace, for the entry point's own numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RootRecord {
    pub entry: EntryPoint,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub timed_out: bool,
    pub kind: SpanKind,
    pub http_status: Option<u16>,
    /// When the root's timeout only reported a call below that gave up by
    /// itself just before the root ended, that call's edge.
    pub relayed_from: Option<EdgeKey>,
}

/// What the window keeps of one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceCalls {
    pub trace_id: TraceId,
    pub root: RootRecord,
    /// Parents before children.
    pub calls: Vec<CallRecord>,
    /// Its database calls and SERVER spans of known instances, for the
    /// saturation detectors ([`crate::analyze::saturation`]).
    pub saturation: SaturationRecords,
    /// The root's own numbers count here (traces, timed-out roots, the entry
    /// point's percentiles). `false` in a detect replica's view of a trace
    /// whose root span another replica owns: `root` is then the context of
    /// its calls (entry point, start, duration), not a trace to count.
    pub owns_root: bool,
}

impl TraceCalls {
    pub fn end_ns(&self) -> u64 {
        self.root.start_ns + self.root.duration_ns
    }

    /// Records it holds, as the window counts them: the root, each call and
    /// the saturation records.
    pub fn records(&self) -> usize {
        1 + self.calls.len() + self.saturation.len()
    }

    /// Adds `other`, another part of the records of the same analysis of the
    /// same trace (a detect replica receives a trace's records service by
    /// service): a call both hold counts once (a shadow here becomes a call
    /// when `other` holds it as its own), saturation records are appended, and
    /// the root is owned when either part owns it.
    pub fn merge(&mut self, other: &TraceCalls) {
        type Key = (EdgeKey, u64, u64, u16, Option<u32>);
        let key = |c: &CallRecord| -> Key {
            (c.edge, c.start_offset_ns, c.duration_ns, c.depth, c.parent)
        };
        let mut at: rustc_hash::FxHashMap<Key, u32> = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| (key(c), i as u32))
            .collect();
        // Where each of `other`'s calls is here: parents come first, so a
        // parent's place is known before its children's.
        let mut here: Vec<u32> = Vec::with_capacity(other.calls.len());
        for c in &other.calls {
            let mut c = *c;
            c.parent = c.parent.map(|p| here[p as usize]);
            let i = match at.get(&key(&c)) {
                Some(&i) => {
                    self.calls[i as usize].shadow &= c.shadow;
                    i
                }
                None => {
                    let i = self.calls.len() as u32;
                    at.insert(key(&c), i);
                    self.calls.push(c);
                    i
                }
            };
            here.push(i);
        }
        self.saturation.append(&other.saturation);
        self.owns_root |= other.owns_root;
    }
}

/// The root's timeout is relayed from a call that ended at most this long before
/// it (1 % of the root's duration, at least 50 ms).
fn relay_tolerance_ns(duration_ns: u64) -> u64 {
    (duration_ns / 100).max(50_000_000)
}

/// Adds the record of the call `span` makes (to its SERVER child `callee`, if
/// known) and returns its index.
fn record(
    t: &AnalyzedTrace,
    span: u32,
    callee: Option<u32>,
    (above, depth): (Option<u32>, u16),
    calls: &mut Vec<CallRecord>,
) -> u32 {
    let trace = &t.trace;
    let timed_out = &t.timed_out;
    let call = trace.span(span);
    let edge = EdgeKey {
        caller: call.service,
        callee: match callee {
            Some(c) => Some(trace.span(c).service),
            // One scan for the few keys that can (this runs for every client
            // span without a SERVER child).
            None => named_peer(call, &trace.arena),
        },
        operation: t.names[callee.unwrap_or(span) as usize].0,
    };
    let (start, end) = (trace.start(span), trace.end(span));
    let relayed = callee.is_some_and(|c| timed_out[c as usize] && trace.end(c) <= end);
    // The callee kept working after this call timed out ...
    let callee_overrun = callee
        .filter(|_| timed_out[span as usize])
        .map_or(0, |c| trace.end(c).saturating_sub(end));
    // ... or this call kept running after the span that made it timed out.
    let call_overrun = match (call.kind, trace.parent[span as usize]) {
        (SpanKind::Client, Some(p)) if timed_out[p as usize] => end.saturating_sub(trace.end(p)),
        _ => 0,
    };
    calls.push(CallRecord {
        edge,
        start_offset_ns: start.saturating_sub(trace.start(trace.root)),
        duration_ns: end - start,
        timed_out: timed_out[span as usize],
        relayed,
        overrun_ns: callee_overrun.max(call_overrun),
        depth,
        parent: above,
        root_span: span == trace.root,
        shadow: false,
    });
    (calls.len() - 1) as u32
}

/// Extracts the call records of one analyzed trace (see [`CallRecord`] for what
/// a call is), with its saturation records ([`saturation_records`]).
/// Calls under asynchronous spans (PRODUCER, CONSUMER) are skipped: nobody
/// waited for them; a CLIENT span that repeats another's call
/// ([`crate::analyze::layers`]) is not a call of its own.
pub fn call_records(t: &AnalyzedTrace) -> TraceCalls {
    let trace = &t.trace;
    let mut calls: Vec<CallRecord> = Vec::new();
    // (span, nearest call above its subtree, depth of a call it makes)
    let mut stack: Vec<(u32, Option<u32>, u16)> = vec![(trace.root, None, 0)];
    while let Some((span, above, depth)) = stack.pop() {
        let s = trace.span(span);
        match s.kind {
            SpanKind::Producer | SpanKind::Consumer => {}
            // A layer of a call recorded by another span: the call counts once.
            SpanKind::Client if t.layered[span as usize] => {
                stack.extend(trace.children(span).iter().map(|&c| (c, above, depth)));
            }
            SpanKind::Client => {
                let server = trace
                    .children(span)
                    .iter()
                    .copied()
                    .find(|&c| trace.span(c).kind == SpanKind::Server);
                let me = record(t, span, server, (above, depth), &mut calls);
                let below = (Some(me), depth.saturating_add(1));
                stack.extend(trace.children(span).iter().map(|&c| (c, below.0, below.1)));
            }
            _ => {
                // Each SERVER child of another service is a call this span waited on.
                for &c in trace.children(span) {
                    let child = trace.span(c);
                    if child.kind == SpanKind::Server && child.service != s.service {
                        let me = record(t, span, Some(c), (above, depth), &mut calls);
                        stack.push((c, Some(me), depth.saturating_add(1)));
                    } else {
                        stack.push((c, above, depth));
                    }
                }
            }
        }
    }
    let root = trace.root_span();
    let root_start = trace.start(trace.root);
    let duration_ns = trace.end(trace.root) - root_start;
    let relayed_from = t.timed_out[trace.root as usize]
        .then(|| {
            calls
                .iter()
                .filter(|c| c.gave_up() && !c.root_span)
                .map(|c| (c.start_offset_ns + c.duration_ns, c.edge))
                .filter(|&(end, _)| {
                    end <= duration_ns && duration_ns - end <= relay_tolerance_ns(duration_ns)
                })
                .max_by_key(|&(end, _)| end)
                .map(|(_, edge)| edge)
        })
        .flatten();
    TraceCalls {
        trace_id: trace.trace_id,
        root: RootRecord {
            entry: t.entry,
            start_ns: root_start,
            duration_ns,
            timed_out: t.timed_out[trace.root as usize],
            kind: root.kind,
            http_status: root.http_status.map(|c| c.get()),
            relayed_from,
        },
        calls,
        saturation: saturation_records(t),
        owns_root: true,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::analyze::{analyze, testing};
    use crate::assemble::assemble;
    use crate::model::{Extra, Span, StatusCode};

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn span(id: u64, parent: u64, svc: &str, op: &str, kind: SpanKind, t: (u64, u64)) -> Span {
        testing::span(svc, (id, parent), op, kind, t)
    }

    fn gateway_504(mut s: Span) -> Span {
        s.http_status = NonZeroU16::new(504);
        s
    }

    /// A client that gave up: Go's message for it.
    fn deadline(mut s: Span) -> Span {
        s.status = StatusCode::Error;
        s.extra = Some(Box::new(Extra {
            status_message: Some("context deadline exceeded".into()),
            ..Extra::default()
        }));
        s
    }

    fn records(spans: Vec<Span>) -> TraceCalls {
        let t = analyze(
            assemble(
                TraceId::from_bytes(&[9; 16]).unwrap(),
                spans.into_iter().collect(),
            )
            .unwrap(),
        );
        call_records(&t)
    }

    #[test]
    fn a_gateway_that_gave_up_while_its_backend_kept_working() {
        // gateway (29 s, 504) → api (SERVER, to 31 s) → CLIENT to db-svc timing
        // out at 30 s → db-svc SERVER running to 40 s.
        let r = records(vec![
            gateway_504(span(
                1,
                0,
                "gateway",
                "GET /report",
                SpanKind::Server,
                (0, 29 * S),
            )),
            gateway_504(span(
                2,
                1,
                "api",
                "GET /report",
                SpanKind::Server,
                (MS, 31 * S),
            )),
            deadline(span(
                3,
                2,
                "api",
                "GET",
                SpanKind::Client,
                (50 * MS, 30 * S + 50 * MS),
            )),
            span(
                4,
                3,
                "reports",
                "GET /build",
                SpanKind::Server,
                (51 * MS, 40 * S),
            ),
        ]);
        assert!(r.root.timed_out);
        assert_eq!(
            r.root.relayed_from, None,
            "nothing below gave up before the gateway"
        );
        assert_eq!(r.calls.len(), 2);
        let (gw, api) = (&r.calls[0], &r.calls[1]);
        assert_eq!(gw.edge.describe(), "gateway → api GET /report");
        assert!(gw.root_span && gw.gave_up() && gw.depth == 0 && gw.parent.is_none());
        assert_eq!(
            gw.overrun_ns,
            2 * S,
            "api kept working 2 s after the gateway gave up"
        );
        assert_eq!(api.edge.describe(), "api → reports GET /build");
        assert_eq!(
            (api.depth, api.parent, api.start_offset_ns),
            (1, Some(0), 50 * MS)
        );
        assert_eq!(api.duration_ns, 30 * S);
        assert!(api.gave_up());
        // reports kept working 9.95 s after api's call gave up; the call itself
        // outlived the gateway, but the gateway is not its parent span.
        assert_eq!(api.overrun_ns, 40 * S - (30 * S + 50 * MS));
    }

    #[test]
    fn a_timeout_reported_back_from_below_is_relayed_not_the_callers_own() {
        // shop's CLIENT received search's 504: search gave up on its db call.
        let r = records(vec![
            gateway_504(span(
                1,
                0,
                "shop",
                "GET /search",
                SpanKind::Server,
                (0, 2_010 * MS),
            )),
            gateway_504(span(
                2,
                1,
                "shop",
                "GET",
                SpanKind::Client,
                (5 * MS, 2_008 * MS),
            )),
            gateway_504(span(
                3,
                2,
                "search",
                "GET /q",
                SpanKind::Server,
                (6 * MS, 2_007 * MS),
            )),
            deadline(span(
                4,
                3,
                "search",
                "SELECT",
                SpanKind::Client,
                (6 * MS, 2_006 * MS),
            )),
        ]);
        assert_eq!(r.calls.len(), 2);
        assert!(r.calls[0].timed_out && r.calls[0].relayed && !r.calls[0].gave_up());
        assert!(r.calls[1].gave_up());
        assert_eq!(r.calls[1].edge.callee, None, "the db call names no peer");
        assert_eq!(r.calls[1].edge.operation.as_str(), "SELECT");
        assert_eq!(
            r.root.relayed_from.map(|e| e.describe()),
            Some("search → ? SELECT".to_owned())
        );
    }

    #[test]
    fn asynchronous_work_is_not_a_call_and_fire_and_forget_is_not_an_overrun() {
        let r = records(vec![
            span(1, 0, "web", "POST /order", SpanKind::Server, (0, 10 * MS)),
            span(2, 1, "web", "publish", SpanKind::Producer, (MS, 2 * MS)),
            span(
                3,
                2,
                "worker",
                "consume",
                SpanKind::Consumer,
                (3 * MS, 50 * MS),
            ),
            span(4, 3, "worker", "GET", SpanKind::Client, (4 * MS, 40 * MS)),
            span(5, 1, "web", "POST", SpanKind::Client, (2 * MS, 30 * MS)),
        ]);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].overrun_ns, 0, "its parent did not time out");
        assert_eq!(r.calls[0].edge.callee, None);
    }
}
