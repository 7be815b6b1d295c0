//! The captured output of one local process: a bounded buffer of chunks, oldest dropped first,
//! kept for the Logs call (the newest output, which followers read without touching the disk).
//!
//! The bound is on memory, not on bytes of output: each chunk counts its allocated capacity plus
//! a fixed overhead (its slot in the queue and the allocator's header). Consecutive writes to the
//! same stream close in time (within [`COALESCE_WITHIN`] of the chunk's first write, so that a
//! chunk's time stays true) are coalesced into one chunk that grows up to [`MAX_CHUNK_BYTES`] (or
//! an eighth of the limit), so a million one-byte writes cost about as much as one megabyte-long
//! write.
//!
//! Every byte has a global offset: the number of bytes the process wrote before it, over both
//! streams. The kept chunks are contiguous in offset, so a reader holding an offset finds its
//! place with a binary search, and the disk files (`disk`) use the same offsets.

use std::collections::VecDeque;

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Consecutive output of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// Where it came from.
    pub stream: OutputStream,
    /// The global offset of its first byte.
    pub offset: u64,
    /// When its first byte was read.
    pub time: jiff::Timestamp,
    /// The bytes, as the process wrote them.
    pub bytes: Vec<u8>,
}

impl OutputChunk {
    /// The global offset just past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// How far apart in time two writes of one stream may be and still share a chunk (measured from
/// the chunk's first write): a chunk's time is then never more than this early for its bytes.
pub const COALESCE_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_millis(1);

/// Whether a write at `time` may join a chunk first written at `first`: not before it (the clock
/// can step back), and at most [`COALESCE_WITHIN`] after it.
pub fn within_coalescing(first: jiff::Timestamp, time: jiff::Timestamp) -> bool {
    let after = time.duration_since(first);
    !after.is_negative() && after <= COALESCE_WITHIN
}

/// The largest a chunk grows; a bigger one would make eviction (a whole chunk at a time) coarse.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// What a chunk costs beside its bytes: its slot in the queue (which may be up to half empty
/// after growing) and the allocator's bookkeeping for its bytes.
pub const CHUNK_OVERHEAD_BYTES: usize = 2 * std::mem::size_of::<OutputChunk>() + 16;

/// The most recent output of a process, in at most `limit` bytes of memory.
#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<OutputChunk>,
    /// The bytes kept.
    size: usize,
    /// The memory they take: capacities plus the overhead of each chunk.
    memory: usize,
    limit: usize,
    max_chunk: usize,
    dropped_bytes: u64,
    /// The global offset past the newest byte.
    end: u64,
    /// The next push starts a chunk of its own (a run of the process begins there).
    sealed: bool,
}

impl OutputBuffer {
    /// An empty buffer that takes at most `limit` bytes of memory.
    pub fn new(limit: usize) -> OutputBuffer {
        OutputBuffer {
            chunks: VecDeque::new(),
            size: 0,
            memory: 0,
            limit,
            max_chunk: (limit / 8).clamp(1, MAX_CHUNK_BYTES),
            dropped_bytes: 0,
            end: 0,
            sealed: false,
        }
    }

    /// Makes the next output start a chunk of its own, so that no chunk holds output of two runs
    /// of the process (Logs `previous` cuts at the offset between them).
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Appends output read at `time`, dropping the oldest chunks beyond the limit; its offset is
    /// [`OutputBuffer::end`] as it was.
    pub fn push(&mut self, stream: OutputStream, bytes: &[u8], time: jiff::Timestamp) {
        // What cannot be kept anyway is not copied; nor is anything older kept, so that the
        // chunks stay contiguous.
        let mut rest = if bytes.len() > self.limit {
            let skipped = bytes.len() - self.limit;
            self.dropped_bytes += skipped as u64 + self.size as u64;
            self.chunks.clear();
            self.size = 0;
            self.memory = 0;
            self.end += skipped as u64;
            &bytes[skipped..]
        } else {
            bytes
        };
        while !rest.is_empty() {
            let taken = self.append(stream, rest, time);
            rest = &rest[taken..];
            self.end += taken as u64;
            self.evict();
        }
    }

