//! Invariants every assembled and analyzed trace must satisfy, whatever its input.
//! Each returns a description of the first violation, so both plain tests and
//! proptest (`prop_assert!`) can use them.

use hopscope::analyze::AnalyzedTrace;
use hopscope::model::Trace;

/// The repaired parent links form one tree rooted at `trace.root`, and the child
/// lists agree with the parent links and are sorted by adjusted start.
pub fn check_tree(trace: &Trace) -> Result<(), String> {
    let n = trace.len();
    if n == 0 {
        return Err("assembled trace has no spans".into());
    }
    if trace.parent.len() != n || trace.shift_ns.len() != n {
        return Err(format!(
            "parent ({}) / shift ({}) vectors do not match {n} spans",
            trace.parent.len(),
            trace.shift_ns.len()
        ));
    }
    let roots: Vec<usize> = (0..n).filter(|&i| trace.parent[i].is_none()).collect();
    if roots != [trace.root as usize] {
        return Err(format!(
            "expected exactly the root {} to be parentless, got {roots:?}",
            trace.root
        ));
    }
    let mut ids: Vec<_> = trace.spans.iter().map(|s| s.span_id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != n {
        return Err("span ids are not unique after assembly".into());
    }
    for (i, s) in trace.spans.iter().enumerate() {
        if s.end_ns < s.start_ns {
            return Err(format!("span {i} ends before it starts after assembly"));
        }
    }
    // Every span reaches the root in fewer than n steps: no cycles.
    // Depths are memoised so a long chain costs O(n).
    let mut depth: Vec<Option<usize>> = vec![None; n];
    depth[trace.root as usize] = Some(0);
    for start in 0..n {
        let mut walk = Vec::new();
        let mut cur = start;
        while depth[cur].is_none() {
            walk.push(cur);
            if walk.len() > n {
                return Err(format!(
                    "parent links from span {start} never reach the root"
                ));
            }
            cur = match trace.parent[cur] {
                Some(p) => p as usize,
                None => return Err(format!("span {cur} is parentless but not the root")),
            };
        }
        let mut d = depth[cur].expect("known depth");
        for &w in walk.iter().rev() {
            d += 1;
            depth[w] = Some(d);
        }
    }
    let mut child_count = 0;
    for p in 0..n as u32 {
        let kids = trace.children(p);
        child_count += kids.len();
        for &c in kids {
            if trace.parent[c as usize] != Some(p) {
                return Err(format!(
                    "span {c} is listed under {p} but its parent is {:?}",
                    trace.parent[c as usize]
                ));
            }
        }
        if kids
            .windows(2)
            .any(|w| trace.start(w[0]) > trace.start(w[1]))
        {
            return Err(format!(
                "children of span {p} are not sorted by adjusted start"
            ));
        }
    }
    if child_count != n - 1 {
        return Err(format!("{child_count} child entries for {n} spans"));
    }
    Ok(())
}

/// The critical path partitions the root's interval and the hop shares sum to 1.
pub fn check_analysis(a: &AnalyzedTrace) -> Result<(), String> {
    let trace = &a.trace;
    let n = trace.len();
    let (rs, re) = (trace.start(trace.root), trace.end(trace.root));
    let root_ns = re - rs;
    if a.duration_ns() != root_ns {
        return Err("duration_ns() differs from the root's interval".into());
    }
    let segs = &a.path.segments;
    if root_ns > 0 {
        let (first, last) = match (segs.first(), segs.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(format!("no segments for a root of {root_ns} ns")),
        };
        if first.start_ns != rs || last.end_ns != re {
            return Err(format!(
                "segments cover [{}, {}) but the root is [{rs}, {re})",
                first.start_ns, last.end_ns
            ));
        }
    }
    for (i, s) in segs.iter().enumerate() {
        if s.start_ns >= s.end_ns {
            return Err(format!("segment {i} is empty or reversed: {s:?}"));
        }
        if s.span as usize >= n {
            return Err(format!("segment {i} names span {} of {n}", s.span));
        }
        if s.start_ns < trace.start(s.span) || s.end_ns > trace.end(s.span) {
            return Err(format!(
                "segment {i} {s:?} lies outside its span [{}, {})",
                trace.start(s.span),
                trace.end(s.span)
            ));
        }
    }
    if let Some(i) = segs.windows(2).position(|w| w[0].end_ns != w[1].start_ns) {
        return Err(format!(
            "segments {i} and {} are not contiguous: {:?} then {:?}",
            i + 1,
            segs[i],
            segs[i + 1]
        ));
    }
    let sum: u64 = segs.iter().map(|s| s.end_ns - s.start_ns).sum();
    if sum != root_ns {
        return Err(format!(
            "segments sum to {sum} ns, the root lasts {root_ns} ns"
        ));
    }
    if a.path.critical_ns.len() != n {
        return Err("critical_ns is not one entry per span".into());
    }
    let mut per_span = vec![0u64; n];
    for s in segs {
        per_span[s.span as usize] += s.end_ns - s.start_ns;
    }
    if per_span != a.path.critical_ns {
        return Err("critical_ns does not equal the per-span sum of segments".into());
    }
    if a.segment_hops.len() != segs.len() {
        return Err("segment_hops is not one entry per segment".into());
    }
    let hop_ns: u64 = a.hops.iter().map(|h| h.critical_ns).sum();
    if hop_ns != root_ns {
        return Err(format!(
            "hops sum to {hop_ns} ns, the root lasts {root_ns} ns"
        ));
    }
    let share: f64 = a.hops.iter().map(|h| h.share).sum();
    if (share - 1.0).abs() > 1e-9 {
        return Err(format!("hop shares sum to {share}, not 1"));
    }
    Ok(())
}
