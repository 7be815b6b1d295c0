//! Logs on the local runtime: one [`ProcessOutput`] per process, written by its capture tasks
//! and read by every Logs call, follower or not.
//!
//! - One source, many readers: the capture tasks append each read of a pipe to the disk files
//!   (`disk`) and to the memory buffer (`output`) under one lock, and publish the new end offset
//!   on a `watch` channel. A reader is a cursor (a global offset) and at most one disk read of
//!   pieces: it takes the piece at its cursor from memory when memory still has it, else from
//!   disk, else (it fell behind even the disk) it skips ahead to the oldest output kept. A client
//!   that stops reading therefore costs nothing but its cursor: the stream is pulled, never
//!   pushed into a queue.
//! - A follower waits on the `watch` channel, so new output reaches it as soon as it is read
//!   from the pipe; it ends once the process is finished (its command ended and its output was
//!   drained, or it was stopped) and it has read everything.
//! - Disk reads run on the blocking pool, at most [`DISK_READ_BYTES`] at a time: a read is
//!   usually a page-cache copy of microseconds, but a cold cache means real disk I/O, which must
//!   not stall the threads that serve every other call.
//! - `tail_lines` is found in memory when the buffer holds that many lines (a backward scan, the
//!   usual case); otherwise it takes two passes over what is kept: the first counts the lines that
//!   pass the filters, the second skips all but the last N. Both passes read the same open files,
//!   so a rotation in between does not shift the count.
//! - Runs: a process restarted under its policy keeps one output, all its runs in offset order;
//!   each restart records the offset where the new run begins ([`ProcessOutput::begin_run`]), so
//!   `previous` reads the run before the current one, as Kubernetes' `previous` reads the
//!   container before the restart. Without `previous` a call reads every run still kept, so that
//!   no output is hidden.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::disk::{ReadHint, Record, SegmentSnapshot, SegmentWriter};
use super::lock;
use super::output::{MAX_CHUNK_BYTES, OutputBuffer, OutputStream, within_coalescing};
use crate::runtime::RuntimeError;
use crate::runtime::logs::{LogPiece, LogPieces, LogSource, LogsQuery, StreamFilter};

/// The most data one disk read of a reader takes.
pub const DISK_READ_BYTES: usize = 128 * 1024;

/// The most of the memory buffer a `tail_lines` scans backwards (under the output's lock) before
/// it counts with two passes instead.
pub const MEMORY_TAIL_SCAN_BYTES: usize = 4 << 20;

/// The output of one local process: in memory, on disk, and how far it has got.
#[derive(Debug)]
pub struct ProcessOutput {
    state: Mutex<OutputState>,
    progress: watch::Sender<Progress>,
    /// The process's directory of output files; `None`: memory only.
    directory: Option<PathBuf>,
}

#[derive(Debug)]
struct OutputState {
    buffer: OutputBuffer,
    /// `None` without a directory, once writing failed, and once the process is stopped.
    disk: Option<SegmentWriter>,
    /// The global offset where the current run's output begins.
    run_start: u64,
    /// The previous run's output: from its first byte's offset to the current run's.
    previous_run: Option<(u64, u64)>,
}

/// How far a process's output has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The global offset past the newest byte.
    end: u64,
    /// No more output will come.
    finished: bool,
}

impl ProcessOutput {
    /// An empty output, kept in `buffer_limit` bytes of memory and, with a directory, in at most
    /// `max_log_bytes` there.
    pub fn new(buffer_limit: usize, directory: Option<PathBuf>, max_log_bytes: u64) -> ProcessOutput {
        let disk = directory.clone().map(|directory| SegmentWriter::new(directory, max_log_bytes));
        ProcessOutput {
            state: Mutex::new(OutputState {
                buffer: OutputBuffer::new(buffer_limit),
                disk,
                run_start: 0,
                previous_run: None,
            }),
            progress: watch::Sender::new(Progress::default()),
            directory,
        }
    }

