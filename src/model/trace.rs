//! An assembled trace: spans plus the repaired tree the analyzers walk.

use super::{AttrArena, AttrIter, Span, SpanId, TraceId};

/// What was wrong with a trace or uncertain about its analysis. Reported with
/// the trace, never a reason to fail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Warning {
    pub code: WarningCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// The same span id arrived more than once; one copy was kept.
    DuplicateSpan,
    /// A span ended before it started; its end was set to its start.
    EndBeforeStart,
    /// A span named itself as its parent.
    SelfParent,
    /// Parent links formed a cycle; it was cut.
    ParentCycle,
    /// A span's parent never arrived; it was attached under the root.
    Orphan,
    /// More than one span had no parent; the longest is the root.
    MultipleRoots,
    /// A SERVER span did not fit inside its CLIENT parent; it was shifted.
    ClockSkew,
    /// A child ended after its parent: the caller stopped waiting for it.
    ChildOutlivesParent,
    /// A child started before its parent, not explained as clock skew.
    ChildStartsBeforeParent,
    /// Siblings on the critical path overlapped; timing alone cannot say which blocked.
    OverlappingChildren,
    /// PRODUCER→CONSUMER or a CONSUMER child: the parent may not have waited for it.
    AsyncChild,
    /// A span has links (e.g. FOLLOWS_FROM); linked work is outside the critical path.
    Links,
    /// Spans arrived after the trace was analyzed; it was merged and analyzed again.
    LateSpans,
}

impl WarningCode {
    /// Every code, in declaration order.
    pub const ALL: [WarningCode; 13] = [
        WarningCode::DuplicateSpan,
        WarningCode::EndBeforeStart,
        WarningCode::SelfParent,
        WarningCode::ParentCycle,
        WarningCode::Orphan,
        WarningCode::MultipleRoots,
        WarningCode::ClockSkew,
        WarningCode::ChildOutlivesParent,
        WarningCode::ChildStartsBeforeParent,
        WarningCode::OverlappingChildren,
        WarningCode::AsyncChild,
        WarningCode::Links,
        WarningCode::LateSpans,
    ];
}

/// An assembled trace. Built only by [`crate::assemble::assemble`], which
/// guarantees: span ids are unique, `end >= start` for every span, the parent links
/// form one tree rooted at [`Trace::root`] (no cycles, no self-parents), and the
/// children of each span are sorted by adjusted start time.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
    /// Where the spans' attributes live.
    pub arena: AttrArena,
    pub root: u32,
    /// Tree parent of each span after repairs (`None` only for the root).
    pub parent: Vec<Option<u32>>,
    /// Children of span `i` are `child_list[child_offsets[i]..child_offsets[i + 1]]`.
    pub(crate) child_offsets: Vec<u32>,
    pub(crate) child_list: Vec<u32>,
    /// Clock-skew adjustment of each span, applied by [`Trace::start`] and [`Trace::end`].
    pub shift_ns: Vec<i64>,
    pub warnings: Vec<Warning>,
}

impl Trace {
    pub fn children(&self, span: u32) -> &[u32] {
        let i = span as usize;
        &self.child_list[self.child_offsets[i] as usize..self.child_offsets[i + 1] as usize]
    }

    /// Start time adjusted for clock skew.
    pub fn start(&self, span: u32) -> u64 {
        let i = span as usize;
        self.spans[i]
            .start_ns
            .saturating_add_signed(self.shift_ns[i])
    }

    /// End time adjusted for clock skew.
    pub fn end(&self, span: u32) -> u64 {
        let i = span as usize;
        self.spans[i].end_ns.saturating_add_signed(self.shift_ns[i])
    }

    /// How long span `a` ran on after span `b` ended, when that is more than
    /// their timestamps can tell apart; 0 otherwise. Starts stamped in whole
    /// milliseconds (Node's and browsers' SDKs take `Date.now()`, then time
    /// the span with a finer clock) put each end up to a millisecond early,
    /// so two spans whose starts are both whole milliseconds may seem to end
    /// up to 1 ms apart in either order; whole microseconds (Jaeger, Zipkin)
    /// likewise by 1 µs.
    pub fn ran_past(&self, a: u32, b: u32) -> u64 {
        let over = self.end(a).saturating_sub(self.end(b));
        let starts = [a, b].map(|s| self.spans[s as usize].start_ns);
        let resolution = [1_000_000, 1_000]
            .into_iter()
            .find(|r| starts.iter().all(|s| s % r == 0))
            .unwrap_or(0);
        if over > resolution {
            over
        } else {
            0
        }
    }

    /// The attributes of span `span`.
    pub fn attrs(&self, span: u32) -> AttrIter<'_> {
        self.arena.iter(self.spans[span as usize].attrs)
    }

    pub fn root_span(&self) -> &Span {
        &self.spans[self.root as usize]
    }

    pub fn span(&self, span: u32) -> &Span {
        &self.spans[span as usize]
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Approximate bytes held by the trace.
    pub fn size_bytes(&self) -> usize {
        self.spans.capacity() * size_of::<Span>()
            + self.arena.heap_bytes()
            + self.spans.len() * (4 + 4 + 4 + 8 + 4)
            + self
                .warnings
                .iter()
                .map(|w| w.message.len() + 48)
                .sum::<usize>()
    }
}
