//! Keeping the process's resident memory under `memory_limit_mib`.
//!
//! The buffer's byte budget bounds what it holds by estimate, but the process
//! also holds the trace store, the aggregates, the call window, requests being
//! decoded and what the allocator keeps. As the OpenTelemetry Collector's
//! `memory_limiter` does, the daemon therefore also watches what it really
//! uses: on every sweep it reads its resident memory, and above a soft limit
//! (seven eighths of the limit) it lowers the buffer's span ceiling so the
//! oldest traces are analyzed early, by as many spans as the excess is worth.
//! Analyzing early, not refusing, is the first answer: nothing is lost, and a
//! trace is only cut short when it is still receiving spans after the ceiling
//! came down. The ceiling comes back up, a twentieth of `max_buffered_spans`
//! per sweep, once memory is a sixteenth of the limit below the soft limit.
//! Only then is the byte budget the hard stop, refusing exports retryably.

use std::time::{Duration, Instant};

/// The process's resident memory in bytes (`/proc/self/statm`; `None` where
/// there is no such file).
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(usize::try_from(page).ok()?))
}

/// What the buffer holds when memory is read.
#[derive(Debug, Clone, Copy)]
pub struct Buffered {
    pub spans: usize,
    pub bytes: usize,
}

/// Lowers and raises the buffer's span ceiling from resident memory.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: usize,
    max_spans: usize,
    /// When the ceiling last came down: the allocator gives freed memory back
    /// over seconds, so a second cut waits for the first to show.
    last_cut: Option<Instant>,
}

/// How long a cut is given to show in resident memory before the next.
const SETTLE: Duration = Duration::from_secs(10);

impl MemoryGuard {
    pub fn new(limit: usize, max_spans: usize) -> Self {
        MemoryGuard {
            limit,
            max_spans,
            last_cut: None,
        }
    }

    fn soft(&self) -> usize {
        self.limit - self.limit / 8
    }

    /// The span ceiling after reading `resident` bytes with `buffered` in the
    /// buffer under `ceiling`, at `now`.
    pub fn next_ceiling(
        &mut self,
        resident: usize,
        buffered: Buffered,
        ceiling: usize,
        now: Instant,
    ) -> usize {
        let soft = self.soft();
        if resident > soft {
            let settled = self
                .last_cut
                .is_none_or(|at| now.saturating_duration_since(at) >= SETTLE);
            if !settled || buffered.spans == 0 {
                return ceiling;
            }
            let per_span = (buffered.bytes / buffered.spans).max(1);
            let shed = (resident - soft).div_ceil(per_span);
            // Keep a hundredth of the limit: traces must still assemble.
            let floor = (self.max_spans / 100).max(1);
            let cut = buffered.spans.saturating_sub(shed).max(floor);
            if cut < ceiling {
                self.last_cut = Some(now);
                return cut;
            }
            ceiling
        } else if resident < soft - self.limit / 16 {
            ceiling
                .saturating_add((self.max_spans / 20).max(1))
                .min(self.max_spans)
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn this_process_has_resident_memory() {
        assert!(resident_bytes().is_some_and(|b| b > MIB));
    }

    #[test]
    fn over_the_soft_limit_the_ceiling_sheds_what_the_excess_is_worth_then_waits() {
        let mut guard = MemoryGuard::new(512 * MIB, 1_000_000);
        let t0 = Instant::now();
        // 200 bytes a span; 16 MiB over the soft limit (448 MiB).
        let buffered = Buffered {
            spans: 900_000,
            bytes: 180_000_000,
        };
        let cut = guard.next_ceiling(464 * MIB, buffered, 1_000_000, t0);
        assert_eq!(cut, 900_000 - (16 * MIB).div_ceil(200));
        // Still over a second later: the first cut has not shown yet.
        assert_eq!(
            guard.next_ceiling(470 * MIB, buffered, cut, t0 + Duration::from_secs(1)),
            cut
        );
        // Settled and still over: cut again, never below a hundredth.
        let again = guard.next_ceiling(2048 * MIB, buffered, cut, t0 + Duration::from_secs(11));
        assert_eq!(again, 10_000);
    }

    #[test]
    fn well_under_the_soft_limit_the_ceiling_comes_back_in_steps() {
        let mut guard = MemoryGuard::new(512 * MIB, 1_000_000);
        let now = Instant::now();
        let buffered = Buffered {
            spans: 100_000,
            bytes: 20_000_000,
        };
        // Between the soft limit and a sixteenth under it: held.
        assert_eq!(
            guard.next_ceiling(430 * MIB, buffered, 100_000, now),
            100_000
        );
        assert_eq!(
            guard.next_ceiling(300 * MIB, buffered, 100_000, now),
            150_000
        );
        assert_eq!(
            guard.next_ceiling(300 * MIB, buffered, 980_000, now),
            1_000_000
        );
    }
}
