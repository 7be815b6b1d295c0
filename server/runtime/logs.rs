//! What a Logs call asks of a runtime and what the runtime streams back, the same for every
//! runtime: the gRPC layer turns a `LogsRequest` into a [`LogsQuery`] and each [`LogPiece`] into a
//! `LogChunk`.

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::runtime::RuntimeError;

/// The output a Logs call wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// Keep streaming what the process writes until it ends, is stopped, or the caller hangs up.
    pub follow: bool,
    /// Only the last this many lines of the output there is now (after `since`); `None`: all.
    pub tail_lines: Option<u64>,
    /// Only output written at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// The run before the last restart instead of the current one, where the runtime restarts.
    pub previous: bool,
    /// Which of the process's streams.
    pub streams: StreamFilter,
}

/// Which of a process's output streams a Logs call wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamFilter {
    /// Standard output and standard error, interleaved as written.
    #[default]
    Both,
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
}

/// Where a piece of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Both, as one stream: the runtime cannot tell them apart (Kubernetes' log API).
    Combined,
}

/// Consecutive output of one stream, as the process wrote it (not necessarily UTF-8, not
/// necessarily whole lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPiece {
    /// The bytes.
    pub data: Bytes,
    /// Where they came from.
    pub stream: LogSource,
    /// When they were written (the first of them, for a piece that gathers several writes), when
    /// the runtime knows.
    pub time: Option<jiff::Timestamp>,
}

/// The output a Logs call streams; it ends when there is no more to send (without `follow`: at
/// once after the output there is now).
pub type LogPieces = BoxStream<'static, Result<LogPiece, RuntimeError>>;
