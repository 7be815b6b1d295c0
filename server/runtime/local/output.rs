//! The captured output of one local process: a bounded buffer of chunks, oldest dropped first,
//! kept for the Logs call.
//!
//! The bound is on memory, not on bytes of output: each chunk counts its allocated capacity plus
//! a fixed overhead (its slot in the queue and the allocator's header). Consecutive writes to the
//! same stream are coalesced into one chunk that grows up to [`MAX_CHUNK_BYTES`] (or an eighth of
//! the limit), so a million one-byte writes cost about as much as one megabyte-long write.

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
    /// The bytes, as the process wrote them.
    pub bytes: Vec<u8>,
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
        }
    }

    /// Appends output, dropping the oldest chunks beyond the limit.
    pub fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        // What cannot be kept anyway is not copied.
        let mut rest = if bytes.len() > self.limit {
            self.dropped_bytes += (bytes.len() - self.limit) as u64;
            &bytes[bytes.len() - self.limit..]
        } else {
            bytes
        };
        while !rest.is_empty() {
            let taken = self.append(stream, rest);
            rest = &rest[taken..];
            self.evict();
        }
    }

    /// Copies what fits of `bytes` into the newest chunk of `stream`, growing it or starting a
    /// new one; returns how many bytes were taken.
    fn append(&mut self, stream: OutputStream, bytes: &[u8]) -> usize {
        let max_chunk = self.max_chunk;
        let same_stream = self.chunks.back().is_some_and(|chunk| chunk.stream == stream);
        if !same_stream || self.chunks.back().is_some_and(|chunk| chunk.bytes.len() >= max_chunk) {
            let capacity = bytes.len().min(max_chunk);
            let chunk = OutputChunk { stream, bytes: Vec::with_capacity(capacity) };
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
    pub fn chunks(&self) -> impl Iterator<Item = &OutputChunk> {
        self.chunks.iter()
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
        buffer.push(OutputStream::Stdout, b"hello ");
        buffer.push(OutputStream::Stderr, b"world");
        buffer.push(OutputStream::Stderr, b"!");
        assert_eq!(contents(&buffer), b"hello world!");
        let streams: Vec<_> = buffer.chunks().map(|chunk| chunk.stream).collect();
        assert_eq!(streams, [OutputStream::Stdout, OutputStream::Stderr], "same-stream writes coalesce");
        assert_eq!((buffer.len(), buffer.dropped_bytes()), (12, 0));

        let long: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        buffer.push(OutputStream::Stdout, &long);
        let kept = contents(&buffer);
        assert!(long.ends_with(&kept), "the newest bytes are kept, in order");
        assert_eq!(buffer.len() as u64 + buffer.dropped_bytes(), 12 + 10_000);
        assert!(buffer.memory_bytes() <= 4096);
        assert_eq!(buffer.memory_bytes(), allocated(&buffer));
    }

    #[test]
    fn many_tiny_writes_stay_within_the_memory_limit() {
        const LIMIT: usize = 1024 * 1024;
        let mut buffer = OutputBuffer::new(LIMIT);
        for index in 0..2_000_000u32 {
            buffer.push(OutputStream::Stdout, &[(index % 256) as u8]);
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
            buffer.push(stream, b"x");
        }
        assert!(allocated(&buffer) <= 64 * 1024);
        assert_eq!(buffer.len(), buffer.chunks().count());
    }
}