    /// Keeps bytes the process wrote to `stream`, read at `time`, and wakes the followers.
    ///
    /// The disk write is a plain blocking write under the lock: it lands in the page cache in
    /// microseconds, and doing it under the lock keeps the files in the same offset order as the
    /// memory buffer even with both streams' tasks writing. When it fails (a full disk), the
    /// process's output is kept in memory only from then on, with one warning.
    pub fn append(&self, stream: OutputStream, bytes: &[u8], time: jiff::Timestamp) {
        if bytes.is_empty() {
            return;
        }
        let end = {
            let mut state = lock(&self.state);
            let offset = state.buffer.end();
            if let Some(disk) = state.disk.as_mut()
                && let Err(error) = disk.append(offset, time, stream, bytes)
            {
                let directory = self.directory.as_deref().map(|path| path.display().to_string());
                tracing::warn!(
                    directory,
                    %error,
                    "cannot write a process's output to disk; from now on only its newest output is kept, in memory"
                );
                state.disk = None;
            }
            state.buffer.push(stream, bytes, time);
            state.buffer.end()
        };
        self.progress.send_modify(|progress| progress.end = end);
    }

    /// Says that a new run of the process begins: what follows is its output, and the run before
    /// it becomes the `previous` one.
    pub fn begin_run(&self) {
        let mut state = lock(&self.state);
        let end = state.buffer.end();
        state.previous_run = Some((state.run_start, end));
        state.run_start = end;
        state.buffer.seal();
    }

    /// The previous run's output as offsets (from, to), once the process has restarted.
    pub fn previous_run(&self) -> Option<(u64, u64)> {
        lock(&self.state).previous_run
    }

    /// Says that no more output will come, which ends the followers once they have read it all.
    pub fn finish(&self) {
        self.progress.send_modify(|progress| progress.finished = true);
    }

    /// Finishes the output and stops writing its files, for a process that is stopped; returns
    /// the directory of its files, to remove.
    pub fn close(&self) -> Option<PathBuf> {
        lock(&self.state).disk = None;
        self.finish();
        self.directory.clone()
    }
}

/// Streams what `query` asks of `output`.
/// With `previous`, that is the previous run's output only, never followed (nothing when the
/// process has not restarted: the caller checks [`ProcessOutput::previous_run`] first).
pub fn serve(output: Arc<ProcessOutput>, query: LogsQuery) -> LogPieces {
    let (from, end, limit) = if query.previous {
        let (from, to) = output.previous_run().unwrap_or_default();
        (from, to, Some(to))
    } else {
        let end = output.progress.borrow().end;
        (0, end, (!query.follow).then_some(end))
    };
    let serving = Serving {
        reader: Reader::new(output, from, limit),
        from,
        filter: Filter { streams: query.streams, since: query.since },
        tail: query.tail_lines.map(|lines| (lines, end)),
        skip_lines: 0,
        done: false,
    };
    futures::stream::unfold(serving, |mut serving| async move {
        if serving.done {
            return None;
        }
        match serving.next().await {
            Ok(Some(piece)) => Some((Ok(piece), serving)),
            Ok(None) => None,
            Err(error) => {
                serving.done = true;
                Some((Err(error), serving))
            }
        }
    })
    .boxed()
}

// === impl Serving ===

/// One Logs call's state between pieces.
struct Serving {
    reader: Reader,
    /// The global offset the call reads from: 0, or the start of the previous run.
    from: u64,
    filter: Filter,
    /// `tail_lines` and the end offset it counts up to, until the first piece is asked for.
    tail: Option<(u64, u64)>,
    /// How many lines that pass the filters are still to be skipped.
    skip_lines: u64,
    done: bool,
}