    /// Copies what fits of `bytes` into the newest chunk of `stream`, growing it or starting a
    /// new one; returns how many bytes were taken.
    fn append(&mut self, stream: OutputStream, bytes: &[u8], time: jiff::Timestamp) -> usize {
        let max_chunk = self.max_chunk;
        let joins = !std::mem::take(&mut self.sealed)
            && self.chunks.back().is_some_and(|chunk| {
                chunk.stream == stream && chunk.bytes.len() < max_chunk && within_coalescing(chunk.time, time)
            });
        if !joins {
            let capacity = bytes.len().min(max_chunk);
            let chunk = OutputChunk { stream, offset: self.end, time, bytes: Vec::with_capacity(capacity) };
            self.memory += chunk.bytes.capacity() + CHUNK_OVERHEAD_BYTES;
            self.chunks.push_back(chunk);
        }
        let Some(chunk) = self.chunks.back_mut() else { return bytes.len() };
        let room = max_chunk - chunk.bytes.len();
        let taken = bytes.len().min(room);
        let spare = chunk.bytes.capacity() - chunk.bytes.len();
        if taken > spare {
            // Doubling keeps the copies amortised; exact reservations keep the capacity known.
            let before = chunk.bytes.capacity();
            let wanted = (before * 2).max(chunk.bytes.len() + taken).min(max_chunk);
            chunk.bytes.reserve_exact(wanted - chunk.bytes.len());
            self.memory += chunk.bytes.capacity() - before;
        }
        chunk.bytes.extend_from_slice(&bytes[..taken]);
        self.size += taken;
        taken
    }

    /// Drops the oldest chunks until the memory is within the limit.
    fn evict(&mut self) {
        while self.memory > self.limit {
            let Some(oldest) = self.chunks.pop_front() else { break };
            self.memory -= oldest.bytes.capacity() + CHUNK_OVERHEAD_BYTES;
            self.size -= oldest.bytes.len();
            self.dropped_bytes += oldest.bytes.len() as u64;
        }
    }

    /// The kept chunks, oldest first.
    pub fn chunks(&self) -> impl DoubleEndedIterator<Item = &OutputChunk> {
        self.chunks.iter()
    }

    /// The global offset past the newest byte: how many bytes were pushed in all.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The global offset of the oldest byte kept (the end when nothing is).
    pub fn start(&self) -> u64 {
        self.chunks.front().map_or(self.end, |chunk| chunk.offset)
    }

    /// The chunk that holds the byte at `offset`, if it is kept.
    pub fn chunk_at(&self, offset: u64) -> Option<&OutputChunk> {
        let index = self.chunks.partition_point(|chunk| chunk.end() <= offset);
        self.chunks.get(index).filter(|chunk| chunk.offset <= offset)
    }

    /// How many bytes of output are kept.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The memory the kept output takes, as counted against the limit.
    pub fn memory_bytes(&self) -> usize {
        self.memory
    }

