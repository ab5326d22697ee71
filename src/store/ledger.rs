//! Which traces the aggregates and findings already count, by the write-ahead
//! log segments holding their spans. The state file keeps it with the counts, so
//! a trace replayed after a restart is shown again but not counted twice.

use rustc_hash::FxHashMap;

use super::wal::LogRange;
use crate::model::TraceId;

/// What the ledger says about a trace analyzed after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Not counted before the restart: count it.
    New,
    /// Counted before the restart, all its spans replayed: keep it for viewing
    /// and the call window, do not count it again.
    Counted,
    /// Counted before the restart, but its oldest spans were in segments the
    /// state file already covered: only a fragment came back; drop it.
    Fragment,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Counted since the start, with every segment their spans are in.
    counted: FxHashMap<TraceId, LogRange>,
    /// Counted before the restart and not analyzed since.
    restored: FxHashMap<TraceId, LogRange>,
    /// The first segment the restart replayed.
    replay_from: u64,
}

impl Ledger {
    /// The ledger of a restart that replays the log from segment `replay_from`.
    pub fn restore(counted: Vec<(TraceId, LogRange)>, replay_from: u64) -> Ledger {
        Ledger {
            counted: FxHashMap::default(),
            restored: counted
                .into_iter()
                .filter(|(_, r)| r.last >= replay_from)
                .collect(),
            replay_from,
        }
    }

    /// Whether a trace being stored was counted before the restart (asked once
    /// per trace: the answer is consumed).
    pub fn replayed(&mut self, id: &TraceId) -> Replay {
        match self.restored.remove(id) {
            None => Replay::New,
            Some(r) if r.first < self.replay_from => Replay::Fragment,
            Some(_) => Replay::Counted,
        }
    }

    /// Records that a trace whose spans are in `log` is counted.
    pub fn count(&mut self, id: TraceId, log: LogRange) {
        self.counted
            .entry(id)
            .and_modify(|r| *r = r.union(log))
            .or_insert(log);
    }

    /// Forgets the traces with no spans in segment `segment` or later (those
    /// segments are gone, so they cannot be replayed).
    pub fn prune(&mut self, segment: u64) {
        self.counted.retain(|_, r| r.last >= segment);
        self.restored.retain(|_, r| r.last >= segment);
    }

    /// Every trace counted whose spans a replay could read, for the state file.
    pub fn export(&self) -> Vec<(TraceId, LogRange)> {
        self.counted
            .iter()
            .chain(&self.restored)
            .map(|(id, r)| (*id, *r))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.counted.len() + self.restored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        TraceId::from_bytes(&[n; 16]).unwrap()
    }

    fn range(first: u64, last: u64) -> LogRange {
        LogRange { first, last }
    }

    #[test]
    fn a_restart_tells_counted_traces_and_fragments_apart_once() {
        let mut before = Ledger::default();
        before.count(id(1), range(1, 2));
        before.count(id(2), range(3, 3));
        before.count(id(2), range(5, 5));
        before.count(id(3), range(4, 6));
        before.prune(3);
        let mut exported = before.export();
        exported.sort_by_key(|(id, _)| *id);
        assert_eq!(
            exported,
            vec![(id(2), range(3, 5)), (id(3), range(4, 6))],
            "trace 1 has no spans left in the log"
        );

        let mut after = Ledger::restore(exported, 4);
        assert_eq!(
            after.replayed(&id(2)),
            Replay::Fragment,
            "segment 3 is gone"
        );
        assert_eq!(after.replayed(&id(3)), Replay::Counted);
        assert_eq!(after.replayed(&id(3)), Replay::New, "asked once");
        assert_eq!(after.replayed(&id(9)), Replay::New);
        assert!(after.is_empty());
    }
}