impl Serving {
    async fn next(&mut self) -> Result<Option<LogPiece>, RuntimeError> {
        if let Some((lines, end)) = self.tail.take() {
            self.find_tail(lines, end).await?;
        }
        loop {
            let Some(piece) = self.reader.next().await? else { return Ok(None) };
            if !self.filter.passes(&piece) {
                continue;
            }
            let data = if self.skip_lines > 0 {
                match skip_lines(&piece.data, &mut self.skip_lines) {
                    Some(rest) => rest,
                    None => continue,
                }
            } else {
                piece.data
            };
            if data.is_empty() {
                continue;
            }
            let stream = match piece.stream {
                OutputStream::Stdout => LogSource::Stdout,
                OutputStream::Stderr => LogSource::Stderr,
            };
            return Ok(Some(LogPiece { data, stream, time: Some(piece.time) }));
        }
    }

    /// The first pass of `tail_lines`: counts the lines up to `end` that pass the filters, and
    /// sets how many of them to skip.
    async fn find_tail(&mut self, lines: u64, end: u64) -> Result<(), RuntimeError> {
        if lines == 0 {
            self.reader.cursor = end;
            self.reader.started = true;
            return Ok(());
        }
        let in_memory = {
            let state = lock(&self.reader.output.state);
            tail_start_in_memory(&state.buffer, self.filter, lines, self.from, end)
        };
        if let Some(start) = in_memory {
            self.reader.cursor = start;
            self.reader.started = true;
            return Ok(());
        }
        let mut counting = Reader::new(Arc::clone(&self.reader.output), self.from, Some(end));
        let mut count = LineCount::default();
        while let Some(piece) = counting.next().await? {
            if self.filter.passes(&piece) {
                count.add(&piece.data);
            }
        }
        self.skip_lines = count.lines().saturating_sub(lines);
        // The second pass reads the files the first one counted.
        self.reader.snapshot = counting.snapshot;
        Ok(())
    }
}

/// Where the last `lines` lines between `from` and `end` that pass the filter begin, when the
/// buffer holds them all (scanning back from `end`); `None` when it holds fewer, and the disk
/// must be counted. `from` is where a run begins, which a chunk never straddles (see
/// [`OutputBuffer::seal`]).
fn tail_start_in_memory(
    buffer: &OutputBuffer,
    filter: Filter,
    lines: u64,
    from: u64,
    end: u64,
) -> Option<u64> {
    let mut boundaries = 0;
    // The scan holds the output's lock: past this many bytes, the passes outside it are better.
    let mut budget = MEMORY_TAIL_SCAN_BYTES;
    // The newline that ends the filtered output is the end of its last line, not a boundary.
    let mut at_the_end = true;
    for chunk in buffer.chunks().rev() {
        if chunk.offset >= end {
            continue;
        }
        if chunk.offset < from {
            break;
        }
        if !filter.passes_stream_at(chunk.stream, chunk.time) {
            continue;
        }
        let kept = (chunk.end().min(end) - chunk.offset) as usize;
        budget = budget.checked_sub(kept)?;
        for (index, &byte) in chunk.bytes[..kept].iter().enumerate().rev() {
            if byte == b'\n' && !at_the_end {
                boundaries += 1;
                if boundaries == lines {
                    return Some(chunk.offset + index as u64 + 1);
                }
            }
            at_the_end = false;
        }
    }
    // Fewer lines than asked for in memory: all of them, when memory holds all there is.
    let nothing_older = buffer.start() <= from;
    nothing_older.then_some(from)
}

/// Which pieces a call wants.
#[derive(Clone, Copy, Debug)]
struct Filter {
    streams: StreamFilter,
    since: Option<jiff::Timestamp>,
}

impl Filter {
    fn passes(&self, piece: &Piece) -> bool {
        self.passes_stream_at(piece.stream, piece.time)
    }

    fn passes_stream_at(&self, stream: OutputStream, time: jiff::Timestamp) -> bool {
        let wanted = match self.streams {
            StreamFilter::Both => true,
            StreamFilter::Stdout => stream == OutputStream::Stdout,
            StreamFilter::Stderr => stream == OutputStream::Stderr,
        };
        wanted && self.since.is_none_or(|since| time >= since)
    }
}

