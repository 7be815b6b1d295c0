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

use std::collections::{BTreeMap, HashMap};
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
    /// The kept groups by their answer's last use, oldest first: with small groups the budget
    /// holds tens of thousands of answers, too many to search for the oldest on every keep.
    by_use: BTreeMap<u64, Box<str>>,
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

impl Kept {
    /// Drops `group`'s answer, with its place in the order of use and its cost.
    fn remove(&mut self, group: &str) {
        if let Some(answer) = self.answers.remove(group) {
            self.by_use.remove(&answer.last_used);
            self.bytes -= answer.cost(group);
        }
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
            kept.remove(group);
            return None;
        }
        if answer.changed != changed || answer.count > page_size {
            return None;
        }
        kept.clock += 1;
        let name = kept.by_use.remove(&answer.last_used).unwrap_or_else(|| group.into());
        answer.last_used = kept.clock;
        kept.by_use.insert(kept.clock, name);
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
            kept.remove(group);
        }
        kept.clock += 1;
        let answer = Answer { changed, count, processes, last_used: kept.clock };
        let cost = answer.cost(group);
        // One large group cannot push out every other.
        if cost > self.budget / 8 {
            return;
        }
        while kept.bytes + cost > self.budget {
            let Some((_, oldest)) = kept.by_use.pop_first() else { break };
            kept.remove(&oldest);
        }
        kept.bytes += cost;
        kept.by_use.insert(kept.clock, group.into());
        kept.answers.insert(group.into(), answer);
    }

    /// How many bytes the kept answers cost.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }

    #[cfg(test)]
    fn check_books(&self) {
        let kept = self.lock();
        assert_eq!(kept.by_use.len(), kept.answers.len(), "every kept answer is in the order of use");
        for (used, group) in &kept.by_use {
            assert_eq!(kept.answers.get(group).map(|answer| answer.last_used), Some(*used));
        }
        let cost: usize = kept.answers.iter().map(|(group, answer)| answer.cost(group)).sum();
        assert_eq!(kept.bytes, cost);
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
        answers.check_books();
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
        answers.check_books();
    }

    #[test]
    fn many_small_groups_are_pushed_out_oldest_first() {
        // Room for 100 answers; 400 groups listed and changed in a scrambled order, against a
        // list of the groups by last use.
        let cost = 10 + 4 + OVERHEAD;
        let answers = GroupAnswers::with_budget(100 * cost);
        let mut model: Vec<(String, u64)> = Vec::new();
        let mut latest: HashMap<String, u64> = HashMap::new();
        let mut seed = 7u64;
        for step in 0..20_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let group = format!("g{:03}", (seed >> 33) % 400);
            let known = model.iter().position(|(name, _)| *name == group);
            if seed >> 62 == 0 {
                // The group changed: a new answer replaces the old one.
                answers.keep(&group, step + 1, 1, bytes(10));
                latest.insert(group.clone(), step + 1);
                if let Some(index) = known {
                    model.remove(index);
                }
                model.push((group, step + 1));
                if model.len() > 100 {
                    model.remove(0);
                }
            } else if let Some(index) = known {
                let (name, changed) = model.remove(index);
                assert!(answers.get(&name, changed, 10).is_some(), "{name} is kept");
                model.push((name, changed));
            } else {
                let changed = latest.get(&group).copied().unwrap_or(0);
                assert_eq!(answers.get(&group, changed, 10), None, "{group} was pushed out or never kept");
            }
        }
        answers.check_books();
        assert_eq!(answers.kept_bytes(), model.len() * cost);
    }
}
