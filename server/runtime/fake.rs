//! A runtime for tests: processes in memory, so app, culler and gRPC tests need no host
//! processes and no cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::runtime::{Runtime, RuntimeError, Started, StopTarget, name_taken};
use crate::spec::{ProcessInfo, ProcessSpec, ProcessStatus, ValidSpec};
use crate::table::ProcessTable;

/// A runtime that keeps processes in memory. A process whose name starts with `slow` stays
/// STARTING; any other is RUNNING at once.
pub struct FakeRuntime {
    table: Arc<ProcessTable>,
    specs: Mutex<BTreeMap<String, ProcessSpec>>,
}

impl FakeRuntime {
    /// Records a process as if it had been started at `created`.
    pub fn insert(&self, spec: ProcessSpec, created: jiff::Timestamp) {
        let mut process = ProcessInfo::starting(&spec, created);
        process.status = ProcessStatus::Running;
        self.table.upsert(process);
        self.specs.lock().expect("lock").insert(spec.process_name.clone(), spec);
    }

    /// An empty runtime.
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime { table: ProcessTable::new(1, 1024), specs: Mutex::new(BTreeMap::new()) })
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, spec: ValidSpec) -> Result<Started, RuntimeError> {
        let mut specs = self.specs.lock().expect("lock");
        if let Some(existing) = specs.get(&spec.process_name) {
            name_taken(&spec, existing, false)?;
            let process = self.table.get(&spec.process_name).expect("a known process is in the table");
            return Ok(Started { process, created: false });
        }
        let mut process = ProcessInfo::starting(&spec, jiff::Timestamp::now());
        if !spec.process_name.starts_with("slow") {
            process.status = ProcessStatus::Running;
        }
        self.table.upsert(process.clone());
        specs.insert(spec.process_name.clone(), spec.into_inner());
        Ok(Started { process, created: true })
    }

    async fn stop(&self, target: StopTarget) -> Result<Vec<String>, RuntimeError> {
        let mut specs = self.specs.lock().expect("lock");
        let names: Vec<String> = match &target {
            StopTarget::Process(name) if specs.contains_key(name) => vec![name.clone()],
            StopTarget::Process(name) => return Err(RuntimeError::NotFound { name: name.clone() }),
            StopTarget::Group(group) => specs
                .iter()
                .filter(|(_, spec)| spec.group.as_deref() == Some(group))
                .map(|(name, _)| name.clone())
                .collect(),
        };
        for name in &names {
            specs.remove(name);
            self.table.remove(name);
        }
        Ok(names)
    }

    fn table(&self) -> &Arc<ProcessTable> {
        &self.table
    }

    fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec> {
        self.specs.lock().expect("lock").get(process_name).cloned()
    }

    async fn shutdown(&self) {}
}