/// Lines in a sequence of bytes: each `\n` ends one, and bytes after the last `\n` are one more.
#[derive(Clone, Copy, Debug, Default)]
struct LineCount {
    newlines: u64,
    partial: bool,
}

impl LineCount {
    fn add(&mut self, data: &[u8]) {
        self.newlines += data.iter().filter(|&&byte| byte == b'\n').count() as u64;
        if let Some(&last) = data.last() {
            self.partial = last != b'\n';
        }
    }

    fn lines(&self) -> u64 {
        self.newlines + u64::from(self.partial)
    }
}

/// Skips whole lines of `data` while `remaining` is above zero; returns what follows the last
/// line skipped, or `None` when all of `data` was skipped.
fn skip_lines(data: &Bytes, remaining: &mut u64) -> Option<Bytes> {
    for (index, _) in data.iter().enumerate().filter(|(_, byte)| **byte == b'\n') {
        *remaining -= 1;
        if *remaining == 0 {
            return Some(data.slice(index + 1..));
        }
    }
    None
}

// === impl Reader ===

/// Output of one stream at a global offset, as a reader reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    offset: u64,
    stream: OutputStream,
    time: jiff::Timestamp,
    data: Bytes,
}

impl Piece {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// A cursor over a process's output, from the oldest kept.
struct Reader {
    output: Arc<ProcessOutput>,
    progress: watch::Receiver<Progress>,
    /// The global offset of the next byte to read.
    cursor: u64,
    /// Where to stop; `None`: follow.
    limit: Option<u64>,
    /// The files as opened by this reader (or the pass before it), reopened once they have
    /// nothing more.
    snapshot: Option<Arc<SegmentSnapshot>>,
    hint: ReadHint,
    /// The rest of the last disk read.
    pending: VecDeque<Piece>,
    /// Whether the reader got past the start: skipping ahead after that is lost output.
    started: bool,
}

impl Reader {
    fn new(output: Arc<ProcessOutput>, from: u64, limit: Option<u64>) -> Reader {
        let progress = output.progress.subscribe();
        Reader {
            output,
            progress,
            cursor: from,
            limit,
            snapshot: None,
            hint: ReadHint::default(),
            pending: VecDeque::new(),
            started: false,
        }
    }

    /// The next piece from the cursor on, waiting for it when following; `None` at the end.
    async fn next(&mut self) -> Result<Option<Piece>, RuntimeError> {
        loop {
            if let Some(piece) = self.pending.pop_front() {
                if let Some(piece) = self.cut(piece) {
                    self.cursor = piece.end();
                    self.started = true;
                    return Ok(Some(piece));
                }
                continue;
            }
            let progress = *self.progress.borrow_and_update();
            let bound = self.limit.unwrap_or(progress.end);
            if self.cursor >= bound {
                if self.limit.is_some() || progress.finished {
                    return Ok(None);
                }
                if self.progress.changed().await.is_err() {
                    return Ok(None);
                }
                continue;
            }
            let memory_start = {
                let state = lock(&self.output.state);
                match state.buffer.chunk_at(self.cursor) {
                    Some(chunk) => {
                        let from = (self.cursor - chunk.offset) as usize;
                        let to = (chunk.end().min(bound) - chunk.offset) as usize;
                        let piece = Piece {
                            offset: self.cursor,
                            stream: chunk.stream,
                            time: chunk.time,
                            data: Bytes::copy_from_slice(&chunk.bytes[from..to]),
                        };
                        drop(state);
                        self.cursor = piece.end();
                        self.started = true;
                        return Ok(Some(piece));
                    }
                    None => state.buffer.start(),
                }
            };
            if memory_start <= self.cursor {
                // Published but not yet in the buffer cannot happen (the buffer is written first);
                // wait rather than spin if it ever does.
                if self.progress.changed().await.is_err() {
                    return Ok(None);
                }
                continue;
            }
            let records = self.read_disk().await;
            let next_kept = records.first().map_or(memory_start, |first| first.offset.min(memory_start));
            if next_kept > self.cursor {
                if self.started {
                    tracing::debug!(
                        from = self.cursor,
                        to = next_kept,
                        "a Logs reader fell behind the output kept; skipping what is gone"
                    );
                }
                self.cursor = next_kept;
            }
            // Records past the cursor would hide a gap: memory serves from there instead.
            if records.first().is_some_and(|first| first.offset <= self.cursor) {
                self.pending = coalesce(records);
            }
        }
    }

