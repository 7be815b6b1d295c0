//! Answers to Lists of a whole group, kept encoded until the group changes.
//!
//! Dashboards and controllers list the same group again and again, mostly while it does not
//! change. The table tells, under its lock, the revision of a group's last change
//! ([`crate::table::ProcessTable::group_version`]); an answer made at that change shows the
//! group as it still is, so the next List of it writes the kept bytes (one copy) instead of
//! reading and encoding each process again. It also makes a List of a group of 100 among
//! 150,000 processes read what a List of 100 alone reads: one block, not 100 entries spread
//! over a large heap.
//!
//! What is kept is bounded ([`KEPT_BYTES`]): the least recently listed group goes first, and an
//! answer larger than an eighth of the room is not kept. An answer is only reused for a caller
//! whose reach takes in the whole group: the bytes are the same for every such caller.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use prost::bytes::Bytes;

/// How many bytes of answers are kept at most.
pub const KEPT_BYTES: usize = 8 << 20;

/// What one kept answer costs besides its bytes (its map slot, its name, its counters).
const OVERHEAD: usize = 128;

/// The kept answers, by group.
pub struct GroupAnswers {
    kept: Mutex<Kept>,
    budget: usize,
}

#[derive(Default)]
struct Kept {
    answers: HashMap<Box<str>, Answer>,
    /// What the answers cost, with [`OVERHEAD`] each.
    bytes: usize,
    /// Counts uses, to tell the least recently listed group.
    clock: u64,
}

struct Answer {
    /// The revision of the group's last change when the answer was made.
    changed: u64,
    /// How many processes it holds (a page smaller than that cannot use it).
    count: usize,
    /// The `processes` fields, encoded.
    processes: Bytes,
    last_used: u64,
}

impl Answer {
    fn cost(&self, group: &str) -> usize {
        self.processes.len() + group.len() + OVERHEAD
    }
}

impl Default for GroupAnswers {
    fn default() -> GroupAnswers {
        GroupAnswers::with_budget(KEPT_BYTES)
    }
}

impl GroupAnswers {
    /// Answers kept within `budget` bytes.
    pub fn with_budget(budget: usize) -> GroupAnswers {
        GroupAnswers { kept: Mutex::new(Kept::default()), budget }
    }

    /// The kept answer for `group` when it was made at the group's last change, `changed`, and
    /// fits a page of `page_size`. An answer of an earlier change is dropped: it cannot serve
    /// again.
    pub fn get(&self, group: &str, changed: u64, page_size: usize) -> Option<Bytes> {
        let mut kept = self.lock();
        let kept = &mut *kept;
        let answer = kept.answers.get_mut(group)?;
        if answer.changed < changed {
            let cost = answer.cost(group);
            kept.answers.remove(group);
            kept.bytes -= cost;
            return None;
        }
        if answer.changed != changed || answer.count > page_size {
            return None;
        }
        kept.clock += 1;
        answer.last_used = kept.clock;
        Some(answer.processes.clone())
    }

    /// Keeps the answer for `group` made at its change `changed` (`count` processes, encoded),
    /// pushing out the least recently listed groups as far as the budget needs. An answer of
    /// a later change already kept stays.
    pub fn keep(&self, group: &str, changed: u64, count: usize, processes: Bytes) {
        let mut kept = self.lock();
        let kept = &mut *kept;
        if let Some(old) = kept.answers.get(group) {
            if old.changed >= changed {
                return;
            }
            kept.bytes -= old.cost(group);
            kept.answers.remove(group);
        }
        kept.clock += 1;
        let answer = Answer { changed, count, processes, last_used: kept.clock };
        let cost = answer.cost(group);
        // One large group cannot push out every other.
        if cost > self.budget / 8 {
            return;
        }
        while kept.bytes + cost > self.budget {
            let Some(oldest) = kept
                .answers
                .iter()
                .min_by_key(|(_, answer)| answer.last_used)
                .map(|(group, _)| group.clone())
            else {
                break;
            };
            if let Some(answer) = kept.answers.remove(&oldest) {
                kept.bytes -= answer.cost(&oldest);
            }
        }
        kept.bytes += cost;
        kept.answers.insert(group.into(), answer);
    }

    /// How many bytes the kept answers cost.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Every change keeps `bytes` equal to the answers' cost before the next can panic.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(length: usize) -> Bytes {
        Bytes::from(vec![7u8; length])
    }

    #[test]
    fn an_answer_serves_its_change_only_and_a_page_it_fits() {
        let answers = GroupAnswers::default();
        assert_eq!(answers.get("g", 5, 1000), None);
        answers.keep("g", 5, 3, bytes(10));
        assert_eq!(answers.get("g", 5, 1000), Some(bytes(10)));
        assert_eq!(answers.get("g", 5, 3), Some(bytes(10)));
        assert_eq!(answers.get("g", 5, 2), None, "a page of 2 cannot hold the 3 processes");
        assert_eq!(answers.get("h", 5, 1000), None);
        // A caller that read an earlier change leaves the later answer in place...
        assert_eq!(answers.get("g", 4, 1000), None);
        assert_eq!(answers.get("g", 5, 1000), Some(bytes(10)));
        // ...and an earlier answer does not replace it.
        answers.keep("g", 4, 3, bytes(20));
        assert_eq!(answers.get("g", 5, 1000), Some(bytes(10)));
        // Once the group changed, the answer is dropped.
        assert_eq!(answers.get("g", 6, 1000), None);
        assert_eq!(answers.kept_bytes(), 0);
        answers.keep("g", 6, 1, bytes(5));
        assert_eq!(answers.get("g", 6, 1000), Some(bytes(5)));
        assert_eq!(answers.kept_bytes(), 5 + 1 + OVERHEAD);
    }

    #[test]
    fn the_least_recently_listed_group_goes_first_and_the_budget_holds() {
        let (each, cost) = (1000, 1000 + 1 + OVERHEAD);
        let answers = GroupAnswers::with_budget(8 * cost);
        let groups = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for (revision, group) in groups.into_iter().enumerate() {
            answers.keep(group, revision as u64, 1, bytes(each));
        }
        assert!(answers.get("a", 0, 10).is_some());
        answers.keep("i", 9, 1, bytes(each));
        let held = |group: &str, at: u64| answers.get(group, at, 10).is_some();
        assert_eq!([held("a", 0), held("b", 1), held("c", 2), held("i", 9)], [true, false, true, true]);
        assert_eq!(answers.kept_bytes(), 8 * cost, "b, listed least recently, made room for i");
        // An answer larger than an eighth of the room is never kept, and pushes nothing out.
        answers.keep("j", 10, 1, bytes(each + 1));
        assert!(!held("j", 10));
        assert_eq!(answers.kept_bytes(), 8 * cost);
    }
}