    /// How many bytes were dropped to stay within the limit.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_700_000_000_000 + millis).expect("a time")
    }

    fn contents(buffer: &OutputBuffer) -> Vec<u8> {
        buffer.chunks().flat_map(|chunk| chunk.bytes.iter().copied()).collect()
    }

    /// The memory of the chunks as the allocator sees it, counted independently of the buffer.
    fn allocated(buffer: &OutputBuffer) -> usize {
        buffer.chunks().map(|chunk| chunk.bytes.capacity() + CHUNK_OVERHEAD_BYTES).sum()
    }

    #[test]
    fn keeps_the_most_recent_bytes_in_order_and_counts_what_it_drops() {
        let mut buffer = OutputBuffer::new(4096);
        buffer.push(OutputStream::Stdout, b"hello ", at(0));
        buffer.push(OutputStream::Stderr, b"world", at(0));
        buffer.push(OutputStream::Stderr, b"!", at(1));
        assert_eq!(contents(&buffer), b"hello world!");
        let streams: Vec<_> = buffer.chunks().map(|chunk| chunk.stream).collect();
        assert_eq!(streams, [OutputStream::Stdout, OutputStream::Stderr], "same-stream writes coalesce");
        assert_eq!((buffer.len(), buffer.dropped_bytes()), (12, 0));

        let long: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        buffer.push(OutputStream::Stdout, &long, at(2));
        let kept = contents(&buffer);
        assert!(long.ends_with(&kept), "the newest bytes are kept, in order");
        assert_eq!(buffer.end(), 12 + 10_000);
        assert_eq!(buffer.start(), buffer.end() - kept.len() as u64);
        assert_eq!(buffer.len() as u64 + buffer.dropped_bytes(), 12 + 10_000);
        assert!(buffer.memory_bytes() <= 4096);
        assert_eq!(buffer.memory_bytes(), allocated(&buffer));
    }

    #[test]
    fn many_tiny_writes_stay_within_the_memory_limit() {
        const LIMIT: usize = 1024 * 1024;
        let mut buffer = OutputBuffer::new(LIMIT);
        for index in 0..2_000_000u32 {
            buffer.push(OutputStream::Stdout, &[(index % 256) as u8], at(0));
            if index % 100_000 == 0 {
                assert!(allocated(&buffer) <= LIMIT, "{} bytes after {index} writes", allocated(&buffer));
            }
        }
        assert_eq!(buffer.memory_bytes(), allocated(&buffer));
        assert!(buffer.memory_bytes() <= LIMIT);
        // Whole chunks are evicted, and the newest may have spare capacity: at most two chunks'
        // worth of the limit holds no output.
        assert!(buffer.len() >= LIMIT - 2 * MAX_CHUNK_BYTES - 64 * CHUNK_OVERHEAD_BYTES, "{}", buffer.len());
        assert!(buffer.chunks().count() <= LIMIT / MAX_CHUNK_BYTES + 1);
        assert_eq!(buffer.len() as u64 + buffer.dropped_bytes(), 2_000_000);
        let kept = contents(&buffer);
        let first_kept = 2_000_000 - kept.len() as u32;
        assert!(
            kept.iter().enumerate().all(|(offset, &byte)| byte == ((first_kept + offset as u32) % 256) as u8)
        );
    }

    #[test]
    fn alternating_streams_are_bounded_by_their_per_chunk_cost() {
        let mut buffer = OutputBuffer::new(64 * 1024);
        for index in 0..100_000 {
            let stream = if index % 2 == 0 { OutputStream::Stdout } else { OutputStream::Stderr };
            buffer.push(stream, b"x", at(0));
        }
        assert!(allocated(&buffer) <= 64 * 1024);
        assert_eq!(buffer.len(), buffer.chunks().count());
    }

    #[test]
    fn chunks_carry_their_offset_and_first_time_and_split_when_apart_in_time() {
        let mut buffer = OutputBuffer::new(1 << 20);
        buffer.push(OutputStream::Stdout, b"a\n", at(0));
        buffer.push(OutputStream::Stdout, b"b\n", at(1));
        buffer.push(OutputStream::Stdout, b"c\n", at(2));
        buffer.push(OutputStream::Stderr, b"d\n", at(2));
        let chunks: Vec<_> =
            buffer.chunks().map(|chunk| (chunk.offset, chunk.time, chunk.bytes.clone())).collect();
        assert_eq!(
            chunks,
            [(0, at(0), b"a\nb\n".to_vec()), (4, at(2), b"c\n".to_vec()), (6, at(2), b"d\n".to_vec())],
            "a write more than a millisecond after the chunk's first starts a new chunk"
        );
        buffer.push(OutputStream::Stderr, b"e\n", at(1));
        assert_eq!(buffer.chunks().count(), 4, "a clock stepping back starts a new chunk");
        assert_eq!(buffer.chunk_at(5).map(|chunk| chunk.offset), Some(4));
        assert_eq!(buffer.chunk_at(10), None);
        assert_eq!((buffer.start(), buffer.end()), (0, 10));
    }

    #[test]
    fn a_write_larger_than_the_limit_keeps_its_tail_at_its_offsets() {
        let mut buffer = OutputBuffer::new(4096);
        buffer.push(OutputStream::Stdout, b"old", at(0));
        let big: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        buffer.push(OutputStream::Stderr, &big, at(5));
        assert_eq!(buffer.end(), 10_003);
        let start = buffer.start();
        let kept = contents(&buffer);
        assert_eq!(start + kept.len() as u64, 10_003);
        assert_eq!(&kept[..], &big[(start - 3) as usize..]);
    }
}