    /// The piece from the cursor to the limit, if anything of it is left.
    fn cut(&self, mut piece: Piece) -> Option<Piece> {
        if piece.end() <= self.cursor {
            return None;
        }
        if piece.offset < self.cursor {
            piece.data = piece.data.slice((self.cursor - piece.offset) as usize..);
            piece.offset = self.cursor;
        }
        if let Some(limit) = self.limit
            && piece.end() > limit
        {
            piece.data.truncate(limit.saturating_sub(piece.offset) as usize);
        }
        (!piece.data.is_empty()).then_some(piece)
    }

    /// The records on disk from the cursor on (at most [`DISK_READ_BYTES`]), opening the files
    /// again when the open ones have nothing more; empty when the disk has nothing from there
    /// (or cannot be read: then memory serves what it has).
    async fn read_disk(&mut self) -> Vec<Record> {
        let Some(directory) = self.output.directory.clone() else { return Vec::new() };
        for _ in 0..2 {
            let reopened = self.snapshot.is_none();
            let snapshot = self.snapshot.clone();
            let opened = directory.clone();
            let (from, mut hint) = (self.cursor, self.hint);
            let read = tokio::task::spawn_blocking(move || {
                let snapshot = match snapshot {
                    Some(snapshot) => snapshot,
                    None => Arc::new(SegmentSnapshot::open(&opened)?),
                };
                let records = snapshot.read(from, DISK_READ_BYTES, &mut hint)?;
                Ok::<_, std::io::Error>((snapshot, records, hint))
            })
            .await;
            match read {
                Ok(Ok((snapshot, records, hint))) => {
                    self.snapshot = Some(snapshot);
                    self.hint = hint;
                    if !records.is_empty() || reopened {
                        return records;
                    }
                    self.snapshot = None;
                    self.hint = ReadHint::default();
                }
                Ok(Err(error)) => {
                    tracing::warn!(directory = %directory.display(), %error, "cannot read a process's output files");
                    return Vec::new();
                }
                Err(error) => {
                    tracing::warn!(%error, "a read of a process's output files failed");
                    return Vec::new();
                }
            }
        }
        Vec::new()
    }
}

/// Pieces of records, adjacent records of one stream close in time joined (up to a chunk's size)
/// so that many small writes do not become as many messages.
fn coalesce(records: Vec<Record>) -> VecDeque<Piece> {
    let mut pieces: VecDeque<Piece> = VecDeque::new();
    let mut joining: Option<(Piece, Vec<u8>)> = None;
    for record in records {
        if let Some((first, data)) = &mut joining
            && first.stream == record.stream
            && first.offset + data.len() as u64 == record.offset
            && within_coalescing(first.time, record.time)
            && data.len() + record.data.len() <= MAX_CHUNK_BYTES
        {
            data.extend_from_slice(&record.data);
            continue;
        }
        if let Some((first, data)) = joining.take() {
            pieces.push_back(Piece { data: Bytes::from(data), ..first });
        }
        let first =
            Piece { offset: record.offset, stream: record.stream, time: record.time, data: Bytes::new() };
        joining = Some((first, record.data));
    }
    if let Some((first, data)) = joining {
        pieces.push_back(Piece { data: Bytes::from(data), ..first });
    }
    pieces
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    fn at(millis: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_700_000_000_000 + millis).expect("a time")
    }

