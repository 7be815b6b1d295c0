//! The table's lookups by group and by label (secondary indexes; "index" in this tree names a
//! runtime's mirror of its backend): the processes of each group and of each label value, so that
//! a List or a Watch of a group or a label selector touches only the processes that may match,
//! not every process of the table. They hold the processes themselves (shared), not names to
//! look up: a List of a group of 100 among 150,000 costs what a List of 100 does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Filter;
use crate::spec::ProcessInfo;
use crate::spec::labels::Operator;

/// Some processes, by name.
type Names = BTreeMap<Arc<str>, Arc<ProcessInfo>>;

/// The processes of one group.
#[derive(Default)]
struct Group {
    members: Names,
    /// The revision of the last change to the group: a process joined or left it, or one of
    /// its processes changed. An answer made for the group at this revision still shows it.
    changed: u64,
}

/// Processes by group and by label.
#[derive(Default)]
pub(super) struct Lookups {
    by_group: HashMap<Box<str>, Group>,
    /// Label key, then label value, then the names of the processes that have it.
    by_label: HashMap<Box<str>, HashMap<Box<str>, Names>>,
}

/// Where the processes a filter may match are to be found.
pub(super) enum Candidates {
    /// Among these only, ordered by name.
    Processes(Vec<Arc<ProcessInfo>>),
    /// Anywhere: the filter names nothing a lookup knows.
    All,
}

impl Lookups {
    /// Records a process under its group and labels, by the change of `revision`.
    pub(super) fn insert(&mut self, name: &Arc<str>, process: &Arc<ProcessInfo>, revision: u64) {
        if let Some(group) = &process.group {
            let entry = self.by_group.entry(group.as_str().into()).or_default();
            entry.members.insert(Arc::clone(name), Arc::clone(process));
            entry.changed = revision;
        }
        for (key, value) in process.labels.iter() {
            self.by_label
                .entry(key.as_str().into())
                .or_default()
                .entry(value.as_str().into())
                .or_default()
                .insert(Arc::clone(name), Arc::clone(process));
        }
    }

    /// Points the entries of a process whose group and labels did not change at its new state,
    /// by the change of `revision`.
    pub(super) fn replace(&mut self, name: &str, process: &Arc<ProcessInfo>, revision: u64) {
        if let Some(group) = &process.group
            && let Some(entry) = self.by_group.get_mut(group.as_str())
            && let Some(slot) = entry.members.get_mut(name)
        {
            *slot = Arc::clone(process);
            entry.changed = revision;
        }
        for (key, value) in process.labels.iter() {
            let slot = self
                .by_label
                .get_mut(key.as_str())
                .and_then(|values| values.get_mut(value.as_str()))
                .and_then(|members| members.get_mut(name));
            if let Some(slot) = slot {
                *slot = Arc::clone(process);
            }
        }
    }

    /// Forgets a process's group and labels (as `process` had them), by the change of
    /// `revision`. A group left empty is forgotten: when it has processes again, its
    /// [`Lookups::group_changed`] is a later revision than any it had before.
    pub(super) fn remove(&mut self, name: &str, process: &ProcessInfo, revision: u64) {
        if let Some(group) = &process.group
            && let Some(entry) = self.by_group.get_mut(group.as_str())
        {
            entry.members.remove(name);
            entry.changed = revision;
            if entry.members.is_empty() {
                self.by_group.remove(group.as_str());
            }
        }
        for (key, value) in process.labels.iter() {
            let Some(values) = self.by_label.get_mut(key.as_str()) else { continue };
            if let Some(names) = values.get_mut(value.as_str()) {
                names.remove(name);
                if names.is_empty() {
                    values.remove(value.as_str());
                }
            }
            if values.is_empty() {
                self.by_label.remove(key.as_str());
            }
        }
    }

    /// The revision of the last change to `group`, when it has processes.
    pub(super) fn group_changed(&self, group: &str) -> Option<u64> {
        self.by_group.get(group).map(|entry| entry.changed)
    }

    /// The names the filter may match, from the narrowest lookup that applies: the group, or
    /// the label requirement (`=`, `in`, or having the key) with the fewest processes. The
    /// caller still checks the whole filter on each.
    pub(super) fn candidates(&self, filter: &Filter) -> Candidates {
        const EMPTY: &Names = &BTreeMap::new();
        let mut narrowest: Option<Vec<&Names>> = None;
        if let Some(group) = &filter.group {
            let members = self.by_group.get(group.as_str()).map_or(EMPTY, |entry| &entry.members);
            consider(&mut narrowest, vec![members]);
        }
        if let Some(selector) = &filter.selector {
            for requirement in selector.requirements() {
                let values = self.by_label.get(requirement.key.as_str());
                match requirement.operator {
                    Operator::Equals | Operator::In => consider(
                        &mut narrowest,
                        requirement
                            .values
                            .iter()
                            .filter_map(|value| values.and_then(|values| values.get(value.as_str())))
                            .collect(),
                    ),
                    Operator::Exists => consider(
                        &mut narrowest,
                        values.map(|values| values.values().collect()).unwrap_or_default(),
                    ),
                    Operator::NotEquals | Operator::NotIn | Operator::DoesNotExist => {}
                }
            }
        }
        match narrowest {
            None => Candidates::All,
            Some(sets) if sets.len() == 1 => Candidates::Processes(sets[0].values().cloned().collect()),
            Some(sets) => {
                // Values of one key never share a process, and a selector's values are distinct.
                let mut processes: Vec<Arc<ProcessInfo>> =
                    sets.into_iter().flat_map(|members| members.values().cloned()).collect();
                processes.sort_unstable_by(|a, b| a.process_name.cmp(&b.process_name));
                processes.dedup_by(|a, b| a.process_name == b.process_name);
                Candidates::Processes(processes)
            }
        }
    }
}

/// Keeps `sets` as the narrowest candidates when they hold fewer names than the narrowest so far.
fn consider<'a>(narrowest: &mut Option<Vec<&'a Names>>, sets: Vec<&'a Names>) {
    let size = |sets: &[&Names]| sets.iter().map(|set| set.len()).sum::<usize>();
    if narrowest.as_ref().is_none_or(|best| size(&sets) < size(best)) {
        *narrowest = Some(sets);
    }
}
