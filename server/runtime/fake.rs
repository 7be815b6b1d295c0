//! A runtime for tests: processes in memory, so app, culler and gRPC tests need no host
//! processes and no cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::runtime::logs::{LogPiece, LogPieces, LogSource, LogsQuery, StreamFilter};
use crate::runtime::{Runtime, RuntimeError, Started, StopTarget, name_taken};
use crate::spec::{ProcessInfo, ProcessSpec, ProcessStatus, ValidSpec};
use crate::table::ProcessTable;

/// A runtime that keeps processes in memory. A process whose name starts with `slow` stays
/// STARTING; any other is RUNNING at once.
pub struct FakeRuntime {
    table: Arc<ProcessTable>,
    specs: Mutex<BTreeMap<String, ProcessSpec>>,
    output: Mutex<BTreeMap<String, Vec<LogPiece>>>,
}

impl FakeRuntime {
    /// Records a process as if it had been started at `created`.
    pub fn insert(&self, spec: ProcessSpec, created: jiff::Timestamp) {
        let mut process = ProcessInfo::starting(&spec, created);
        process.status = ProcessStatus::Running;
        self.table.upsert(process);
        self.specs.lock().expect("lock").insert(spec.process_name.clone(), spec);
    }

    /// Records output of a process, for its Logs.
    pub fn write_output(&self, process_name: &str, stream: LogSource, data: &[u8]) {
        let piece = LogPiece {
            data: bytes::Bytes::copy_from_slice(data),
            stream,
            time: Some(jiff::Timestamp::now()),
        };
        self.output.lock().expect("lock").entry(process_name.to_owned()).or_default().push(piece);
    }

    /// An empty runtime.
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            table: ProcessTable::new(1, 1024),
            specs: Mutex::new(BTreeMap::new()),
            output: Mutex::new(BTreeMap::new()),
        })
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
            StopTarget::Selector(selector) => specs
                .iter()
                .filter(|(_, spec)| selector.matches(&spec.labels))
                .map(|(name, _)| name.clone())
                .collect(),
            StopTarget::Processes(names) => {
                names.iter().filter(|name| specs.contains_key(*name)).cloned().collect()
            }
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

    async fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec> {
        self.specs.lock().expect("lock").get(process_name).cloned()
    }

    /// The recorded output of the wanted streams; `follow` ends at once (nothing more is
    /// written), and `tail_lines`, `since` and `previous` are not applied.
    async fn logs(&self, process_name: &str, query: LogsQuery) -> Result<LogPieces, RuntimeError> {
        if !self.specs.lock().expect("lock").contains_key(process_name) {
            return Err(RuntimeError::NotFound { name: process_name.to_owned() });
        }
        let pieces: Vec<Result<LogPiece, RuntimeError>> = self
            .output
            .lock()
            .expect("lock")
            .get(process_name)
            .into_iter()
            .flatten()
            .filter(|piece| match query.streams {
                StreamFilter::Both => true,
                StreamFilter::Stdout => piece.stream != LogSource::Stderr,
                StreamFilter::Stderr => piece.stream != LogSource::Stdout,
            })
            .cloned()
            .map(Ok)
            .collect();
        Ok(Box::pin(futures::stream::iter(pieces)))
    }

    async fn shutdown(&self) {}
}