    /// What a query returns, as (stream, bytes) pieces with same-stream neighbours joined.
    async fn logs(output: &Arc<ProcessOutput>, query: LogsQuery) -> Vec<(LogSource, Vec<u8>)> {
        let pieces: Vec<LogPiece> = serve(Arc::clone(output), query).try_collect().await.expect("logs");
        assert!(pieces.iter().all(|piece| piece.time.is_some() && !piece.data.is_empty()));
        let mut joined: Vec<(LogSource, Vec<u8>)> = Vec::new();
        for piece in pieces {
            match joined.last_mut() {
                Some((stream, data)) if *stream == piece.stream => data.extend_from_slice(&piece.data),
                _ => joined.push((piece.stream, piece.data.to_vec())),
            }
        }
        joined
    }

    fn text(pieces: &[(LogSource, Vec<u8>)]) -> String {
        pieces.iter().map(|(_, data)| String::from_utf8_lossy(data).into_owned()).collect()
    }

    #[track_caller]
    fn check_tail(lines: u64, data: &[u8], expected: &[u8]) {
        let mut count = LineCount::default();
        count.add(data);
        let mut remaining = count.lines().saturating_sub(lines);
        let kept = if remaining == 0 {
            data.to_vec()
        } else {
            skip_lines(&Bytes::copy_from_slice(data), &mut remaining)
                .map(|rest| rest.to_vec())
                .unwrap_or_default()
        };
        assert_eq!(kept, expected, "tail {lines} of {:?}", String::from_utf8_lossy(data));
    }

    #[test]
    fn tails_count_a_final_partial_line_as_a_line() {
        check_tail(2, b"a\nb\nc\n", b"b\nc\n");
        check_tail(2, b"a\nb\nc", b"b\nc");
        check_tail(1, b"a\nb\nc", b"c");
        check_tail(5, b"a\nb\n", b"a\nb\n");
        check_tail(1, b"\n\n", b"\n");
        check_tail(1, b"no newline", b"no newline");
        check_tail(2, b"\xff\x00\n\x01\n\x80", b"\x01\n\x80");
    }

    fn sample(directory: Option<PathBuf>, buffer_limit: usize) -> Arc<ProcessOutput> {
        let output = Arc::new(ProcessOutput::new(buffer_limit, directory, 1 << 20));
        output.append(OutputStream::Stdout, b"out 1\nout 2\n", at(0));
        output.append(OutputStream::Stderr, b"err 1\n", at(10));
        output.append(OutputStream::Stdout, b"out 3\nout", at(20));
        output.append(OutputStream::Stderr, b"err 2\n", at(30));
        output.append(OutputStream::Stdout, b" 4 partial", at(40));
        output
    }

    #[tokio::test]
    async fn filters_and_tails_apply_over_memory_and_disk() {
        let directory = tempfile::tempdir().expect("tempdir");
        // From memory, from disk with a memory too small to hold anything but the newest chunk,
        // and from memory alone.
        for (directory, buffer_limit) in [
            (Some(directory.path().join("a.1")), 1 << 20),
            (Some(directory.path().join("b.1")), 256),
            (None, 1 << 20),
        ] {
            let output = sample(directory, buffer_limit);
            let all = logs(&output, LogsQuery::default()).await;
            assert_eq!(text(&all), "out 1\nout 2\nerr 1\nout 3\nouterr 2\n 4 partial");
            assert_eq!(
                all.iter().map(|(stream, _)| *stream).collect::<Vec<_>>(),
                [
                    LogSource::Stdout,
                    LogSource::Stderr,
                    LogSource::Stdout,
                    LogSource::Stderr,
                    LogSource::Stdout
                ]
            );
            let query =
                |streams, tail_lines, since| LogsQuery { streams, tail_lines, since, ..LogsQuery::default() };
            let check = async |query: LogsQuery, expected: &str| {
                assert_eq!(text(&logs(&output, query.clone()).await), expected, "{query:?}");
            };
            check(query(StreamFilter::Stdout, None, None), "out 1\nout 2\nout 3\nout 4 partial").await;
            check(query(StreamFilter::Stderr, None, None), "err 1\nerr 2\n").await;
            check(query(StreamFilter::Both, Some(2), None), "outerr 2\n 4 partial").await;
            check(query(StreamFilter::Both, Some(3), None), "out 3\nouterr 2\n 4 partial").await;
            check(query(StreamFilter::Stdout, Some(2), None), "out 3\nout 4 partial").await;
            check(query(StreamFilter::Stderr, Some(1), None), "err 2\n").await;
            check(query(StreamFilter::Both, Some(0), None), "").await;
            check(query(StreamFilter::Both, Some(100), None), &text(&all)).await;
            check(query(StreamFilter::Both, None, Some(at(20))), "out 3\nouterr 2\n 4 partial").await;
            check(query(StreamFilter::Stdout, Some(1), Some(at(20))), "out 4 partial").await;
        }
    }

    /// The last `lines` lines of `data`, the plain way.
    fn naive_tail(data: &[u8], lines: usize) -> Vec<u8> {
        let all: Vec<&[u8]> = data.split_inclusive(|&byte| byte == b'\n').collect();
        all[all.len().saturating_sub(lines)..].concat()
    }

    #[tokio::test]
    async fn tails_from_memory_and_from_disk_agree_with_the_plain_way() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let mut writes = Vec::new();
        let mut seed = 7u32;
        for index in 0..300 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let stream = if seed.is_multiple_of(3) { OutputStream::Stderr } else { OutputStream::Stdout };
            let text = match seed % 5 {
                0 => format!("{index}"),
                1 => format!("{index}\n\n"),
                _ => format!("line {index}\n"),
            };
            // Times that step back and forth, at least 2 ms apart when they differ, so that only
            // writes of one time share a chunk and the time filter cuts between writes.
            let time = at(2 * i64::from(index) * (i64::from(seed % 2) + 1));
            writes.push((stream, text.into_bytes(), time));
        }
        let memory = Arc::new(ProcessOutput::new(1 << 20, None, 1 << 20));
        let disk = Arc::new(ProcessOutput::new(512, Some(scratch.path().join("t.1")), 1 << 20));
        for (stream, data, time) in &writes {
            memory.append(*stream, data, *time);
            disk.append(*stream, data, *time);
        }
        for streams in [StreamFilter::Both, StreamFilter::Stdout, StreamFilter::Stderr] {
            let since = at(200);
            let filtered: Vec<u8> = writes
                .iter()
                .filter(|(stream, _, time)| {
                    Filter { streams, since: Some(since) }.passes_stream_at(*stream, *time)
                })
                .flat_map(|(_, data, _)| data.clone())
                .collect();
            for lines in [1, 2, 3, 10, 57, 1000] {
                let query = LogsQuery {
                    streams,
                    since: Some(since),
                    tail_lines: Some(lines),
                    ..LogsQuery::default()
                };
                let expected = naive_tail(&filtered, lines as usize);
                for output in [&memory, &disk] {
                    let got: Vec<u8> =
                        logs(output, query.clone()).await.into_iter().flat_map(|(_, data)| data).collect();
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&expected),
                        "{streams:?}, {lines} lines"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn binary_output_comes_back_byte_for_byte_from_disk_and_memory() {
        let directory = tempfile::tempdir().expect("tempdir");
        let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for buffer_limit in [1 << 20, 256] {
            let output = Arc::new(ProcessOutput::new(
                buffer_limit,
                Some(directory.path().join(format!("{buffer_limit}.1"))),
                1 << 20,
            ));
            for (index, piece) in binary.chunks(37).enumerate() {
                let stream = if index % 3 == 0 { OutputStream::Stderr } else { OutputStream::Stdout };
                output.append(stream, piece, at(index as i64 * 2));
            }
            let pieces = logs(&output, LogsQuery::default()).await;
            let data: Vec<u8> = pieces.iter().flat_map(|(_, data)| data.clone()).collect();
            assert_eq!(data, binary, "buffer of {buffer_limit} bytes");
        }
    }

    #[tokio::test]
    async fn a_follower_reads_from_disk_what_memory_dropped_then_follows_to_the_end() {
        let directory = tempfile::tempdir().expect("tempdir");
        let output = Arc::new(ProcessOutput::new(4096, Some(directory.path().join("f.1")), 1 << 20));
        let line = |index: u32| format!("line {index:05}\n");
        for index in 0..2000 {
            output.append(OutputStream::Stdout, line(index).as_bytes(), at(i64::from(index) * 2));
        }
        let follow = LogsQuery { follow: true, ..LogsQuery::default() };
        let mut stream = serve(Arc::clone(&output), follow);
        let mut seen = Vec::new();
        let expected: Vec<u8> = (0..3000).flat_map(|index| line(index).into_bytes()).collect();
        while seen.len() < 2000 * 11 {
            seen.extend_from_slice(&stream.try_next().await.expect("a piece").expect("not the end").data);
        }
        for index in 2000..3000 {
            output.append(OutputStream::Stdout, line(index).as_bytes(), at(i64::from(index) * 2));
        }
        output.finish();
        while let Some(piece) = stream.try_next().await.expect("a piece") {
            seen.extend_from_slice(&piece.data);
        }
        assert_eq!(String::from_utf8_lossy(&seen), String::from_utf8_lossy(&expected));
    }

    #[tokio::test]
    async fn a_follower_that_fell_behind_everything_skips_to_the_oldest_kept() {
        // Memory only, and small: the follower pauses while most of the output is dropped.
        let output = Arc::new(ProcessOutput::new(2048, None, 1 << 20));
        output.append(OutputStream::Stdout, b"first\n", at(0));
        let mut stream = serve(Arc::clone(&output), LogsQuery { follow: true, ..LogsQuery::default() });
        let first = stream.try_next().await.expect("piece").expect("some");
        assert_eq!(first.data.as_ref(), b"first\n");
        for index in 0..1000 {
            output.append(OutputStream::Stdout, format!("{index:04}\n").as_bytes(), at(10 + index));
        }
        output.close();
        let rest: Vec<u8> = stream.map_ok(|piece| piece.data.to_vec()).try_concat().await.expect("rest");
        let rest = String::from_utf8(rest).expect("text");
        assert!(rest.ends_with("0999\n") && rest.len() < 2048, "{} bytes", rest.len());
        assert!(rest.starts_with(|c: char| c.is_ascii_digit()));
    }

    #[tokio::test]
    async fn output_that_cannot_be_written_to_disk_is_still_served_from_memory() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let file = scratch.path().join("a-file");
        std::fs::write(&file, "not a directory").expect("write");
        let output = Arc::new(ProcessOutput::new(1 << 20, Some(file.join("p.1")), 1 << 20));
        output.append(OutputStream::Stdout, b"one\n", at(0));
        output.append(OutputStream::Stderr, b"two\n", at(5));
        assert!(lock(&output.state).disk.is_none(), "the writer is given up after its first failure");
        assert_eq!(text(&logs(&output, LogsQuery::default()).await), "one\ntwo\n");
    }

    #[tokio::test]
    async fn a_follower_waits_for_output_and_ends_when_finished() {
        let output = Arc::new(ProcessOutput::new(4096, None, 1 << 20));
        let mut stream = serve(Arc::clone(&output), LogsQuery { follow: true, ..LogsQuery::default() });
        let writer = Arc::clone(&output);
        let write = tokio::spawn(async move {
            tokio::task::yield_now().await;
            writer.append(OutputStream::Stderr, b"late\n", at(0));
            writer.finish();
        });
        let piece = stream.try_next().await.expect("piece").expect("some");
        assert_eq!((piece.data.as_ref(), piece.stream), (b"late\n".as_slice(), LogSource::Stderr));
        assert!(stream.try_next().await.expect("end").is_none());
        write.await.expect("writer");
    }
}
